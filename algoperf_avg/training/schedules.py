"""Learning-rate schedules used by the submissions.

All are `optax.Schedule`s (step -> learning rate). ``warmup_cosine`` is
AlgoPerf's baseline schedule; the others are what the paper pairs with
averaging (a shorter cosine, a constant rate, warmup-stable-decay).
"""

from __future__ import annotations

import optax


def warmup_cosine(
    peak_value: float, step_hint: int, warmup_factor: float, end_value: float = 0.0
) -> optax.Schedule:
  """Linear warmup from 0 over ``warmup_factor * step_hint`` steps, then cosine.

  The cosine runs from ``peak_value`` to ``end_value`` at ``step_hint`` and
  stays there afterwards.

  Example:
    >>> sched = warmup_cosine(1e-3, step_hint=100, warmup_factor=0.1)
    >>> float(sched(0)), float(sched(10)), float(sched(100))
    (0.0, 0.001, 0.0)
  """
  warmup_steps = int(warmup_factor * step_hint)
  warmup = optax.linear_schedule(0.0, peak_value, transition_steps=warmup_steps)
  cosine = optax.cosine_decay_schedule(
      peak_value,
      decay_steps=max(step_hint - warmup_steps, 1),
      alpha=end_value / peak_value if peak_value else 0.0,
  )
  return optax.join_schedules([warmup, cosine], boundaries=[warmup_steps])


def constant_with_warmup(
    peak_value: float, step_hint: int, warmup_factor: float
) -> optax.Schedule:
  """Linear warmup, then a constant rate (no decay)."""
  warmup_steps = int(warmup_factor * step_hint)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_value, warmup_steps),
       optax.constant_schedule(peak_value)],
      boundaries=[warmup_steps],
  )


def warmup_stable_decay(
    peak_value: float, step_hint: int, warmup_factor: float, decay_fraction: float = 0.2
) -> optax.Schedule:
  """Warmup, a constant phase, then a linear decay to 0 over the last fraction."""
  warmup_steps = int(warmup_factor * step_hint)
  decay_steps = max(int(decay_fraction * step_hint), 1)
  stable_steps = max(step_hint - warmup_steps - decay_steps, 0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_value, warmup_steps),
       optax.constant_schedule(peak_value),
       optax.linear_schedule(peak_value, 0.0, decay_steps)],
      boundaries=[warmup_steps, warmup_steps + stable_steps],
  )


SCHEDULES = {
    "cosine": warmup_cosine,
    "constant": constant_with_warmup,
    "wsd": warmup_stable_decay,
}


def from_hparams(hparams, step_hint: int) -> optax.Schedule:
  """The schedule named by ``hparams["schedule"]`` (default ``"cosine"``).

  ``hparams["step_hint_factor"]`` (default 1) shortens or stretches the
  horizon, e.g. 0.75 for a cosine that ends at 75% of the workload's hint.
  """
  name = hparams.get("schedule", "cosine")
  if name not in SCHEDULES:
    from algoperf_avg.spec import UsageError

    raise UsageError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
  horizon = max(int(step_hint * hparams.get("step_hint_factor", 1.0)), 1)
  return SCHEDULES[name](hparams["learning_rate"], horizon, hparams["warmup_factor"])
