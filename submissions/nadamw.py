"""NadamW with linear warmup and cosine decay: AlgoPerf's baseline.

Hyperparameters: learning_rate, one_minus_beta1, beta2, weight_decay,
warmup_factor, label_smoothing, dropout_rate, grad_clip (None: no clipping).
Optional: schedule ("cosine", "constant", "wsd"), step_hint_factor, and for
averaged weights with batch norm bn_policy ("latest": the training run's
statistics, as in the paper; "recompute": fresh statistics of the averaged
weights from bn_batches training batches, timed) and bn_batches.
"""

from __future__ import annotations

import optax

from algoperf_avg.training import optimizers, schedules

HPARAMS = (
    "learning_rate", "one_minus_beta1", "beta2", "weight_decay", "warmup_factor",
    "label_smoothing", "dropout_rate", "grad_clip", "schedule", "step_hint_factor",
    "bn_policy", "bn_batches",  # read by the runner (algoperf_avg.evaluation.batch_norm)
)


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """Clip (optional) -> NadamW with the scheduled learning rate."""
  del workload
  links = []
  if hparams.get("grad_clip") is not None:
    links.append(optimizers.clip_by_global_norm_algoperf(hparams["grad_clip"]))
  links.append(optimizers.nadamw(
      learning_rate=schedules.from_hparams(hparams, step_hint),
      b1=1.0 - hparams["one_minus_beta1"],
      b2=hparams["beta2"],
      eps=1e-8,
      weight_decay=hparams["weight_decay"],
  ))
  return optax.chain(*links)
