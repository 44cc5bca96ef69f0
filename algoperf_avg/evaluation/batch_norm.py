"""Batch-norm statistics for weights the model was not trained at (averages).

An average of weights needs statistics of its own activations: the running
statistics of the training weights describe another network. The paper uses
the latest training statistics (policy ``"latest"``); ``"recompute"`` runs the
averaged weights over a few training batches and keeps the mean of their
batch statistics, as SWA's ``bn_update`` does.

How a batch's statistics are read out of any model: a model state updated as
a running average, ``new = m * old + (1 - m) * batch_stat`` (Flax's
BatchNorm, AlgoPerf's padding-aware speech BatchNorm), returns
``(1 - m) * batch_stat`` for an all-zero ``old``. With the workload's declared
``batch_norm_momentum`` the division by ``1 - m`` is exact to float rounding,
also for m = 0.999 (the speech models). Without one, ``m`` is measured from a
second pass from an all-one state (``m = new_ones - new_zeros``); that loses
about ``eps / (1 - m)`` relative accuracy (6e-5 at m = 0.999, 6e-7 at 0.9),
so workloads with batch norm declare their momentum.

The runner applies a trial's ``bn_policy`` hyperparameter to whatever weights
any submission evaluates (`EvalStatistics`); post-hoc sweeps apply it the same
way, with the same batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

from algoperf_avg import spec

POLICIES = ("latest", "recompute")


def check_policy(policy: str) -> str:
  """``policy`` if it is one of `POLICIES`; else a `spec.UsageError`."""
  if policy not in POLICIES:
    raise spec.UsageError(f"bn_policy must be one of {POLICIES}, got {policy!r}")
  return policy


def has_batch_stats(model_state: Any) -> bool:
  """Whether the model state holds anything (batch statistics) to recompute."""
  return bool(jax.tree.leaves(model_state))


def batch_stats_fn(workload: spec.Workload, dropout_rate: float | None = None
                   ) -> Callable[..., Any]:
  """A jitted ``(params, model_state, batch, rng) -> that batch's statistics``."""
  momentum = workload.batch_norm_momentum

  def forward(params, state, batch, rng):
    _, new_state = workload.model_fn(
        params, batch, state, spec.ForwardPassMode.TRAIN, rng,
        update_batch_norm=True, dropout_rate=dropout_rate,
    )
    return new_state

  def batch_stats(params, model_state, batch, rng):
    from_zeros = forward(params, jax.tree.map(jnp.zeros_like, model_state), batch, rng)
    if momentum is not None:
      return jax.tree.map(lambda a: a / (1.0 - momentum), from_zeros)
    from_ones = forward(params, jax.tree.map(jnp.ones_like, model_state), batch, rng)
    return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), from_zeros, from_ones)

  return jax.jit(batch_stats)


def recompute_batch_stats(
    stats_fn: Callable[..., Any],
    params: Any,
    model_state: Any,
    batches: Iterable[Any],
    rng: jax.Array,
) -> Any:
  """The mean, over ``batches``, of each batch's statistics under ``params``.

  Args:
    stats_fn: from `batch_stats_fn` (jitted once per workload).
    params: the weights to compute statistics for (e.g. an average).
    model_state: a model state of the right structure (values unused).
    batches: training batches (device or host arrays), at least one.
    rng: dropout key (folded with the batch index).

  Returns:
    A model state like ``model_state``.
  """
  total, count = None, 0
  for i, batch in enumerate(batches):
    stats = stats_fn(params, model_state, batch, jax.random.fold_in(rng, i))
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if not count:
    raise ValueError("recomputing batch statistics needs at least one batch")
  return jax.tree.map(lambda t: t / count, total)


def bn_data_rng(rng_seed: int, step: int) -> jax.Array:
  """The data key of the batches that statistics at ``step`` are computed from.

  A stream of its own (not the training stream), keyed on the trial's seed
  and the step: recomputing never changes what the training sees, and a
  post-hoc sweep of the same run draws exactly the same batches.
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(rng_seed), 0xB4), step)


class EvalStatistics:
  """The ``bn_policy`` of a trial, applied to weights that are evaluated.

  ``"latest"`` keeps the training statistics; ``"recompute"`` (for averaged
  weights of models with batch statistics) averages the statistics of
  ``num_batches`` training batches from `bn_data_rng`'s stream. Used by the
  runner for every submission's evaluated weights, and by post-hoc sweeps.
  """

  def __init__(self, workload: spec.Workload, policy: str = "latest",
               num_batches: int = 8, dropout_rate: float | None = None):
    self.workload = workload
    self.policy = check_policy(policy)
    self.num_batches = int(num_batches)
    if self.num_batches < 1:
      raise spec.UsageError(f"bn_batches must be >= 1, got {num_batches}")
    self.dropout_rate = dropout_rate
    self._stats_fn = None

  @classmethod
  def from_hparams(cls, workload: spec.Workload, hparams: Any) -> EvalStatistics:
    """From the harness hyperparameters ``bn_policy`` and ``bn_batches``."""
    return cls(workload, hparams.get("bn_policy", "latest") or "latest",
               hparams.get("bn_batches", 8) or 8, hparams.get("dropout_rate"))

  def applies(self, model_state: Any) -> bool:
    return self.policy == "recompute" and has_batch_stats(model_state)

  def state_for(self, params: Any, model_state: Any, *, rng_seed: int, step: int,
                data_dir: str | None, batch_size: int, mesh: Any = None) -> Any:
    """The model state to evaluate ``params`` with (``model_state`` under "latest")."""
    if not self.applies(model_state):
      return model_state
    from algoperf_avg.training import sharding  # the engine's layer, imported late

    if self._stats_fn is None:
      self._stats_fn = batch_stats_fn(self.workload, self.dropout_rate)
    stream = self.workload.train_batches(
        bn_data_rng(rng_seed, step), data_dir, batch_size // jax.process_count(),
        shard_index=jax.process_index(), num_shards=jax.process_count())
    batches = itertools.islice(stream, self.num_batches)
    if mesh is not None:
      batches = sharding.sharded_iterator(batches, mesh, self.workload.batch_pad_values)
    return recompute_batch_stats(self._stats_fn, params, model_state, batches,
                                 jax.random.fold_in(bn_data_rng(rng_seed, step), 1))
