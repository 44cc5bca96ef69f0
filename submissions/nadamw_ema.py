"""NadamW (AlgoPerf baseline) + an EMA of the weights, evaluated at the EMA.

θ̄ ← β θ̄ + (1 − β) θ every ``ema_every`` steps, from ``ema_start_fraction`` of
the step hint on. Training never sees θ̄; evaluation uses it.
"""

from __future__ import annotations

import optax

from algoperf_avg import averaging
from submissions import nadamw

HPARAMS = nadamw.HPARAMS + ("ema_decay", "ema_every", "ema_start_fraction", "offload")
DEFAULT_HPARAMS = {"ema_decay": 0.99, "ema_every": 1, "ema_start_fraction": 0.0,
                   "offload": False}


def make_optimizer(hparams, workload, step_hint: int) -> optax.GradientTransformation:
  """NadamW, then `averaging.ema` as the last link."""
  return optax.chain(
      nadamw.make_optimizer(hparams, workload, step_hint),
      averaging.ema(
          decay=hparams["ema_decay"],
          every=int(hparams["ema_every"]),
          start_step=int(hparams["ema_start_fraction"] * step_hint),
          offload=bool(hparams["offload"]),
      ),
  )
