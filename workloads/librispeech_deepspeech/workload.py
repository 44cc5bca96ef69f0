"""LibriSpeech DeepSpeech: speech recognition with a CTC head, WER.

``full`` is AlgoPerf's ``librispeech_deepspeech`` (18,381,312 parameters,
9,216 batch statistics; LibriSpeech 960 h, the same prepared data as the
Conformer's: ``algoperf-avg setup-data librispeech_deepspeech --raw_dir=...``).
``small`` is the same model code at width 128 (2 bidirectional LSTM layers
of 64 units per direction, 1 feed-forward layer) on the Conformer-small's
synthesised speech (`kit.speech_synthetic`), read through the same pipeline.
Data, loss, evaluation and WER are the kit's (`kit.speech_workload`).
"""

from __future__ import annotations

from algoperf_avg.kit import speech_workload
from workloads.librispeech_deepspeech import model

FULL = speech_workload.SpeechConfig(
    **speech_workload.full_sizes(reference_hparams=speech_workload.ALGOPERF_NADAMW))
MODEL = {"full": model.DeepSpeechConfig()}

SMALL_DATA = speech_workload.SMALL_DATA
# Peak LR 0.005: seed 0 learns the words by mid-budget (validation WER 0.08 at
# step 500 of 1,500, 0.0055 at the end; results/calibration/README.md).
SMALL = speech_workload.SpeechConfig(
    **speech_workload.small_sizes(reference_hparams=speech_workload.small_nadamw(0.005)))
# No dropout at this size (the feed-forward rate is fixed by the config, not
# by the ``dropout_rate`` hyperparameter, as in AlgoPerf's model).
MODEL["small"] = model.DeepSpeechConfig(
    vocab_size=SMALL_DATA.vocab_size, encoder_dim=128, num_lstm_layers=2,
    num_ffn_layers=1, feed_forward_dropout_rate=0.0)


class LibriSpeechDeepSpeechWorkload(speech_workload.SpeechWorkload):
  """AlgoPerf's DeepSpeech (``full``) and a width-128 one on synthesised speech (``small``)."""

  name = "librispeech_deepspeech"
  configs = {"full": FULL, "small": SMALL}
  batch_norm_momentum = 0.999

  def _make_model(self) -> model.DeepSpeech:
    return model.DeepSpeech(MODEL[self.size])
