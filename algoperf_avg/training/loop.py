"""The training loop of one trial: AlgoPerf's rules, one short method per concern.

Per iteration, as AlgoPerf's ``submission_runner.train_once``:

1. `_step`: data selection and update (timed). The step that raises
   `TrainingCompleteError` still counts; ``max_global_steps`` and a small
   size's step budget end training the same way.
2. `_eval_due`: after the eval period (measured from the end of the previous
   evaluation), or every ``eval_every_steps`` steps, or when training is
   complete.
3. When due: `_prepare` (``prepare_for_eval``, timed, and the trial's
   ``bn_policy`` for averaged weights), then the budget decision: with no time
   left, training stops *without* evaluating (no row past the budget); else
   `_evaluate` (untimed) and `_log_and_checkpoint` (logging time).
4. Training stops once both the validation and the test targets are reached
   (``stop_at_target``), at the budget, when complete, or on divergence.

The clock keeps one step in flight: step k is dispatched before the loop
waits for step k-1, so the host prepares the next batch while the device
computes; before any evaluation or budget decision it waits for everything,
so the submission time at every eval is exact. Unlike AlgoPerf's JAX runner,
no device work queued by the submission can spill into the untimed eval.
"""

from __future__ import annotations

import inspect
import math
import types
from typing import Any

import jax
import jax.numpy as jnp

from algoperf_avg import spec
from algoperf_avg.evaluation import batch_norm
from algoperf_avg.training import sharding
from algoperf_avg.training import trial as trial_lib


def _marker(tree: Any) -> jax.Array | None:
  """A tiny array that is ready when ``tree`` is (never donated to the next step)."""
  leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
  if not leaves:
    return None
  return jnp.copy(min(leaves, key=lambda x: x.size).reshape(-1)[:1])


def _training_complete_errors() -> tuple[type[BaseException], ...]:
  """Ours, and AlgoPerf's own when a submission raises that one."""
  errors: list[type[BaseException]] = [spec.TrainingCompleteError]
  import sys

  real = getattr(sys.modules.get("algoperf.spec"), "TrainingCompleteError", None)
  if isinstance(real, type) and real is not spec.TrainingCompleteError:
    errors.append(real)
  return tuple(errors)


class TrainLoop:
  """One trial's training, from fresh or resumed state to its `finish`."""

  def __init__(self, trial: trial_lib.Trial, state: dict[str, Any], input_queue: Any,
               sweep: Any, rng: jax.Array):
    self.trial = trial
    self.workload, self.submission = trial.workload, trial.submission
    self.params = state["params"]
    self.model_state = state["model_state"]
    self.optimizer_state = state["optimizer_state"]
    self.input_queue = input_queue
    self.sweep = sweep
    self.rng = rng
    self.eval_stats = batch_norm.EvalStatistics.from_hparams(trial.workload, trial.hparams)
    self.status, self.message = "completed", ""
    self.training_complete = False
    self.goals_reached = False
    self.latest_metric = None
    self.previous = None  # the marker of the step in flight
    self.needs_train_state = "train_state" in inspect.signature(
        self.submission.update_params).parameters
    self.errors = _training_complete_errors()

  # ----- the loop -------------------------------------------------------------

  def run(self) -> None:
    trial = self.trial
    while not (self.training_complete or self.goals_reached or self.status != "completed"):
      step_rng = jax.random.fold_in(self.rng, trial.global_step)
      select_rng, update_rng, prep_rng, eval_rng = jax.random.split(step_rng, 4)
      self._step(select_rng, update_rng)
      if self.status != "completed":
        break
      self._snapshot_and_sweep()
      if self._eval_due():
        prepared = self._prepare(prep_rng)
        if not trial.time_remaining():
          break  # no evaluation past the budget (AlgoPerf)
        self._evaluate(prepared, eval_rng)
        self._log_and_checkpoint()
        trial.clocks.step_start = trial_lib.now()  # eval and logging are untimed
      self._progress()

  # ----- concerns ---------------------------------------------------------------

  def _step(self, select_rng: jax.Array, update_rng: jax.Array) -> None:
    """Data selection + update, timed with one step in flight."""
    trial = self.trial
    try:
      batch = self.submission.data_selection(
          self.workload, self.input_queue, self.optimizer_state, self.params,
          self.model_state, trial.hparams, trial.global_step, select_rng)
      extra = ({"train_state": types.MappingProxyType(trial.train_state())}
               if self.needs_train_state else {})
      self.optimizer_state, self.params, self.model_state = self.submission.update_params(
          self.workload, self.params, self.workload.model_params_types, self.model_state,
          trial.hparams, batch, self.workload.loss_type, self.optimizer_state,
          trial.eval_results, trial.global_step, update_rng, **extra)
    except self.errors:
      self.training_complete = True
    except spec.DivergedError as e:
      self.status, self.message = "diverged", str(e)
      return
    trial.global_step += 1  # the step that ended training counts (AlgoPerf)
    marker = _marker((self.params, self.optimizer_state))
    if self.previous is not None:
      self.previous.block_until_ready()  # step k-1 is done; step k runs on
    self.previous = marker
    trial.clocks.add_step(trial_lib.now())
    limit = trial.options.max_global_steps
    if (limit and trial.global_step >= limit) or (
        trial.step_budget is not None and trial.global_step >= trial.step_budget):
      self.training_complete = True

  def _settle(self) -> None:
    """Wait for the step in flight and count it (before untimed work)."""
    jax.block_until_ready((self.params, self.optimizer_state, self.model_state))
    self.trial.clocks.add_step(trial_lib.now())
    self.previous = None

  def _snapshot_and_sweep(self) -> None:
    """Untimed, like evaluation: after the step in flight has been counted."""
    trial = self.trial
    snapshot = (trial.snapshots is not None
                and trial.snapshots.policy.saves_at(trial.global_step))
    if self.sweep is None and not snapshot:
      return
    self._settle()
    if self.sweep is not None:
      trial.clocks.logging += self.sweep.record(trial.global_step, self.params)
    if snapshot:
      trial.snapshot(self.params, self.model_state)
    trial.clocks.step_start = trial_lib.now()

  def _eval_due(self) -> bool:
    trial = self.trial
    if self.training_complete:
      return True
    if trial.eval_every_steps:
      return trial.global_step % trial.eval_every_steps == 0
    return (trial.clocks.step_end - trial.clocks.last_eval_end
            >= self.workload.eval_period_time_sec)

  def _prepare(self, prep_rng: jax.Array) -> tuple[Any, ...]:
    """``prepare_for_eval`` and the averaged weights' batch statistics, timed."""
    trial = self.trial
    jax.block_until_ready((self.params, self.optimizer_state, self.model_state))
    start = trial_lib.now()
    trial.clocks.add_step(start)  # the step in flight, now finished
    prepared = self.submission.prepare_for_eval(
        self.workload, self.params, self.workload.model_params_types, self.model_state,
        trial.hparams, self.workload.loss_type, self.optimizer_state, trial.eval_results,
        trial.global_step, prep_rng)
    (self.optimizer_state, self.params, self.model_state, eval_params, eval_state,
     averaged) = _unpack_prepared(prepared, self.params, self.model_state)
    if averaged and eval_state is self.model_state:
      eval_state = self._state_for(eval_params, self.model_state)
    jax.block_until_ready((self.optimizer_state, self.params, eval_params, eval_state))
    trial.clocks.submission += trial_lib.now() - start
    self.previous = None
    return eval_params, eval_state, averaged

  def _state_for(self, params: Any, model_state: Any) -> Any:
    """The trial's ``bn_policy`` applied to weights it evaluates."""
    trial = self.trial
    if not self.eval_stats.applies(model_state):
      return model_state
    return self.eval_stats.state_for(
        params, model_state, rng_seed=trial.rng_seed, step=trial.global_step,
        data_dir=trial.data_dir, batch_size=trial.batch_size, mesh=trial.mesh)

  def _evaluate(self, prepared: tuple[Any, ...], eval_rng: jax.Array) -> None:
    """Untimed evaluation; targets; divergence of the evaluated loss."""
    trial = self.trial
    eval_params, eval_state, averaged = prepared
    row = trial.evaluate(self.params, self.model_state, eval_params, eval_state, averaged,
                         eval_rng)
    self.latest_metric = row.get(f"validation/{self.workload.target_metric_name}")
    if self.sweep is not None:
      trial.clocks.eval += self.sweep.evaluate(
          trial.global_step, trial.clocks.submission, self.params, self.model_state,
          self._state_for, eval_rng, trial.data_dir, row, trial.preemption_count)
    self.row = row
    if not all(math.isfinite(v) for k, v in row.items() if k.endswith("/loss")):
      self.status = "diverged"
      self.message = f"non-finite eval loss at step {trial.global_step}"
    elif trial.options.stop_at_target and trial.goals_reached():
      self.goals_reached = True

  def _log_and_checkpoint(self) -> None:
    """Snapshots for post-hoc sweeps and the checkpoint (logging time)."""
    trial = self.trial
    if trial.snapshots is not None:
      trial.snapshot(self.params, self.model_state)  # eval steps: the model state
      trial.prune_snapshots()
    trial.batches_taken += self.input_queue.taken
    self.input_queue.taken = 0
    start = trial_lib.now()
    trial.save({"params": self.params, "model_state": self.model_state,
                "optimizer_state": self.optimizer_state}, self.input_queue.source)
    trial.clocks.logging += trial_lib.now() - start

  def _progress(self) -> None:
    progress = self.trial.options.progress
    if progress:
      from algoperf_avg.training.runner import Progress

      progress(Progress(self.trial.global_step, self.trial.clocks.submission,
                        self.trial.budget, self.latest_metric,
                        self.workload.target_metric_name, self.trial.step_budget))


def _unpack_prepared(prepared: Any, params: Any, model_state: Any):
  """Accept AlgoPerf's 3-tuple or our `PreparedForEval`."""
  if isinstance(prepared, spec.PreparedForEval):
    eval_params = prepared.eval_params if prepared.eval_params is not None else prepared.params
    eval_state = (
        prepared.eval_model_state if prepared.eval_model_state is not None
        else prepared.model_state
    )
    averaged = prepared.eval_params is not None
    return (prepared.optimizer_state, prepared.params, prepared.model_state,
            eval_params, eval_state, averaged)
  optimizer_state, params, model_state = prepared
  return optimizer_state, params, model_state, params, model_state, False


def place_initial_state(trial: trial_lib.Trial, model_rng: jax.Array, opt_rng: jax.Array
                        ) -> dict[str, Any]:
  """Params, model state and optimizer state on the trial's mesh (fresh)."""
  workload, submission, mesh = trial.workload, trial.submission, trial.mesh
  params, model_state = workload.init_model_fn(model_rng)
  params = sharding.place(params, mesh, workload.param_partition_specs())
  model_state = sharding.replicate(model_state, mesh)
  # The optimizer state keeps the shardings it was made with (averaging buffers
  # split over the data axis; moments like their params); the rest is replicated.
  optimizer_state = sharding.place_state(
      submission.init_optimizer_state(workload, params, model_state, trial.hparams,
                                      opt_rng),
      mesh, params)
  return {"params": params, "model_state": model_state, "optimizer_state": optimizer_state}
