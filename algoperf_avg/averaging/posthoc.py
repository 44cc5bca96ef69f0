"""Post-hoc weight averaging: sweep LAWA and EMA over a run's saved weights.

A run trained with ``RunOptions(save_params_every=N)`` keeps its weights in
``<trial>/params/<step>`` at steps 0, N, 2N, ... . `sweep` streams through
them once, in step order, keeps the average of every grid point up to date,
and evaluates each average on the validation split; each grid point gets its
own AlgoPerf trial folder, so ``algoperf-avg score OUT`` compares them as
submissions. This is how the paper swept the horizon without retraining::

    sweep(workload, "exp/study_0/ogbg_small_jax/trial_1", "posthoc",
          lawa_grid=[(64, 20), (128, 10)], ema_grid=[(64, 0.99)])
    # -> posthoc/nadamw_lawa_every64_window20/study_0/ogbg_small_jax/trial_1/ ...

The averages are those of `averaging.lawa` and `averaging.ema` with
``start_step=0``: update ``t`` (``global_step`` after it) is recorded when
``t % every == 0``; LAWA is the mean of the last ``window`` records (of those
there are, before the window fills); EMA starts at the step-0 weights; before
the first record the training weights are evaluated. A sweep therefore gives
the online transform's numbers, up to float rounding.

Memory: one float32 copy of the params per EMA point, and one copy per step
that some LAWA point still averages, shared between the points.

Limitation: only the params are saved, so evaluation uses the workload's
initial model state (batch statistics); the workloads here have none.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from algoperf_avg import spec
from algoperf_avg.training import checkpoints, logs, runner


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One averaging setting: LAWA (``every``, ``window``) or EMA (``every``, ``decay``)."""

  method: str  # "lawa" or "ema"
  every: int
  window: int = 0
  decay: float = 0.0

  @property
  def label(self) -> str:
    """``lawa_every64_window20`` or ``ema_every1_decay0.999``."""
    if self.method == "lawa":
      return f"lawa_every{self.every}_window{self.window}"
    return f"ema_every{self.every}_decay{self.decay!r}"

  @property
  def hparams(self) -> dict[str, Any]:
    """The hyperparameters of nadamw_lawa / nadamw_ema that give this average online."""
    if self.method == "lawa":
      return {"averaging": "lawa", "lawa_every": self.every,
              "lawa_window": self.window, "lawa_start_fraction": 0.0}
    return {"averaging": "ema", "ema_every": self.every, "ema_decay": self.decay,
            "ema_start_fraction": 0.0}

  def records_at(self, step: int) -> bool:
    """Whether the online transform records the weights of ``global_step == step``."""
    return step >= 1 and step % self.every == 0


def _accumulator_dtype(dtype: Any) -> Any:
  return jnp.promote_types(dtype, jnp.float32)


@jax.jit
def _add(total: Any, weights: Any) -> Any:
  return jax.tree.map(lambda t, w: t + w.astype(t.dtype), total, weights)


@jax.jit
def _mean(total: Any, count: jax.Array, like: Any) -> Any:
  return jax.tree.map(lambda t, p: (t / count).astype(p.dtype), total, like)


@functools.partial(jax.jit, static_argnames="decay")
def _ema_update(average: Any, weights: Any, decay: float) -> Any:
  # As averaging.ema: the same expression with the same (static) decay.
  weights = jax.tree.map(lambda w, a: w.astype(a.dtype), weights, average)
  return optax.tree.update_moment(weights, average, decay, order=1)


class _Lawa:
  """A LAWA point: the steps of its last ``window`` records (weights are shared)."""

  def __init__(self, point: GridPoint):
    self.point = point
    self.steps: collections.deque[int] = collections.deque(maxlen=point.window)

  def record(self, step: int, weights: Any) -> None:
    del weights  # kept once for all points, in the sweep's store
    self.steps.append(step)

  def value(self, store: dict[int, Any], current: Any) -> Any:
    if not self.steps:
      return current
    total = jax.tree.map(lambda p: jnp.zeros(p.shape, _accumulator_dtype(p.dtype)), current)
    for step in self.steps:
      total = _add(total, store[step])
    return _mean(total, jnp.asarray(len(self.steps), jnp.int32), current)


class _Ema:
  """An EMA point: its float32 average, started at the step-0 weights."""

  def __init__(self, point: GridPoint, init_params: Any):
    self.point = point
    self.steps: Sequence[int] = ()  # needs no stored weights
    self.records = 0
    self.average = jax.tree.map(
        lambda p: jnp.array(p, dtype=_accumulator_dtype(p.dtype), copy=True), init_params
    )

  def record(self, step: int, weights: Any) -> None:
    del step
    self.average = _ema_update(self.average, weights, decay=self.point.decay)
    self.records += 1

  def value(self, store: dict[int, Any], current: Any) -> Any:
    del store
    if not self.records:
      return current
    return jax.tree.map(lambda a, p: a.astype(p.dtype), self.average, current)


@dataclasses.dataclass
class _Source:
  """What a sweep reads from the trial that saved its weights."""

  log_dir: str
  params_dir: str
  meta: dict[str, Any]
  hparams: dict[str, Any]
  rows: dict[int, dict[str, Any]]  # its eval rows by global_step
  steps: list[int]  # saved steps, ascending, 0 excluded
  has_step_zero: bool
  interval: int
  study: int
  trial: int


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise spec.UsageError(f"cannot read {path} (is this a trial folder?): {e}") from e


def _read_source(log_dir: str) -> _Source:
  meta = _read_json(os.path.join(log_dir, "meta_data_0.json"))
  hparams = _read_json(os.path.join(log_dir, "hparams.json"))
  csv_path = os.path.join(log_dir, "eval_measurements.csv")
  rows = logs.read_rows(csv_path) if os.path.exists(csv_path) else []
  params_dir = os.path.join(log_dir, runner.PARAMS_DIR)
  all_steps = checkpoints.list_steps(params_dir)
  steps = [s for s in all_steps if s > 0]
  if not steps:
    raise spec.UsageError(
        f"{params_dir}: no saved weights after step 0; train with "
        "RunOptions(save_params_every=N) to sweep averages post hoc")
  interval = functools.reduce(math.gcd, steps)
  missing = sorted(set(range(interval, steps[-1] + 1, interval)) - set(steps))
  if missing:
    raise spec.UsageError(
        f"{params_dir}: weights saved every {interval} steps, but steps "
        f"{missing[:5]}{' ...' if len(missing) > 5 else ''} are missing")
  trial = re.fullmatch(r"trial_(\d+)", os.path.basename(os.path.normpath(log_dir)))
  study_dir = os.path.dirname(os.path.dirname(os.path.normpath(log_dir)))
  study = re.fullmatch(r"study_(\d+)", os.path.basename(study_dir))
  return _Source(
      log_dir=os.path.abspath(log_dir), params_dir=params_dir, meta=meta,
      hparams=hparams, rows={int(r["global_step"]): r for r in rows},
      steps=steps, has_step_zero=0 in all_steps, interval=interval,
      study=int(study.group(1)) if study else 0,
      trial=int(trial.group(1)) if trial else 1,
  )


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _grid(lawa_grid: Iterable[Sequence[Any]], ema_grid: Iterable[Sequence[Any]],
          source: _Source) -> list[GridPoint]:
  """Validated, de-duplicated grid points (in the order given)."""
  points = []
  for method, grid in (("lawa", lawa_grid), ("ema", ema_grid)):
    for item in grid:
      if len(item) != 2:
        raise spec.UsageError(f"{method} grid point {item!r} is not a pair")
      every, value = item
      if not _is_int(every) or every < 1:
        raise spec.UsageError(f"{method}: every must be a positive integer, got {every!r}")
      if every % source.interval:
        raise spec.UsageError(
            f"{method}: every={every} is not a multiple of the saved interval "
            f"{source.interval} (the weights in {source.params_dir})")
      if method == "lawa" and not (_is_int(value) and value >= 1):
        raise spec.UsageError(f"lawa: window must be a positive integer, got {value!r}")
      if method == "ema" and not (
          isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0.0 <= value <= 1.0):
        raise spec.UsageError(f"ema: decay must be a number in [0, 1], got {value!r}")
      point = (GridPoint("lawa", every, window=value) if method == "lawa"
               else GridPoint("ema", every, decay=float(value)))
      if point not in points:
        points.append(point)
  if not points:
    raise spec.UsageError("nothing to sweep: give at least one LAWA or EMA grid point")
  return points


def _eval_steps(eval_steps: Sequence[int] | None, source: _Source) -> list[int]:
  saved = set(source.steps)
  if eval_steps is not None and not eval_steps:
    raise spec.UsageError("eval_steps is empty: give steps, or None for the default")
  if eval_steps is None:
    # Where the run evaluated (and kept weights), and the last saved step.
    return sorted((set(source.rows) & saved) | {source.steps[-1]})
  wrong = [s for s in eval_steps if s not in saved and s != 0]
  if wrong:
    raise spec.UsageError(
        f"eval steps {wrong} have no saved weights; saved: every "
        f"{source.interval} steps up to {source.steps[-1]}")
  return sorted(set(eval_steps))


def _initial_params(workload: spec.Workload, source: _Source) -> tuple[Any, Any]:
  """The step-0 weights and the initial model state.

  Runs saved before step 0 was kept get their weights re-created from the
  seed exactly as the runner makes them.
  """
  seed = int(source.meta.get("rng_seed", 0))
  _, _, model_rng, _ = jax.random.split(jax.random.key(seed), 4)
  params, model_state = workload.init_model_fn(model_rng)
  if source.has_step_zero:
    params = checkpoints.restore_checkpoint(
        source.params_dir, 0, {"params": params}).state["params"]
  return params, model_state


def _eval_rng(seed: int, step: int) -> jax.Array:
  """The key the runner evaluated step ``step`` with (see runner._train_loop)."""
  rng = jax.random.split(jax.random.key(seed), 4)[3]
  step_rng = jax.random.fold_in(rng, max(step - 1, 0))
  return jax.random.split(step_rng, 4)[3]


class _Output:
  """One grid point's trial folder."""

  def __init__(self, out_dir: str, point: GridPoint, source: _Source,
               workload: spec.Workload):
    submission = source.meta.get("submission", "run")
    self.name = f"{submission}_{point.label}"
    self.log_dir = logs.trial_dir(os.path.join(out_dir, self.name), source.study,
                                  workload.workload_id, source.trial)
    self.logger = logs.MetricsLogger(self.log_dir)
    self.eval_time = 0.0
    self.source = source
    self.point = point

  def start(self) -> None:
    logs.write_json(os.path.join(self.log_dir, "hparams.json"),
                    self.source.hparams | self.point.hparams)
    logs.write_json(os.path.join(self.log_dir, "meta_data_0.json"), self.source.meta | {
        "posthoc_of": self.source.log_dir,
        "posthoc_saved_every": self.source.interval,
        "posthoc_name": self.name,
    })
    self.status("running")

  def status(self, status: str, message: str = "") -> None:
    step = self.logger.rows[-1]["global_step"] if self.logger.rows else 0
    logs.write_json(os.path.join(self.log_dir, "status.json"), {
        "status": status, "message": message, "global_step": step, "preemption_count": 0})

  def append(self, step: int, submission_time: float, metrics: dict[str, float],
             eval_seconds: float) -> None:
    self.eval_time += eval_seconds
    original = self.source.rows.get(step, {})
    online = {k: v for k, v in original.items() if k.startswith(logs.ONLINE_PREFIX)}
    if not online:  # the run evaluated its training weights
      online = {logs.ONLINE_PREFIX + k.split("/", 1)[1]: v for k, v in original.items()
                if k.startswith("validation/")}
    self.logger.append({
        "global_step": step,
        "preemption_count": original.get("preemption_count", 0),
        "score": submission_time,
        "accumulated_submission_time": submission_time,
        "accumulated_eval_time": self.eval_time,
        "accumulated_logging_time": 0.0,
        "total_duration": submission_time + self.eval_time,
    } | metrics | online)


def sweep(
    workload: spec.Workload,
    trial_log_dir: str,
    out_dir: str,
    lawa_grid: Iterable[Sequence[int]] = (),
    ema_grid: Iterable[Sequence[float]] = (),
    eval_steps: Sequence[int] | None = None,
    data_dir: str | None = None,
) -> list[str]:
  """Average a run's saved weights for every grid point and evaluate each.

  Reads every saved checkpoint once, in step order; all grid points are
  updated from it before the next is read.

  Args:
    workload: the workload the run trained (its size too).
    trial_log_dir: the run's trial folder (with ``params/`` from
      ``RunOptions(save_params_every=N)``).
    out_dir: where the grid points' folders go:
      ``out_dir/<submission>_<label>/study_<k>/<workload_id>_jax/trial_<i>/``
      (study and trial numbers as the run's).
    lawa_grid: ``(every, window)`` pairs; ``every`` a multiple of N.
    ema_grid: ``(every, decay)`` pairs; ``every`` a multiple of N.
    eval_steps: steps to evaluate at (saved ones); default: the steps the run
      evaluated at that have saved weights, and the last saved step.
    data_dir: dataset folder (None for sizes that generate their data).

  Returns:
    The written trial folders, in grid order (LAWA points first).

  Raises:
    spec.UsageError: unreadable trial folder, no or incomplete saved weights,
      a bad grid point (``every`` not a multiple of N names N), or an eval
      step without saved weights. Nothing is written then.
  """
  source = _read_source(trial_log_dir)
  if source.meta.get("workload_id", workload.workload_id) != workload.workload_id:
    raise spec.UsageError(f"{trial_log_dir} is a run of {source.meta['workload_id']}, "
                          f"not {workload.workload_id}")
  points = _grid(lawa_grid, ema_grid, source)
  wanted = _eval_steps(eval_steps, source)
  init_params, model_state = _initial_params(workload, source)
  averages = [_Lawa(p) if p.method == "lawa" else _Ema(p, init_params) for p in points]
  outputs = [_Output(out_dir, p, source, workload) for p in points]
  for output in outputs:
    output.start()
  store: dict[int, Any] = {}  # step -> weights that some LAWA point still averages
  try:
    for step, weights, submission_time in _saved(source, init_params, wanted[-1]):
      for average in averages:
        if average.point.records_at(step):
          average.record(step, weights)
      needed = {s for average in averages for s in average.steps}
      store = {s: w for s, w in store.items() if s in needed}
      if step in needed:
        store[step] = weights
      if step not in wanted:
        continue
      rng = _eval_rng(int(source.meta.get("rng_seed", 0)), step)
      for average, output in zip(averages, outputs, strict=True):
        params = average.value(store, weights)
        t0 = time.perf_counter()
        metrics = workload.eval_model(workload.eval_batch_size, params, model_state,
                                      rng, data_dir, splits=("validation",))
        output.append(step, submission_time, metrics, time.perf_counter() - t0)
  except BaseException as e:
    for output in outputs:
      output.status("failed", f"{type(e).__name__}: {e}")
    raise
  for output in outputs:
    output.status("completed")
  return [output.log_dir for output in outputs]


def _saved(source: _Source, init_params: Any, last: int
           ) -> Iterator[tuple[int, Any, float]]:
  """``(step, weights, submission_time)`` from step 0 to ``last``, each read once."""
  yield 0, init_params, 0.0
  for step in source.steps:
    if step > last:
      return
    restored = checkpoints.restore_checkpoint(
        source.params_dir, step, {"params": init_params})
    yield (step, restored.state["params"],
           float(restored.metadata.get("submission_time", math.nan)))


def _parse_points(items: Sequence[str], method: str) -> list[tuple[int, Any]]:
  """``["64:20", ...]`` -> ``[(64, 20), ...]`` (EMA: ``"1:0.999"`` -> ``(1, 0.999)``)."""
  what, example = ("WINDOW", "64:20") if method == "lawa" else ("DECAY", "1:0.999")
  points = []
  for item in items:
    every_text, sep, value_text = item.strip().partition(":")
    try:
      if not sep:
        raise ValueError
      every = int(every_text)
      value = int(value_text) if method == "lawa" else float(value_text)
    except ValueError:
      raise spec.UsageError(
          f"--{method} item {item!r} is not EVERY:{what} (e.g. {example})") from None
    points.append((every, value))
  return points


def posthoc_command(trial_dir: str, out_dir: str, lawa: Sequence[str],
                    ema: Sequence[str], data_dir: str | None) -> list[str]:
  """``algoperf-avg posthoc TRIAL_DIR --lawa=64:20,128:10 --ema=1:0.999 --out=DIR``.

  Resolves the workload from the trial's ``meta_data_0.json`` and runs `sweep`
  (default eval steps).

  Args:
    trial_dir: the run's trial folder.
    out_dir: where the grid points' folders go.
    lawa: ``"EVERY:WINDOW"`` items.
    ema: ``"EVERY:DECAY"`` items.
    data_dir: dataset folder, needed by full sizes.

  Returns:
    The written trial folders.

  Raises:
    spec.UsageError: a malformed item, an unknown workload, a missing
      ``data_dir``, or anything `sweep` rejects.
  """
  from algoperf_avg import registry

  lawa_grid, ema_grid = _parse_points(lawa, "lawa"), _parse_points(ema, "ema")
  meta = _read_json(os.path.join(trial_dir, "meta_data_0.json"))
  if "workload" not in meta:
    raise spec.UsageError(f"{trial_dir}/meta_data_0.json names no workload")
  options = {k: v for k, v in (meta.get("workload_options") or {}).items()
             if v is not None}
  workload = registry.get_workload(meta["workload"], meta.get("size", "full"), **options)
  workload.check_data(data_dir)
  return sweep(workload, trial_dir, out_dir, lawa_grid, ema_grid, data_dir=data_dir)
