"""Schedule-Free AdamW (optax.contrib): averaging built into the optimizer.

A peer of the averaging submissions: it trains at the interpolated point and
evaluates the running average, with no learning-rate decay. Uses the NadamW
hyperparameter names where they mean the same thing.

References:
  Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
"""

from __future__ import annotations

import optax

HPARAMS = (
    "learning_rate", "one_minus_beta1", "beta2", "weight_decay", "warmup_factor",
    "label_smoothing", "dropout_rate", "grad_clip", "weight_lr_power",
)
DEFAULT_HPARAMS = {"weight_lr_power": 2.0}


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """Optional clipping, then schedule-free AdamW with linear warmup."""
  from algoperf_avg.training import optimizers

  links = []
  if hparams.get("grad_clip") is not None:
    links.append(optimizers.clip_by_global_norm_algoperf(hparams["grad_clip"]))
  links.append(optax.contrib.schedule_free_adamw(
      learning_rate=hparams["learning_rate"],
      warmup_steps=int(hparams["warmup_factor"] * step_hint),
      b1=1.0 - hparams["one_minus_beta1"],
      b2=hparams["beta2"],
      weight_decay=hparams["weight_decay"],
      weight_lr_power=hparams["weight_lr_power"],
  ))
  return optax.chain(*links)


def eval_params(opt_state, params):
  """The schedule-free average x, computed from the training point y."""
  state = optax.tree.get(opt_state, "ScheduleFreeState")
  return optax.contrib.schedule_free_eval_params(state, params)
