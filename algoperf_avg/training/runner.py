"""The fixed-budget training loop: AlgoPerf's timing rules, async-correct.

What counts as submission time (the ``score`` column): data selection, the
update (compilation included), and `prepare_for_eval`. Evaluation and logging
are timed separately and excluded. Unlike AlgoPerf's JAX runner, the clock is
read only after the device has finished the step (`jax.block_until_ready`), so
work queued by an asynchronous update cannot slip into the untimed eval.

Training stops when the submission time reaches the budget
(`max_allowed_runtime_sec` x ruleset multiplier) or, for small sizes, the
step budget (`targets.Targets.step_budget` x the same multiplier), at
``max_global_steps``, when the submission raises `TrainingCompleteError`, when
the loss diverges, or, with ``stop_at_target``, once the validation target is
reached. An evaluation runs whenever ``eval_period_time_sec`` of wall time has
passed since the last one (or every ``eval_every_steps`` steps: the small
sizes' default, for runs that give the same numbers on any machine), and once
more at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax

from algoperf_avg import spec
from algoperf_avg.averaging import snapshots
from algoperf_avg.averaging import sweep as sweep_lib
from algoperf_avg.evaluation import batch_norm
from algoperf_avg.training import logs, sharding
from algoperf_avg.training import trial as trial_lib

_now = trial_lib.now
PARAMS_DIR = trial_lib.PARAMS_DIR
global_batch_size = trial_lib.global_batch_size


@dataclasses.dataclass
class RunOptions:
  """Knobs of one trial that are not hyperparameters."""

  max_global_steps: int | None = None
  eval_every_steps: int | None = None  # None: AlgoPerf's time-based cadence
  stop_at_target: bool = True  # stop once the validation target is reached
  budget_multiplier: float = 1.0  # 1.5 under the self-tuning ruleset
  log_online_metrics: bool = True  # validation_online/* for averaged eval weights
  save_checkpoints: bool = True  # at evals, into <log_dir>/checkpoints
  # Seconds between checkpoints (checked at evals); None: adaptive, < 2% of
  # the wall time (49x the last save's duration); 0: at every eval.
  checkpoint_every_sec: float | None = None
  # Post-hoc snapshots in <log_dir>/params (averaging.snapshots): every N
  # steps, and/or what a grid of averages needs; in their dtype or bfloat16.
  save_params_every: int | None = None
  posthoc_grid: tuple[Any, ...] = ()  # snapshots.GridPoint
  snapshot_dtype: str | None = None
  # Averages evaluated alongside the run, each its own submission folder
  # (averaging.sweep); in sweep_dir (default: beside the experiment folder).
  sweep_averages: tuple[Any, ...] = ()
  sweep_dir: str | None = None
  flags: Mapping[str, Any] | None = None  # written to flags_<p>.json
  mesh: Any = None  # jax.sharding.Mesh; None: all devices (sharding.make_mesh)
  progress: Callable[[Progress], None] | None = None


  def snapshot_policy(self) -> snapshots.Policy:
    return snapshots.Policy(self.save_params_every, tuple(self.posthoc_grid),
                            self.snapshot_dtype)


@dataclasses.dataclass
class Progress:
  """What the progress display gets after each step."""

  global_step: int
  submission_time: float
  budget: float
  latest_metric: float | None
  metric_name: str


@dataclasses.dataclass
class TrialResult:
  """Outcome of `train_once`."""

  log_dir: str | None
  status: str  # "completed" | "diverged"
  global_step: int
  accumulated_submission_time: float
  reached_target: bool
  steps_to_target: int | None
  time_to_target: float | None
  eval_rows: list[dict[str, Any]]
  message: str = ""


def snapshot_estimate(workload: spec.Workload, options: RunOptions, log_dir: str) -> str:
  """The expected disk use of a run's snapshots; `spec.UsageError` if it does not fit."""
  policy = options.snapshot_policy()
  params, state = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
  targets = workload.targets
  eval_every = options.eval_every_steps or targets.eval_every_steps
  fraction = (targets.eval_period_sec / targets.max_runtime_sec
              if math.isfinite(targets.max_runtime_sec) else 0.01)
  count, steps = snapshots.expected_snapshots(
      policy, targets.step_budget, targets.step_hint, eval_every, fraction)
  if options.max_global_steps:
    count, steps = snapshots.expected_snapshots(
        policy, min(options.max_global_steps, steps), options.max_global_steps,
        eval_every, fraction)
  size = snapshots.snapshot_bytes(params, state, policy.dtype)
  return snapshots.check_disk(
      log_dir, count * size,
      f"post-hoc snapshots: {count} of {size / 2**20:.1f} MiB over {steps:,} steps")


def resolve_hparams(
    workload: spec.Workload,
    submission: spec.Submission,
    trial_hparams: Mapping[str, Any] | None,
) -> spec.Hyperparameters:
  """Trial values over the submission's defaults over the workload's reference."""
  merged = dict(workload.reference_hparams)
  merged.update(submission.default_hparams)
  merged.update(trial_hparams or {})
  return spec.Hyperparameters(merged)


def load_finished(log_dir: str, workload: spec.Workload) -> TrialResult | None:
  """The result of a trial that already ended (completed or diverged), or None.

  Lets a rerun of a study skip finished trials and still report them.
  """
  status_path = os.path.join(log_dir, "status.json")
  csv_path = os.path.join(log_dir, "eval_measurements.csv")
  try:
    with open(status_path) as f:
      status = json.load(f)
  except (OSError, ValueError):
    return None
  if status.get("status") not in ("completed", "diverged") or not os.path.exists(csv_path):
    return None
  rows = logs.read_rows(csv_path)
  first = next((r for r in rows if workload.has_reached_validation_target(r)), None)
  last = rows[-1] if rows else {}
  return TrialResult(
      log_dir=log_dir, status=status["status"],
      global_step=int(last.get("global_step", 0)),
      accumulated_submission_time=float(last.get("score", 0.0)),
      reached_target=first is not None,
      steps_to_target=first["global_step"] if first else None,
      time_to_target=first["score"] if first else None,
      eval_rows=rows, message=status.get("message", ""),
  )


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


def _start_sweep(trial: trial_lib.Trial, params: Any) -> sweep_lib.InRunSweep | None:
  """The trial's in-run sweep of averages (None without ``sweep_averages``)."""
  options = trial.options
  if not options.sweep_averages or not trial.log_dir or not trial.writes_logs:
    return None
  if trial.global_step:
    raise spec.UsageError(
        f"{trial.log_dir}: a run with --sweep_averages cannot resume (its averages "
        "lived in memory); start it in a new folder, or keep snapshots and use posthoc")
  study, index = logs.study_and_trial(trial.log_dir)
  meta = logs.meta_data(trial.workload, trial.rng_seed, {
      "submission": trial.submission.name, "global_batch_size": trial.batch_size})
  return sweep_lib.InRunSweep(
      trial.workload, options.sweep_averages,
      options.sweep_dir or sweep_lib.default_dir(trial.log_dir), trial.submission.name,
      trial.hparams.to_dict(), meta, study, index, params)


def _finite(metrics: Mapping[str, float]) -> bool:
  return all(math.isfinite(v) for k, v in metrics.items() if k.endswith("/loss"))


def train_once(
    workload: spec.Workload,
    submission: spec.Submission,
    hparams: spec.Hyperparameters,
    rng_seed: int,
    data_dir: str | None,
    log_dir: str | None,
    options: RunOptions | None = None,
) -> TrialResult:
  """Train one trial under AlgoPerf's fixed-budget rules; log as AlgoPerf does.

  Args:
    workload: the workload instance (its size fixes targets and budget).
    submission: a loaded submission (`registry.load_submission`).
    hparams: resolved hyperparameters (`resolve_hparams`).
    rng_seed: seed of everything random in the trial.
    data_dir: dataset folder (None for sizes that generate their data).
    log_dir: the trial folder (``logs.trial_dir``), or None to log nothing.
    options: stopping, eval cadence and display options.

  Returns:
    A `TrialResult`; the same numbers are in ``log_dir``.
  """
  options = options or RunOptions()
  workload.check_data(data_dir)  # before anything is written
  if log_dir and options.snapshot_policy().active:
    print(snapshot_estimate(workload, options, log_dir), file=sys.stderr)
  trial = trial_lib.Trial(workload, submission, hparams, rng_seed, data_dir, log_dir, options)
  trial.check_same_run()
  trial.mesh = options.mesh or sharding.make_mesh()
  try:
    # Under the mesh: averaging transforms shard their buffers over its data axis.
    with jax.set_mesh(trial.mesh):
      return _train_loop(trial)
  except Exception as e:
    # The logs written so far stay valid; status.json says what went wrong.
    trial.write_status("failed", f"{type(e).__name__}: {e}")
    raise
  finally:
    trial.close()  # the last checkpoint write


def _train_loop(trial: trial_lib.Trial) -> TrialResult:
  """The loop of `train_once` (see there)."""
  workload, submission, hparams = trial.workload, trial.submission, trial.hparams
  options, data_dir, log_dir = trial.options, trial.data_dir, trial.log_dir
  mesh = trial.mesh
  eval_stats = batch_norm.EvalStatistics.from_hparams(workload, hparams)
  data_rng, opt_rng, model_rng, rng = jax.random.split(jax.random.key(trial.rng_seed), 4)
  params, model_state = workload.init_model_fn(model_rng)
  params = sharding.place(params, mesh, workload.param_partition_specs())
  model_state = sharding.replicate(model_state, mesh)
  # The optimizer state keeps the shardings it was made with (averaging buffers
  # split over the data axis); anything else is replicated.
  optimizer_state = sharding.place_state(
      submission.init_optimizer_state(workload, params, model_state, hparams, opt_rng),
      mesh, params,
  )
  restored = trial.restore(
      {"params": params, "model_state": model_state, "optimizer_state": optimizer_state}
  )
  if restored is not None:
    params, model_state = restored["params"], restored["model_state"]
    optimizer_state = restored["optimizer_state"]
  sweep = _start_sweep(trial, params)
  trial.write_start_files()
  if trial.global_step == 0:
    trial.snapshot(params, model_state)  # step 0: where EMA (and post-hoc EMA) starts
  # Each process reads its own part of the global batch. A resumed run
  # continues from the stream's saved state (O(1)), or replays what it took.
  resume_from = trial.input_state if trial.global_step else None
  host_batches = workload.train_batches(
      data_rng, data_dir, trial.batch_size // jax.process_count(),
      shard_index=jax.process_index(), num_shards=jax.process_count(), start=resume_from,
  )
  if resume_from is None:
    for _ in range(trial.batches_taken):
      next(host_batches)
  # Batches are split over the devices; everything else is replicated.
  counter = trial_lib.CountingIterator(
      sharding.sharded_iterator(host_batches, mesh, workload.batch_pad_values),
      source=host_batches)
  input_queue = counter
  jax.block_until_ready((params, optimizer_state))

  # Wall clock of the whole trial, earlier (preempted) sessions included.
  start = _now() - trial.duration_before
  last_step_end = _now()
  last_eval_end = -math.inf  # AlgoPerf evaluates right after the first step
  done = False
  status, message = "completed", ""
  latest_metric = None
  metric_key = f"validation/{workload.target_metric_name}"
  batch = None
  while not done:
    step_rng = jax.random.fold_in(rng, trial.global_step)
    select_rng, update_rng, prep_rng, eval_rng = jax.random.split(step_rng, 4)
    try:
      batch = submission.data_selection(
          workload, input_queue, optimizer_state, params, model_state, hparams,
          trial.global_step, select_rng,
      )
      optimizer_state, params, model_state = submission.update_params(
          workload, params, workload.model_params_types, model_state, hparams,
          batch, workload.loss_type, optimizer_state, trial.eval_results,
          trial.global_step, update_rng,
      )
      # The async-correct clock: wait for the device before reading the time.
      jax.block_until_ready((optimizer_state, params, model_state))
    except spec.TrainingCompleteError:
      done = True
    except spec.DivergedError as e:
      status, message, done = "diverged", str(e), True
    else:
      trial.global_step += 1
      if sweep is not None:  # untimed, like evaluation
        trial.logging_time += sweep.record(trial.global_step, params)
    step_end = _now()
    trial.submission_time += step_end - last_step_end
    if options.max_global_steps and trial.global_step >= options.max_global_steps:
      done = True
    if trial.step_budget is not None and trial.global_step >= trial.step_budget:
      done = True
    if trial.submission_time >= trial.budget:
      done = True
    if (trial.snapshots is not None and status != "diverged"
        and trial.snapshots.policy.saves_at(trial.global_step)):
      trial.snapshot(params, model_state)
    if trial.eval_every_steps:
      eval_due = trial.global_step % trial.eval_every_steps == 0
    else:
      eval_due = step_end - last_eval_end >= workload.eval_period_time_sec
    if (eval_due or done) and status != "diverged":
      del batch
      batch = None
      prep_start = _now()
      prepared = submission.prepare_for_eval(
          workload, params, workload.model_params_types, model_state, hparams,
          workload.loss_type, optimizer_state, trial.eval_results,
          trial.global_step, prep_rng,
      )
      (optimizer_state, params, model_state, eval_params, eval_state,
       averaged) = _unpack_prepared(prepared, params, model_state)
      if averaged and eval_state is model_state and eval_stats.applies(model_state):
        # Statistics of the averaged weights (bn_policy=recompute), timed.
        eval_state = eval_stats.state_for(
            eval_params, model_state, rng_seed=trial.rng_seed, step=trial.global_step,
            data_dir=data_dir, batch_size=trial.batch_size, mesh=mesh)
      jax.block_until_ready((optimizer_state, params, eval_params, eval_state))
      trial.submission_time += _now() - prep_start
      row = trial.evaluate(
          params, model_state, eval_params, eval_state, averaged, eval_rng, start
      )
      latest_metric = row.get(metric_key)
      if sweep is not None:
        trial.eval_time += sweep.evaluate(
            trial.global_step, trial.submission_time, params, model_state,
            lambda p, s: eval_stats.state_for(
                p, s, rng_seed=trial.rng_seed, step=trial.global_step,
                data_dir=data_dir, batch_size=trial.batch_size, mesh=mesh),
            eval_rng, data_dir, row, trial.preemption_count)
      if trial.snapshots is not None:
        trial.snapshot(params, model_state)  # eval steps: model state for "latest"
        trial.prune_snapshots()
      trial.batches_taken += counter.taken
      counter.taken = 0
      save_start = _now()
      trial.save({"params": params, "model_state": model_state,
                  "optimizer_state": optimizer_state}, start, counter.source)
      trial.logging_time += _now() - save_start
      last_eval_end = _now()
      if not _finite(row):
        status, message, done = "diverged", f"non-finite eval loss at step {trial.global_step}", True
      elif options.stop_at_target and trial.first_target is not None:
        done = True
    if options.progress:
      options.progress(Progress(
          trial.global_step, trial.submission_time, trial.budget, latest_metric,
          workload.target_metric_name,
      ))
    last_step_end = _now()

  if status == "diverged":
    # One row marks the divergence, so scorers count the trial as missed.
    trial.logger.append(trial.time_row(_now(), start) | {"diverged": 1})
  trial.write_status(status, message)
  if sweep is not None:
    sweep.finish(status, message)
  first = trial.first_target
  return TrialResult(
      log_dir=log_dir,
      status=status,
      global_step=trial.global_step,
      accumulated_submission_time=trial.submission_time,
      reached_target=first is not None,
      steps_to_target=first[0] if first else None,
      time_to_target=first[1] if first else None,
      eval_rows=list(trial.logger.rows),
      message=message,
  )
