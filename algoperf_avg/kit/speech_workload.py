"""What AlgoPerf's two LibriSpeech workloads share: data, CTC loss, decoding, WER.

A subclass (Conformer, DeepSpeech) sets ``name``, ``configs`` and builds its
model in ``_make_model``; the data (`kit.librispeech` on the prepared
release, `kit.speech_synthetic` for ``small``), the loss, the evaluation and
the metrics are here. Batches are AlgoPerf's: ``inputs = (audio, paddings)``
and ``targets = (ids, paddings)``, padded with paddings 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from algoperf_avg import spec
from algoperf_avg.evaluation import engine
from algoperf_avg.kit import config, ctc, data, librispeech, losses, speech_synthetic

SMALL_DATA = speech_synthetic.Config()
SMALL_SPLITS = {"train": "train-clean-100", "eval_train": "train-clean-100",
                "validation": "dev-clean", "test": "test-clean"}
HOW_TO = data.prepare_how_to(
    "librispeech_conformer",
    "--data_dir=DATA --raw_dir=LIBRISPEECH (the extracted release's LibriSpeech/ folder)")

# AlgoPerf's NadamW baseline hyperparameters (self-tuning HPARAMS).
ALGOPERF_NADAMW = {
    "learning_rate": 0.0017486387539278373,
    "one_minus_beta1": 0.06733926164,
    "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176,
    "warmup_factor": 0.02,
    "label_smoothing": 0.0,
    "dropout_rate": 0.1,
    "grad_clip": None,
}


@dataclasses.dataclass(frozen=True)
class SpeechConfig(config.SizeConfig):
  """Data fields of one LibriSpeech size (the model's are the subclass's)."""

  limits: librispeech.Limits = librispeech.Limits()


def full_sizes(**fields: Any) -> dict[str, Any]:
  """AlgoPerf's example counts and batch sizes, for a full-size config."""
  return dict(num_train_examples=263_840,
              # AlgoPerf: validation's 5,348 rounded up to whole eval batches.
              num_eval_train_examples=math.ceil(5_348 / 256) * 256,
              num_validation_examples=5_348, num_test_examples=2_472,
              eval_batch_size=256, train_batch_size=256, **fields)


def small_nadamw(learning_rate: float) -> dict[str, Any]:
  """A small size's reference NadamW: shared settings, each model's calibrated
  peak LR (results/calibration/README.md)."""
  return {"learning_rate": learning_rate, "one_minus_beta1": 0.1, "beta2": 0.98,
          "weight_decay": 0.01, "warmup_factor": 0.05, "label_smoothing": 0.0,
          "dropout_rate": 0.0, "grad_clip": None}


def small_sizes(**fields: Any) -> dict[str, Any]:
  """The synthesised dataset's example counts, batch sizes and limits, for a small config."""
  return dict(num_train_examples=SMALL_DATA.num_train, num_eval_train_examples=300,
              num_validation_examples=SMALL_DATA.num_validation,
              num_test_examples=SMALL_DATA.num_test, eval_batch_size=100,
              train_batch_size=32, limits=SMALL_DATA.limits, **fields)


@functools.lru_cache(maxsize=2)
def small_dir(config_: speech_synthetic.Config = SMALL_DATA) -> str:
  """The prepared synthesised dataset (made on first use, then cached on disk)."""
  return speech_synthetic.prepared(config_)


class SpeechWorkload(spec.Workload):
  """LibriSpeech ASR with a CTC head; the model comes from `_make_model`."""

  sizes = ("full", "small")
  loss_type = spec.LossType.CTC_LOSS
  dataset = "librispeech"
  batch_pad_values = {"inputs": (0, 1), "targets": (0, 1)}
  options = {
      "tokenizer": config.Option(
          None, "SentencePiece model for the WER (default: the dataset's spm_model.vocab)"),
  }
  output_params_key = "Dense_0"

  def __init__(self, size: str = "full", **options: Any):
    super().__init__(size, **options)
    self._model = self._make_model()
    self._tokenizer: librispeech.Tokenizer | None = None

  def _make_model(self) -> Any:
    raise NotImplementedError

  # ----- model ------------------------------------------------------------------

  def init_model_fn(self, rng: jax.Array) -> tuple[spec.Params, spec.ModelState]:
    """AlgoPerf's init: the first half of a split key, two all-zero utterances."""
    params_rng, _ = jax.random.split(rng)
    length = self.config.limits.audio
    zeros = np.zeros((2, length), np.float32)
    init = jax.jit(functools.partial(self._model.init, train=False))  # as AlgoPerf
    variables = init({"params": params_rng}, zeros, zeros)
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               dropout_rate=None):
    """``(logits, logit_paddings)`` and the model state (batch stats updated in training)."""
    train = mode == spec.ForwardPassMode.TRAIN
    if dropout_rate is None:
      dropout_rate = self.reference_hparams.get("dropout_rate", 0.1)
    audio, paddings = batch["inputs"]
    variables = {"params": params, **model_state}
    if train or update_batch_norm:
      outputs, new_state = self._model.apply(
          variables, audio, paddings, train=train, update_batch_norm=update_batch_norm,
          use_running_average_bn=False, dropout_rate=dropout_rate,
          rngs={"dropout": rng} if train else None, mutable=["batch_stats"])
      return outputs, dict(new_state) if update_batch_norm else model_state
    outputs = self._model.apply(variables, audio, paddings, train=False,
                                dropout_rate=dropout_rate)
    return outputs, model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    """CTC per target token (`kit.losses.ctc_loss`); ``mask_batch`` is per utterance."""
    del label_smoothing
    logits, logit_paddings = logits_batch
    labels, label_paddings = label_batch
    return losses.ctc_loss(labels.astype(np.int32), label_paddings, logits,
                           logit_paddings, mask_batch)

  # ----- data -------------------------------------------------------------------

  def _split(self, split: str, data_dir: str | None) -> librispeech.Split:
    if self.size == "full":
      return librispeech.Split(self.dataset_dir(data_dir), librispeech.SPLITS[split],
                               self.config.limits)
    return librispeech.Split(small_dir(), SMALL_SPLITS[split], self.config.limits)

  def _prepared_dir(self, data_dir: str | None) -> str:
    return self.dataset_dir(data_dir) if self.size == "full" else small_dir()

  def data_problem(self, dataset_dir: str) -> str | None:
    if librispeech.is_prepared(dataset_dir):
      return None
    return f"no prepared LibriSpeech in {dataset_dir}; {HOW_TO}"

  @classmethod
  def setup_data(cls, data_dir: str, **kwargs: Any) -> str:
    """Prepare the LibriSpeech release (``raw_dir``) into ``DATA/librispeech``."""
    raw_dir = kwargs.pop("raw_dir", None)
    if kwargs or not raw_dir:
      raise spec.UsageError(
          f"setup-data {cls.name} takes --raw_dir=LIBRISPEECH (the extracted "
          f"release's LibriSpeech/ folder) and nothing else; got {sorted(kwargs)}")
    return librispeech.prepare(raw_dir, os.path.join(data_dir, cls.dataset))

  def train_batches(self, data_rng, data_dir, batch_size, *, shard_index=0,
                    num_shards=1, start=None) -> Iterator[spec.Batch]:
    """Shuffled padded utterances, a fresh order each epoch, resumable in O(1)."""
    self._remember_tokenizer(data_dir)
    return librispeech.train_batches(
        self._split("train", data_dir), batch_size, data.seed_from_rng(data_rng),
        shard_index=shard_index, num_shards=num_shards, start=start)

  def example_batch(self, batch_size: int, data_dir: str | None = None) -> spec.Batch:
    """A batch of the full shapes (silence; no data read)."""
    del data_dir
    limits = self.config.limits
    return {"inputs": (np.zeros((batch_size, limits.audio), np.float32),
                       np.zeros((batch_size, limits.audio), np.float32)),
            "targets": (np.ones((batch_size, limits.targets), np.float32),
                        np.zeros((batch_size, limits.targets), np.float32))}

  def eval_batches(self, split, data_dir, batch_size, *, shard_index=0, num_shards=1):
    """One ordered pass over this shard of ``split`` (eval_train: its first examples)."""
    if split not in ("eval_train", "validation", "test"):
      raise spec.UsageError(
          f"unknown eval split {split!r}; choose from eval_train, validation, test")
    self._remember_tokenizer(data_dir)
    num = self.num_eval_train_examples if split == "eval_train" else None
    return librispeech.eval_batches(self._split(split, data_dir), batch_size,
                                    num_examples=num, shard_index=shard_index,
                                    num_shards=num_shards)

  def _remember_tokenizer(self, data_dir: str | None) -> None:
    if self._tokenizer is None:
      path = self.option_values["tokenizer"] or os.path.join(
          self._prepared_dir(data_dir), librispeech.TOKENIZER_FILE)
      self._tokenizer = librispeech.Tokenizer(path)

  # ----- evaluation ---------------------------------------------------------------

  def eval_step(self, params, model_state, batch, rng, metrics="all") -> engine.EvalOutput:
    """Summed CTC loss and target tokens; greedy hypotheses and references per utterance."""
    del rng, metrics
    (logits, logit_paddings), _ = self.model_fn(
        params, batch, model_state, spec.ForwardPassMode.EVAL, None,
        update_batch_norm=False)
    loss = self.loss_fn(batch["targets"], (logits, logit_paddings), batch[data.VALID])
    decoded, decoded_paddings = ctc.greedy_decode(logits, logit_paddings)
    targets, target_paddings = batch["targets"]
    return engine.EvalOutput(
        sums={"loss": loss["summed"], "num_tokens": loss["n_valid_examples"]},
        per_example={"decoded": decoded, "decoded_paddings": decoded_paddings,
                     "targets": targets.astype(np.int32),
                     "target_paddings": target_paddings})

  def finalize_metrics(self, split: str, sums: Mapping[str, np.ndarray],
                       per_example: Mapping[str, np.ndarray], metrics: str = "all"
                       ) -> dict[str, float]:
    """Corpus WER (word edits summed over the split / reference words) and the loss."""
    del split, metrics
    if self._tokenizer is None:
      self._remember_tokenizer(None)
    edits, words = ctc.edit_counts(
        per_example["decoded"], per_example["decoded_paddings"], per_example["targets"],
        per_example["target_paddings"], self._tokenizer.detokenize)
    loss = float(sums["loss"]) / max(float(sums["num_tokens"]), 1.0)
    return {"ctc_loss": loss, "loss": loss, "wer": edits / max(words, 1)}
