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
the loss diverges, or, with ``stop_at_target``, once both the validation and
the test targets have been reached (as AlgoPerf; a workload without a test
split needs only the validation target). An evaluation runs whenever
``eval_period_time_sec`` of wall time has passed since the end of the last one
(or every ``eval_every_steps`` steps: the small sizes' default, for runs that
give the same numbers on any machine), and once more at the end.
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
from algoperf_avg.training import logs, loop, sharding
from algoperf_avg.training import trial as trial_lib

_now = trial_lib.now
PARAMS_DIR = trial_lib.PARAMS_DIR
global_batch_size = trial_lib.global_batch_size


@dataclasses.dataclass
class RunOptions:
  """Knobs of one trial that are not hyperparameters."""

  max_global_steps: int | None = None
  eval_every_steps: int | None = None  # None: AlgoPerf's time-based cadence
  stop_at_target: bool = True  # stop once validation AND test targets are reached
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
  step_budget: int | None = None  # small sizes: the budget is in steps


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
    *,
    ruleset: str = "external",
) -> spec.Hyperparameters:
  """Trial values over the submission's defaults over the workload's reference.

  Under the self-tuning ruleset the workload's tuned reference set is not
  given (AlgoPerf passes no hyperparameters): only the submission's defaults.
  """
  merged = dict(workload.reference_hparams) if ruleset == "external" else {}
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
  trial.reload_hparams()
  trial.mesh = options.mesh or sharding.make_mesh()
  workload.metrics_logger = trial.logger  # as AlgoPerf, for submissions that log
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
  """Set up, run `loop.TrainLoop`, and report (see `train_once`)."""
  workload, mesh = trial.workload, trial.mesh
  data_rng, opt_rng, model_rng, rng = jax.random.split(jax.random.key(trial.rng_seed), 4)
  state = loop.place_initial_state(trial, model_rng, opt_rng)
  restored = trial.restore(state)
  state = restored if restored is not None else state
  sweep = _start_sweep(trial, state["params"])
  trial.write_start_files()
  if trial.global_step == 0:
    trial.snapshot(state["params"], state["model_state"])  # step 0: where EMA starts
  # Each process reads its own part of the global batch. A resumed run
  # continues from the stream's saved state (O(1)), or replays what it took.
  resume_from = trial.input_state if trial.global_step else None
  host_batches = workload.train_batches(
      data_rng, trial.data_dir, trial.batch_size // jax.process_count(),
      shard_index=jax.process_index(), num_shards=jax.process_count(), start=resume_from,
  )
  if resume_from is None:
    for _ in range(trial.batches_taken):
      next(host_batches)
  # Batches are split over the devices; everything else keeps its placement.
  queue = trial_lib.CountingIterator(
      sharding.sharded_iterator(host_batches, mesh, workload.batch_pad_values),
      source=host_batches)
  jax.block_until_ready(state)
  trial.clocks.step_start = trial_lib.now()
  run = loop.TrainLoop(trial, state, queue, sweep, rng)
  run.run()
  if run.status == "diverged":
    # One row marks the divergence, so scorers count the trial as missed.
    trial.logger.append(trial.time_row(_now()) | {"diverged": 1})
  trial.logger.finish(trial.clocks.submission, trial.global_step, trial.preemption_count)
  trial.write_status(run.status, run.message)
  if sweep is not None:
    sweep.finish(run.status, run.message)
  first = trial.first_target
  return TrialResult(
      log_dir=trial.log_dir,
      status=run.status,
      global_step=trial.global_step,
      accumulated_submission_time=trial.clocks.submission,
      reached_target=first is not None,
      steps_to_target=first[0] if first else None,
      time_to_target=first[1] if first else None,
      eval_rows=list(trial.logger.rows),
      message=run.message,
  )
