"""Snapshots of a run's weights for post-hoc averaging: which, where, how big.

A run keeps snapshots in ``<trial>/params/<step>`` (orbax, atomic): the
params and, since they matter for batch norm, the model state, optionally in
a narrower float dtype (``bfloat16`` halves the disk). Which steps:

* ``every=N``: step 0, every N-th step and every eval step;
* a grid (``--posthoc_grid=lawa:64:20,ema:8:0.99,swa:1:500``): step 0, the
  eval steps, and only the records the grid's averages need at those evals:
  every record of an EMA or SWA point, and for a LAWA point the last
  ``window`` records before each eval (older ones are deleted as the run goes).

`GridPoint.records_at` is the online transforms' schedule (`averaging.lawa`,
`ema`, `swa`): update ``t`` is recorded when ``t >= start_step`` and
``(t - start_step) % every == 0``, so a sweep reproduces them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg import spec
from algoperf_avg.training import checkpoints

PARAMS_DIR = "params"  # <log_dir>/params/<step>
METHODS = ("lawa", "ema", "swa")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One averaging setting: LAWA (``window``), EMA (``decay``) or SWA."""

  method: str
  every: int
  window: int = 0
  decay: float = 0.0
  start_step: int = 0

  @property
  def label(self) -> str:
    """``lawa_every64_window20``, ``ema_every1_decay0.999``, ``swa_every1_start500``."""
    start = f"_start{self.start_step}" if self.start_step else ""
    if self.method == "lawa":
      return f"lawa_every{self.every}_window{self.window}{start}"
    if self.method == "ema":
      return f"ema_every{self.every}_decay{self.decay!r}{start}"
    return f"swa_every{self.every}_start{self.start_step}"

  def hparams(self, step_hint: int) -> dict[str, Any]:
    """The hyperparameters of nadamw_lawa / _ema / _swa that give this average online."""
    fraction = self.start_step / step_hint if step_hint else 0.0
    if self.method == "lawa":
      return {"averaging": "lawa", "lawa_every": self.every, "lawa_window": self.window,
              "lawa_start_fraction": fraction}
    if self.method == "ema":
      return {"averaging": "ema", "ema_every": self.every, "ema_decay": self.decay,
              "ema_start_fraction": fraction}
    return {"averaging": "swa", "swa_every": self.every, "swa_start_fraction": fraction}

  def records_at(self, step: int) -> bool:
    """Whether the online transform records the weights of ``global_step == step``."""
    return (step >= max(self.start_step, 1)
            and (step - self.start_step) % self.every == 0)


def _positive_int(text: str, what: str) -> int:
  value = int(text)
  if value < 1:
    raise ValueError(f"{what} must be >= 1")
  return value


def parse_point(method: str, text: str) -> GridPoint:
  """``"64:20"`` (LAWA ``EVERY:WINDOW[:START]``), ``"8:0.99"`` (EMA
  ``EVERY:DECAY[:START]``) or ``"1:500"`` (SWA ``EVERY:START``)."""
  forms = {"lawa": "EVERY:WINDOW[:START] (e.g. 64:20)",
           "ema": "EVERY:DECAY[:START] (e.g. 8:0.99)",
           "swa": "EVERY:START (e.g. 1:500)"}
  if method not in forms:
    raise spec.UsageError(f"unknown averaging method {method!r}; choose from {METHODS}")
  parts = text.strip().split(":")
  try:
    if method == "swa":
      if len(parts) != 2:
        raise ValueError("two fields")
      return GridPoint("swa", _positive_int(parts[0], "every"), start_step=int(parts[1]))
    if len(parts) not in (2, 3):
      raise ValueError("two or three fields")
    every = _positive_int(parts[0], "every")
    start = int(parts[2]) if len(parts) == 3 else 0
    if start < 0:
      raise ValueError("start must be >= 0")
    if method == "lawa":
      return GridPoint("lawa", every, window=_positive_int(parts[1], "window"),
                       start_step=start)
    decay = float(parts[1])
    if not 0.0 <= decay <= 1.0:
      raise ValueError("decay must be in [0, 1]")
    return GridPoint("ema", every, decay=decay, start_step=start)
  except ValueError as e:
    raise spec.UsageError(f"{method} point {text!r} is not {forms[method]}: {e}") from None


def parse_grid(items: Iterable[str]) -> list[GridPoint]:
  """``["lawa:64:20", "ema:8:0.99", "swa:1:500"]`` -> grid points (de-duplicated)."""
  points: list[GridPoint] = []
  for item in items:
    method, sep, rest = item.strip().partition(":")
    if not sep:
      raise spec.UsageError(f"grid point {item!r} is not METHOD:... (lawa, ema or swa)")
    point = parse_point(method, rest)
    if point not in points:
      points.append(point)
  return points


def lawa_window(point: GridPoint, record_steps: Sequence[int], at: int) -> list[int]:
  """The records a LAWA point averages at step ``at`` (the last ``window``)."""
  before = [s for s in record_steps if s <= at]
  return before[-point.window:]


@dataclasses.dataclass(frozen=True)
class Policy:
  """Which steps a run keeps for post-hoc sweeps (see the module doc)."""

  every: int | None = None
  grid: tuple[GridPoint, ...] = ()
  dtype: str | None = None  # None: the params' own dtypes

  def __post_init__(self):
    if self.every is not None and self.every < 1:
      raise spec.UsageError(f"save_params_every must be >= 1, got {self.every}")
    if self.dtype is not None and self.dtype not in DTYPES:
      raise spec.UsageError(f"snapshot dtype must be one of {sorted(DTYPES)}, "
                            f"got {self.dtype!r}")

  @property
  def active(self) -> bool:
    return bool(self.every or self.grid)

  def saves_at(self, step: int) -> bool:
    """Whether a step that is not an eval step is kept."""
    if step == 0:
      return True
    if self.every and step % self.every == 0:
      return True
    return any(point.records_at(step) for point in self.grid)

  def needed(self, saved: Iterable[int], eval_steps: Iterable[int], now: int) -> set[int]:
    """The saved steps still needed once the run is at step ``now``."""
    saved = sorted(saved)
    if not self.grid:
      return set(saved)
    evals = sorted(set(eval_steps))
    keep = {0, *evals} & set(saved)
    if self.every:
      keep |= {s for s in saved if s % self.every == 0}
    for point in self.grid:
      records = [s for s in saved if point.records_at(s)]
      if point.method == "lawa":
        for at in [*evals, now]:
          keep |= set(lawa_window(point, records, at))
      else:
        keep |= set(records)
    return keep

  def count(self, num_steps: int, eval_steps: Sequence[int]) -> int:
    """Snapshots kept by the end of a run of ``num_steps`` with these evals."""
    steps = [s for s in range(num_steps + 1) if self.saves_at(s)]
    return len(self.needed(sorted(set(steps) | set(eval_steps)), eval_steps, num_steps))


def snapshot_bytes(params: Any, model_state: Any, dtype: str | None) -> int:
  """Bytes of one snapshot (params in ``dtype`` where floating, model state as is)."""
  def size(leaf, cast):
    itemsize = np.dtype(leaf.dtype).itemsize
    if cast and jnp.issubdtype(leaf.dtype, jnp.floating):
      itemsize = np.dtype(DTYPES[dtype]).itemsize
    return int(np.prod(leaf.shape)) * itemsize

  return (sum(size(p, dtype is not None) for p in jax.tree.leaves(params))
          + sum(size(s, False) for s in jax.tree.leaves(model_state)))


def check_disk(folder: str, needed_bytes: int, what: str) -> str:
  """A one-line estimate; raises `spec.UsageError` when it exceeds the free disk."""
  probe = folder
  while not os.path.exists(probe):
    probe = os.path.dirname(probe) or "."
  free = shutil.disk_usage(probe).free
  line = (f"{what}: about {needed_bytes / 2**30:.2f} GiB on disk "
          f"({free / 2**30:.1f} GiB free under {probe})")
  if needed_bytes > free:
    raise spec.UsageError(line + "; use a coarser --save_params_every or "
                          "--posthoc_grid, or --snapshot_dtype=bfloat16")
  return line


class Store:
  """The snapshots of one trial: saves what `Policy` keeps, prunes the rest."""

  def __init__(self, log_dir: str, policy: Policy):
    self.directory = os.path.join(log_dir, PARAMS_DIR)
    self.policy = policy

  def _cast(self, params: Any) -> Any:
    if self.policy.dtype is None:
      return params
    dtype = DTYPES[self.policy.dtype]
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)

  def save(self, step: int, params: Any, model_state: Any, submission_time: float) -> None:
    state = {"params": self._cast(params)}
    if jax.tree.leaves(model_state):  # orbax keeps no empty trees
      state["model_state"] = model_state
    checkpoints.save_checkpoint(
        self.directory, step, state,
        {"global_step": step, "submission_time": submission_time,
         "items": sorted(state), "dtype": self.policy.dtype},
        keep=None)

  def prune(self, eval_steps: Iterable[int], now: int) -> None:
    """Delete the snapshots no future sweep of the grid needs."""
    if not self.policy.grid:
      return
    saved = checkpoints.list_steps(self.directory)
    unneeded = set(saved) - self.policy.needed(saved, eval_steps, now)
    checkpoints.delete_steps(self.directory, sorted(unneeded))


def expected_snapshots(policy: Policy, step_budget: int | None, step_hint: int,
                       eval_every_steps: int | None, eval_fraction: float) -> tuple[int, int]:
  """``(snapshots, steps)`` a run is expected to keep (an estimate for time budgets).

  ``eval_fraction`` is the eval period over the budget (time-based cadence),
  used when the run has no step-based evals.
  """
  steps = step_budget or step_hint
  if eval_every_steps:
    evals = list(range(eval_every_steps, steps + 1, eval_every_steps))
  else:
    count = max(1, math.ceil(1 / max(eval_fraction, 1e-9)))
    evals = sorted({max(1, round(steps * (i + 1) / count)) for i in range(count)})
  return policy.count(steps, evals), steps
