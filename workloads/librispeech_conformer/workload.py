"""LibriSpeech Conformer: speech recognition with a CTC head, WER.

``full`` is AlgoPerf's ``librispeech_conformer`` (32,321,792 parameters,
4,096 batch statistics; LibriSpeech 960 h, prepared by ``algoperf-avg
setup-data librispeech_conformer --raw_dir=...``). ``small`` is the same
model code at width 64 on synthesised speech (`kit.speech_synthetic`: eSpeak
NG voices saying 2-4 words of a 16-word vocabulary, with noise), read
through the same pipeline.
"""

from __future__ import annotations

from algoperf_avg.kit import speech_workload
from workloads.librispeech_conformer import model

FULL = speech_workload.SpeechConfig(
    **speech_workload.full_sizes(reference_hparams=speech_workload.ALGOPERF_NADAMW))
MODEL = {"full": model.ConformerConfig()}

SMALL_DATA = speech_workload.SMALL_DATA
# Peak LR 0.01 (results/calibration/librispeech_conformer_small_exploration.csv):
# at 0.005 the cosine run was still learning at the end (validation WER 0.089),
# at 0.02 it never left the CTC plateau (WER 0.99).
SMALL = speech_workload.SpeechConfig(
    **speech_workload.small_sizes(reference_hparams=speech_workload.small_nadamw(0.01)))
MODEL["small"] = model.ConformerConfig(
    vocab_size=SMALL_DATA.vocab_size, encoder_dim=64, num_attention_heads=4,
    num_encoder_layers=2)


class LibriSpeechConformerWorkload(speech_workload.SpeechWorkload):
  """AlgoPerf's Conformer (``full``) and a width-64 one on synthesised speech (``small``)."""

  name = "librispeech_conformer"
  configs = {"full": FULL, "small": SMALL}
  batch_norm_momentum = 0.999

  def _make_model(self) -> model.Conformer:
    return model.Conformer(MODEL[self.size])
