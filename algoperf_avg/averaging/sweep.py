"""A sweep of averages run alongside training: one run, many averaging settings.

``algoperf-avg run --sweep_averages=lawa:1:20,lawa:8:20,ema:4:0.9`` trains the
submission once and keeps, in memory, the running average of every grid point
(`averaging.grid_averages`, the online transforms' own schedule); at each
evaluation each average is evaluated too, and written to its own AlgoPerf
trial folder beside the run's (``<sweep_dir>/<submission>_<label>/...``), so
``algoperf-avg score`` compares them as submissions. Because averaging never
feeds back into training, each folder holds exactly what
``<submission> + averaging`` would have logged online (tests/test_sweep.py),
at the cost of one training run instead of one per point. A power EMA point
``powerema:EVERY:GAMMA`` is `averaging.power_ema(GAMMA, EVERY)`.

What it costs, and where it is counted: updating the averages and evaluating
them are excluded from the submission time (logged as eval and logging time),
so the run's own time-to-target is not distorted; the rows of the points carry
the run's submission time. Memory: one float32 copy of the params per EMA
point, two per SWA point, and one per step that a LAWA point averages (shared
between points). Meant for the small sizes; post-hoc snapshots
(`averaging.snapshots`) are the disk-backed alternative.

A sweep cannot resume after a preemption (its averages live in memory); a
resumed run with a sweep is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from algoperf_avg import spec
from algoperf_avg.averaging import grid_averages
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import logs


def default_dir(log_dir: str) -> str:
  """Where a trial's sweep folders go: beside its experiment folder.

  ``EXP/study_k/<workload>_jax/trial_i`` -> the folder holding ``EXP``.
  """
  experiment = os.path.dirname(os.path.dirname(os.path.dirname(os.path.normpath(log_dir))))
  return os.path.dirname(experiment) or "."


class InRunSweep:
  """The grid's running averages during one trial, and their trial folders."""

  def __init__(self, workload: spec.Workload, points: Sequence[GridPoint],
               out_dir: str, submission: str, hparams: Mapping[str, Any],
               meta: Mapping[str, Any], study: int, trial: int, init_params: Any):
    self.workload = workload
    self.averages = [grid_averages.make_average(p, init_params) for p in points]
    self.store: dict[int, Any] = {}  # step -> weights a LAWA point still averages
    self.outputs = [
        grid_averages.GridOutput(
            out_dir, f"{submission}_{p.label}", workload.workload_id, study, trial,
            dict(hparams) | p.hparams(workload.step_hint),
            dict(meta) | {"sweep_of": submission, "sweep_point": p.label})
        for p in points]
    for output in self.outputs:
      output.start()

  def record(self, step: int, params: Any) -> float:
    """Fold the weights after update ``step`` into the averages; returns seconds."""
    t0 = time.perf_counter()
    due = [a for a in self.averages if grid_averages.records_at(a, step)]
    if due:
      # A copy: the next (donating) train step overwrites the params' buffers.
      weights = jax.tree.map(jnp.copy, params)
      for average in due:
        average.record(step, weights)
      needed = {s for a in self.averages for s in a.steps}
      self.store = {s: w for s, w in self.store.items() if s in needed}
      if step in needed:
        self.store[step] = weights
    return time.perf_counter() - t0

  def evaluate(self, step: int, submission_time: float, params: Any, model_state: Any,
               state_for: Any, rng: jax.Array, data_dir: str | None,
               run_row: Mapping[str, Any], preemption_count: int) -> float:
    """Evaluate every average (validation, target metric); returns seconds.

    ``state_for(params, model_state)`` gives the model state to evaluate with
    (the run's batch-norm policy).
    """
    t0 = time.perf_counter()
    for average, output in zip(self.averages, self.outputs, strict=True):
      averaged = average.value(self.store, params)
      t1 = time.perf_counter()
      metrics = self.workload.eval_model(
          self.workload.eval_batch_size, averaged, state_for(averaged, model_state), rng,
          data_dir, splits=("validation",), metrics="target")
      output.append(step, submission_time, metrics, time.perf_counter() - t1,
                    online=run_row, preemption_count=preemption_count)
    return time.perf_counter() - t0

  def finish(self, status: str, message: str = "") -> None:
    for output in self.outputs:
      output.status(status, message)


def sweep_rows(directory: str) -> list[dict[str, Any]]:
  """The eval rows of one sweep folder's trial (for scripts)."""
  return logs.read_rows(os.path.join(directory, "eval_measurements.csv"))
