"""Snapshots of a run's weights for post-hoc averaging: which, where, how big.

A run keeps snapshots in ``<trial>/params/<step>`` (orbax, atomic): the
params and, since they matter for batch norm, the model state, optionally in
a narrower float dtype (``bfloat16`` halves the disk). Which steps:

* ``every=N``: step 0, every N-th step and every eval step;
* a grid (``--posthoc_grid=lawa:64:20,ema:8:0.99,swa:1:500``): step 0, the
  eval steps, and only the records the grid's averages need at those evals:
  every record of an EMA or SWA point, and for a LAWA point the last
  ``window`` records before each eval (older ones are deleted as the run goes).

* power EMAs (``powerema:S:GAMMA``, Karras et al. 2024): the run keeps the
  power-function EMA of exponent GAMMA (`averaging.power_ema`, updated every
  step, float32, in device memory: 1xP per point) and writes it every S steps
  and at each eval step to ``<trial>/power_ema/<label>/<step>`` (with the model
  state); `posthoc.synthesize` rebuilds EMAs of other widths from two such
  points. Those in-memory averages do not survive a preemption: a trial
  folder that already holds power-EMA snapshots is refused.

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
POWER_DIR = "power_ema"  # <log_dir>/power_ema/<label>/<step>
METHODS = ("lawa", "ema", "swa", "powerema")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One averaging setting: LAWA (``window``), EMA (``decay``), SWA, or a power
  EMA (``gamma``) whose snapshots are kept every ``every`` steps."""

  method: str
  every: int
  window: int = 0
  decay: float = 0.0
  start_step: int = 0
  gamma: float = 0.0

  @property
  def label(self) -> str:
    """``lawa_every64_window20``, ``ema_every1_decay0.999``, ``swa_every1_start500``."""
    start = f"_start{self.start_step}" if self.start_step else ""
    if self.method == "lawa":
      return f"lawa_every{self.every}_window{self.window}{start}"
    if self.method == "ema":
      return f"ema_every{self.every}_decay{self.decay!r}{start}"
    if self.method == "powerema":
      return f"powerema_every{self.every}_gamma{self.gamma!r}"
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
    if self.method == "powerema":
      return {"averaging": "power_ema", "power_ema_gamma": self.gamma}
    return {"averaging": "swa", "swa_every": self.every, "swa_start_fraction": fraction}

  def records_at(self, step: int) -> bool:
    """Whether the online transform records the weights of ``global_step == step``.

    Never for a power EMA: it keeps its own average, not the raw weights.
    """
    return (self.method != "powerema" and step >= max(self.start_step, 1)
            and (step - self.start_step) % self.every == 0)


def _positive_int(text: str, what: str) -> int:
  value = int(text)
  if value < 1:
    raise ValueError(f"{what} must be >= 1")
  return value


def parse_point(method: str, text: str) -> GridPoint:
  """``"64:20"`` (LAWA ``EVERY:WINDOW[:START]``), ``"8:0.99"`` (EMA
  ``EVERY:DECAY[:START]``), ``"1:500"`` (SWA ``EVERY:START``) or ``"50:6.94"``
  (power EMA ``EVERY:GAMMA``: snapshots every EVERY steps)."""
  forms = {"lawa": "EVERY:WINDOW[:START] (e.g. 64:20)",
           "ema": "EVERY:DECAY[:START] (e.g. 8:0.99)",
           "swa": "EVERY:START (e.g. 1:500)",
           "powerema": "EVERY:GAMMA (e.g. 50:6.94)"}
  if method not in forms:
    raise spec.UsageError(f"unknown averaging method {method!r}; choose from {METHODS}")
  parts = text.strip().split(":")
  try:
    if method == "powerema":
      if len(parts) != 2:
        raise ValueError("two fields")
      gamma = float(parts[1])
      if not gamma > -1.0 or gamma != gamma or gamma == float("inf"):
        raise ValueError("gamma must be a finite number > -1")
      return GridPoint("powerema", _positive_int(parts[0], "every"), gamma=gamma)
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
      raise spec.UsageError(
          f"grid point {item!r} is not METHOD:... (lawa, ema, swa or powerema)")
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

  @property
  def power_points(self) -> tuple[GridPoint, ...]:
    return tuple(p for p in self.grid if p.method == "powerema")

  def saves_at(self, step: int) -> bool:
    """Whether the Store wants to see this step (every step, with power EMAs)."""
    return bool(self.power_points) or self.saves_raw_at(step)

  def saves_raw_at(self, step: int) -> bool:
    """Whether a step that is not an eval step keeps its raw weights."""
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
      if point.method == "powerema":
        continue  # kept in its own folder, never pruned
      records = [s for s in saved if point.records_at(s)]
      if point.method == "lawa":
        for at in [*evals, now]:
          keep |= set(lawa_window(point, records, at))
      else:
        keep |= set(records)
    return keep

  def count(self, num_steps: int, eval_steps: Sequence[int]) -> int:
    """Snapshots (raw and power-EMA) kept by the end of a run of ``num_steps``."""
    steps = [s for s in range(num_steps + 1) if self.saves_raw_at(s)]
    raw = len(self.needed(sorted(set(steps) | set(eval_steps)), eval_steps, num_steps))
    return raw + sum(len(set(range(p.every, num_steps + 1, p.every)) | set(eval_steps))
                     for p in self.power_points)


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


@jax.jit
def _power_update(average: Any, params: Any, t: jax.Array, gamma: jax.Array) -> Any:
  """One `averaging.power_ema` record: ``t`` is the step (1-based, every step)."""
  log_beta = (gamma + 1.0) * jnp.log1p(-1.0 / t.astype(jnp.float32))
  beta, weight = jnp.exp(log_beta), -jnp.expm1(log_beta)
  return jax.tree.map(lambda a, p: beta * a + weight * p.astype(a.dtype), average, params)


def power_dir(log_dir: str, point: GridPoint) -> str:
  """Where a power-EMA point's snapshots go: ``<log_dir>/power_ema/<label>``."""
  return os.path.join(log_dir, POWER_DIR, point.label)


class Store:
  """The snapshots of one trial: saves what `Policy` keeps, prunes the rest.

  The runner calls `save` at every step `Policy.saves_at` admits, and again at
  each eval step unless the first call returned True (all of that step kept):
  a second call at a step, or a call at a step ``saves_at`` does not admit,
  is an eval step, whose raw weights and power EMAs are always kept.
  """

  def __init__(self, log_dir: str, policy: Policy):
    self.directory = os.path.join(log_dir, PARAMS_DIR)
    self.policy = policy
    self.power_dirs = {p: power_dir(log_dir, p) for p in policy.power_points}
    for folder in self.power_dirs.values():
      if checkpoints.list_steps(folder):
        raise spec.UsageError(
            f"{folder} already holds power-EMA snapshots: a run with power EMAs in "
            "--posthoc_grid cannot resume (its averages live in memory); use a new "
            "trial folder")
    self._power: dict[GridPoint, Any] = {}  # point -> float32 average
    self._power_step = 0  # the last step folded into the power EMAs
    self._seen: set[int] = set()
    self._raw_kept: set[int] = set()
    self._power_kept: set[tuple[GridPoint, int]] = set()

  def _cast(self, params: Any) -> Any:
    if self.policy.dtype is None:
      return params
    dtype = DTYPES[self.policy.dtype]
    return jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)

  def _write(self, directory: str, step: int, params: Any, model_state: Any,
             submission_time: float, **extra: Any) -> None:
    state = {"params": self._cast(params)}
    if jax.tree.leaves(model_state):  # orbax keeps no empty trees
      state["model_state"] = model_state
    checkpoints.save_checkpoint(
        directory, step, state,
        {"global_step": step, "submission_time": submission_time,
         "items": sorted(state), "dtype": self.policy.dtype, **extra},
        keep=None)

  def save(self, step: int, params: Any, model_state: Any, submission_time: float
           ) -> bool:
    """Fold ``step`` into the power EMAs; keep what is due. True: nothing left to keep."""
    eval_call = step in self._seen or not self.policy.saves_at(step)
    self._seen.add(step)
    if self.power_dirs and step > self._power_step:
      for point in self.power_dirs:
        average = self._power.get(point)
        if average is None:  # beta_1 = 0: the first record replaces it
          average = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        self._power[point] = _power_update(average, params, jnp.asarray(step, jnp.int32),
                                           jnp.asarray(point.gamma, jnp.float32))
      self._power_step = step
    if (eval_call or self.policy.saves_raw_at(step)) and step not in self._raw_kept:
      self._write(self.directory, step, params, model_state, submission_time)
      self._raw_kept.add(step)
    done = step in self._raw_kept
    for point, folder in self.power_dirs.items():
      if step < 1 or (point, step) in self._power_kept:
        continue  # step 0: the initial weights, already in params/
      if eval_call or step % point.every == 0:
        average = jax.tree.map(lambda a, p: a.astype(p.dtype), self._power[point], params)
        self._write(folder, step, average, model_state, submission_time,
                    gamma=point.gamma, power_ema_every=point.every)
        self._power_kept.add((point, step))
      else:
        done = False
    return done

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
