"""Running averages of a stream of weights, one per grid point, and their logs.

Shared by post-hoc sweeps over saved snapshots (`posthoc`) and by sweeps run
alongside training (`sweep`): each `GridPoint` (LAWA, EMA, SWA; any ``every``
and ``start_step``) is kept up to date exactly as the online transform of
`averaging.online` computes it, and each point writes its own AlgoPerf trial
folder (`GridOutput`), so ``algoperf-avg score`` compares the points as
submissions.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import logs


def _accumulator_dtype(dtype: Any) -> Any:
  return jnp.promote_types(dtype, jnp.float32)


@jax.jit
def _add(total: Any, weights: Any) -> Any:
  return jax.tree.map(lambda t, w: t + w.astype(t.dtype), total, weights)


@jax.jit
def _mean(total: Any, count: jax.Array, like: Any) -> Any:
  return jax.tree.map(lambda t, p: (t / count).astype(p.dtype), total, like)


@jax.jit
def _kahan_add(total: Any, compensation: Any, weights: Any) -> tuple[Any, Any]:
  # As averaging.swa: y = w - c; t' = t + y; c' = (t' - t) - y.
  def one(t, c, w):
    y = w.astype(t.dtype) - c
    new = t + y
    return new, (new - t) - y

  pairs = jax.tree.map(one, total, compensation, weights)
  outer = jax.tree.structure(total)
  return jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)


@jax.jit
def _kahan_mean(total: Any, compensation: Any, count: jax.Array, like: Any) -> Any:
  return jax.tree.map(lambda t, c, p: ((t - c) / count).astype(p.dtype),
                      total, compensation, like)


@jax.jit
def _ema_update(average: Any, weights: Any, decay: jax.Array) -> Any:
  weights = jax.tree.map(lambda w, a: w.astype(a.dtype), weights, average)
  return optax.tree.update_moment(weights, average, decay, order=1)


def _float_copy(params: Any) -> Any:
  return jax.tree.map(
      lambda p: jnp.array(p, dtype=_accumulator_dtype(p.dtype), copy=True), params)


class LawaAverage:
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


class EmaAverage:
  """An EMA point: its float32 average, started at the step-0 weights."""

  def __init__(self, point: GridPoint, init_params: Any):
    self.point = point
    self.steps: Sequence[int] = ()  # needs no stored weights
    self.records = 0
    self.average = _float_copy(init_params)

  def record(self, step: int, weights: Any) -> None:
    del step
    self.average = _ema_update(self.average, weights,
                               jnp.asarray(self.point.decay, jnp.float32))
    self.records += 1

  def value(self, store: dict[int, Any], current: Any) -> Any:
    del store
    if not self.records:
      return current
    return jax.tree.map(lambda a, p: a.astype(p.dtype), self.average, current)


class SwaAverage:
  """An SWA point: a Kahan-compensated float32 sum of every record."""

  def __init__(self, point: GridPoint, init_params: Any):
    self.point = point
    self.steps: Sequence[int] = ()
    self.records = 0
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, _accumulator_dtype(p.dtype)),
                         init_params)
    self.total, self.compensation = zeros, jax.tree.map(jnp.zeros_like, zeros)

  def record(self, step: int, weights: Any) -> None:
    del step
    self.total, self.compensation = _kahan_add(self.total, self.compensation, weights)
    self.records += 1

  def value(self, store: dict[int, Any], current: Any) -> Any:
    del store
    if not self.records:
      return current
    return _kahan_mean(self.total, self.compensation,
                       jnp.asarray(self.records, jnp.float32), current)


class PowerEmaAverage:
  """A power-EMA point run alongside training: `averaging.power_ema(gamma, every)`.

  ``powerema:EVERY:GAMMA`` in ``--sweep_averages`` records every EVERY steps
  (in ``--posthoc_grid``, EVERY is the snapshot interval of an every-step EMA).
  """

  def __init__(self, point: GridPoint, init_params: Any):
    self.point = point
    self.steps: Sequence[int] = ()
    self.records = 0
    self.average = _float_copy(init_params)

  def records_at(self, step: int) -> bool:
    return step >= 1 and step % self.point.every == 0

  def record(self, step: int, weights: Any) -> None:
    del step
    self.records += 1
    t = self.records
    log_beta = (self.point.gamma + 1.0) * math.log1p(-1.0 / t) if t > 1 else -math.inf
    self.average = _power_update(self.average, weights,
                                 jnp.asarray(math.exp(log_beta), jnp.float32),
                                 jnp.asarray(-math.expm1(log_beta), jnp.float32))

  def value(self, store: dict[int, Any], current: Any) -> Any:
    del store
    if not self.records:
      return current
    return jax.tree.map(lambda a, p: a.astype(p.dtype), self.average, current)


@jax.jit
def _power_update(average: Any, weights: Any, beta: jax.Array, weight: jax.Array) -> Any:
  return jax.tree.map(lambda a, w: beta * a + weight * w.astype(a.dtype), average, weights)


AVERAGES = {"lawa": lambda point, init: LawaAverage(point), "ema": EmaAverage,
            "swa": SwaAverage, "powerema": PowerEmaAverage}


def records_at(average: Any, step: int) -> bool:
  """Whether ``average`` records the weights of ``step`` (its point's schedule)."""
  own = getattr(average, "records_at", None)
  return own(step) if own is not None else average.point.records_at(step)


def make_average(point: GridPoint, init_params: Any) -> Any:
  """The running average of ``point``, starting from ``init_params``."""
  return AVERAGES[point.method](point, init_params)


class GridOutput:
  """One grid point's AlgoPerf trial folder (rows of averaged + online metrics)."""

  def __init__(self, out_dir: str, name: str, workload_id: str, study: int, trial: int,
               hparams: Mapping[str, Any], meta: Mapping[str, Any]):
    self.name = name
    self.log_dir = logs.trial_dir(os.path.join(out_dir, name), study, workload_id, trial)
    self.logger = logs.MetricsLogger(self.log_dir)
    self.eval_time = 0.0
    self.hparams, self.meta = dict(hparams), dict(meta)

  def start(self) -> None:
    logs.write_json(os.path.join(self.log_dir, "hparams.json"), self.hparams)
    logs.write_json(os.path.join(self.log_dir, "meta_data_0.json"), self.meta)
    self.status("running")

  def status(self, status: str, message: str = "") -> None:
    step = self.logger.rows[-1]["global_step"] if self.logger.rows else 0
    logs.write_json(os.path.join(self.log_dir, "status.json"), {
        "status": status, "message": message, "global_step": step, "preemption_count": 0})

  def append(self, step: int, submission_time: float, metrics: Mapping[str, float],
             eval_seconds: float, online: Mapping[str, Any],
             preemption_count: int = 0) -> None:
    """One eval row; ``online`` is the run's row at ``step`` (its validation metrics).

    The online weights' metrics go under ``validation_online/`` (taken from
    the run's own ``validation_online/*`` when it evaluated an average).
    """
    self.eval_time += eval_seconds
    shown = {k: v for k, v in online.items() if k.startswith(logs.ONLINE_PREFIX)}
    if not shown:  # the run evaluated its training weights
      shown = {logs.ONLINE_PREFIX + k.split("/", 1)[1]: v for k, v in online.items()
               if k.startswith("validation/")}
    self.logger.append({
        "global_step": step,
        "preemption_count": preemption_count,
        "score": submission_time,
        "accumulated_submission_time": submission_time,
        "accumulated_eval_time": self.eval_time,
        "accumulated_logging_time": 0.0,
        "total_duration": submission_time + self.eval_time,
    } | dict(metrics) | shown)


