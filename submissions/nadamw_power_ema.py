"""NadamW (AlgoPerf baseline) + a power-function EMA of the weights, evaluated at it.

θ̄ ← β_t θ̄ + (1 − β_t) θ with β_t = (1 − 1/t)^(γ+1) on record t (Karras et
al. 2024): the profile spans the whole run and keeps its relative width as the
run grows. Give ``power_ema_sigma_rel`` (the paper's parametrisation) or
``power_ema_gamma``; ``power_ema_sigma_rel`` wins when both are set.
"""

from __future__ import annotations

import optax

from algoperf_avg import averaging
from submissions import nadamw

HPARAMS = nadamw.HPARAMS + ("power_ema_gamma", "power_ema_sigma_rel", "power_ema_every",
                            "power_ema_start_fraction", "offload")
DEFAULT_HPARAMS = {"power_ema_gamma": 6.94, "power_ema_sigma_rel": None,
                   "power_ema_every": 1, "power_ema_start_fraction": 0.0,
                   "offload": False}


def gamma(hparams) -> float:
  """The exponent, from ``power_ema_sigma_rel`` when given, else ``power_ema_gamma``."""
  sigma_rel = hparams.get("power_ema_sigma_rel")
  if sigma_rel is not None:
    return averaging.sigma_rel_to_gamma(float(sigma_rel))
  return float(hparams["power_ema_gamma"])


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """NadamW, then `averaging.power_ema` as the last link."""
  return optax.chain(
      nadamw.make_optimizer(hparams, workload, step_hint),
      averaging.power_ema(
          gamma=gamma(hparams),
          every=int(hparams["power_ema_every"]),
          start_step=int(hparams["power_ema_start_fraction"] * step_hint),
          offload=bool(hparams["offload"]),
      ),
  )
