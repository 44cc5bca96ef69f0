"""Bookkeeping of one trial: clocks, eval rows, log files, checkpoints.

`runner.train_once` owns the training loop; everything a checkpoint must
carry across a preemption lives here, in `Trial`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from typing import Any

from algoperf_avg import spec
from algoperf_avg.averaging import snapshots
from algoperf_avg.training import checkpoints, logs, sharding

now = time.perf_counter
PARAMS_DIR = snapshots.PARAMS_DIR  # <log_dir>/params/<step>: post-hoc snapshots
# Default checkpoint interval: this many times the last save's duration (< 2%).
CHECKPOINT_COST_FACTOR = 49.0
INPUT_DIR = "input_state"  # <log_dir>/input_state/<step>: big input positions (tf.data)


def _per_workload(fn: Any, workload: spec.Workload) -> int | None:
  """``fn(name)`` for the workload id, then its base name (``ogbg_small`` -> ``ogbg``).

  AlgoPerf submissions key their batch sizes by AlgoPerf's workload names;
  a name they do not know (a KeyError, ValueError or None) falls through.
  """
  if fn is None:
    return None
  for name in dict.fromkeys((workload.workload_id, workload.name)):
    try:
      size = fn(name)
    except (KeyError, ValueError):
      continue
    if size:
      return int(size)
  return None


def global_batch_size(workload: spec.Workload, submission: spec.Submission) -> int:
  """The submission's batch size for this workload, or the workload default."""
  return _per_workload(submission.get_batch_size, workload) or workload.default_batch_size


def eval_batch_size(workload: spec.Workload, submission: spec.Submission) -> int:
  """The submission's eval batch size (AlgoPerf's optional API), or the workload's."""
  return (_per_workload(submission.get_eval_batch_size, workload)
          or workload.eval_batch_size)


@dataclasses.dataclass
class Clocks:
  """Every clock of a trial, in one place.

  ``submission`` is AlgoPerf's score: the wall time of the training steps
  (data selection + update, compilation included) and of ``prepare_for_eval``;
  evaluation and logging (checkpoints, snapshots, sweeps) run between
  ``step_start`` resets and are not in it. ``total_duration`` counts from this
  session's start, as AlgoPerf's (it restarts after a preemption).
  """

  submission: float = 0.0
  eval: float = 0.0
  logging: float = 0.0
  session_start: float = dataclasses.field(default_factory=lambda: now())
  step_start: float = dataclasses.field(default_factory=lambda: now())
  step_end: float = dataclasses.field(default_factory=lambda: now())
  last_eval_end: float = -math.inf  # AlgoPerf evaluates right after the first step

  def add_step(self, at: float) -> None:
    """Count the time since ``step_start`` as submission time, up to ``at``."""
    self.submission += at - self.step_start
    self.step_start = self.step_end = at


class CountingIterator:
  """Counts the batches taken, so a resumed run can skip exactly those.

  ``source`` is the workload's own training stream, whose ``checkpoint``
  (when it has one) saves its position with each checkpoint.
  """

  def __init__(self, iterator, source=None):
    self.iterator = iterator
    self.source = source
    self.taken = 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.iterator)
    self.taken += 1
    return batch


class Trial:
  """Clocks, eval history and files of one trial (everything a checkpoint holds)."""

  def __init__(self, workload, submission, hparams, rng_seed, data_dir, log_dir, options):
    self.workload = workload
    self.submission = submission
    self.hparams = hparams
    self.data_dir = data_dir
    self.log_dir = log_dir
    self.options = options
    self.budget = workload.max_allowed_runtime_sec * options.budget_multiplier
    steps = workload.targets.step_budget
    self.step_budget = (None if steps is None
                        else int(round(steps * options.budget_multiplier)))
    self.eval_every_steps = options.eval_every_steps or workload.targets.eval_every_steps
    self.batch_size = global_batch_size(workload, submission)
    self.eval_batch_size = eval_batch_size(workload, submission)
    self.rng_seed = rng_seed
    self.mesh = None  # set by the runner
    self.global_step = 0
    self.preemption_count = 0
    self.batches_taken = 0
    self.input_state = None  # the training stream's position at the checkpoint
    self.clocks = Clocks()
    self.validation_goal_reached = False
    self.test_goal_reached = False
    self.eval_results: list[tuple[int, dict[str, float]]] = []
    self.first_target: tuple[int, float] | None = None
    # Every process checkpoints (orbax coordinates them); only process 0 logs.
    self.writes_logs = bool(log_dir) and sharding.is_logging_process()
    self.logger = logs.MetricsLogger(log_dir if self.writes_logs else None)
    self.checkpoint_dir = (
        os.path.join(log_dir, "checkpoints") if log_dir and options.save_checkpoints
        else None
    )
    policy = options.snapshot_policy()
    # Every process snapshots (orbax coordinates multi-host saves).
    self.snapshots = (snapshots.Store(log_dir, policy) if log_dir and policy.active
                      else None)
    self.snapshot_steps: set[int] = set()
    self.saver = None  # checkpoints.Saver, made at the first save
    self.last_save_end = -float("inf")
    self.last_save_seconds = 0.0

  # ----- files ---------------------------------------------------------------

  def _read_json(self, name: str) -> Any:
    """``name`` in the trial folder, parsed; None when there is no such file."""
    path = os.path.join(self.log_dir or "", name)
    if not self.log_dir or not os.path.exists(path):
      return None
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      raise spec.UsageError(f"cannot read {path}: {e}") from e

  def check_same_run(self) -> None:
    """Refuse to resume into a trial folder of another workload or submission."""
    meta = self._read_json("meta_data_0.json")
    if meta is None:
      return
    mine = {"workload_id": self.workload.workload_id, "submission": self.submission.name}
    theirs = {k: meta.get(k) for k in mine}
    if theirs != mine:
      raise spec.UsageError(
          f"{self.log_dir} holds a run of {theirs}, not {mine}; "
          "use another --experiment_dir"
      )

  def reload_hparams(self) -> None:
    """Train with the folder's ``hparams.json`` when it has one (a resumed trial).

    As AlgoPerf's ``write_hparams``: the hyperparameters a trial started with
    stay its hyperparameters, whatever the rerun's search space or defaults
    say now; the file is never rewritten.
    """
    path = os.path.join(self.log_dir or "", "hparams.json")
    saved = self._read_json("hparams.json")
    if saved is None:
      return
    if not isinstance(saved, dict):
      raise spec.UsageError(f"{path} holds no hyperparameter dict")
    given = logs.json_round_trip(self.hparams.to_dict())
    changed = sorted(k for k in set(saved) | set(given) if saved.get(k) != given.get(k))
    if changed:
      print(f"{self.log_dir}: using its hparams.json, not this run's values "
            f"(they differ in {', '.join(changed)})", file=sys.stderr)
    self.hparams = spec.Hyperparameters(saved)

  def write_start_files(self) -> None:
    if not self.writes_logs:
      return
    p = self.preemption_count
    os.makedirs(self.log_dir, exist_ok=True)
    hparams_path = os.path.join(self.log_dir, "hparams.json")
    if not os.path.exists(hparams_path):  # a resumed trial keeps its own
      logs.write_json(hparams_path, self.hparams.to_dict())
    logs.write_json(
        os.path.join(self.log_dir, f"meta_data_{p}.json"),
        logs.meta_data(self.workload, self.rng_seed, {
            "submission": self.submission.name,
            "submission_source": self.submission.source,
            "global_batch_size": self.batch_size,
            "budget_sec": self.budget,
            "resumed_at_step": self.global_step,
        }),
    )
    logs.write_json(os.path.join(self.log_dir, f"flags_{p}.json"),
                    dict(self.options.flags or {}))
    self.write_status("running")

  def write_status(self, status: str, message: str = "") -> None:
    if self.writes_logs:
      logs.write_json(
          os.path.join(self.log_dir, "status.json"),
          {"status": status, "message": message, "global_step": self.global_step,
           "preemption_count": self.preemption_count},
      )

  # ----- checkpoints -----------------------------------------------------------

  def checkpoint_due(self) -> bool:
    """Whether the checkpoint interval has passed (checked at evaluations).

    The interval is ``checkpoint_every_sec``, or by default 49 times the
    last save's (blocking) duration, so saving costs under 2% of the wall time.
    """
    if not self.checkpoint_dir:
      return False
    interval = self.options.checkpoint_every_sec
    if interval is None:
      interval = CHECKPOINT_COST_FACTOR * self.last_save_seconds
    return now() - self.last_save_end >= interval

  def save(self, state: dict[str, Any], stream: Any = None) -> None:
    if not self.checkpoint_due():
      return
    t0 = now()
    has_input_state = hasattr(stream, "checkpoint")
    if has_input_state:
      # Each process's own stream, written before the checkpoint that points
      # to it: a kill in between leaves an unused file, never a checkpoint
      # without its input state.
      folder = self._input_dir(self.global_step)
      logs.write_json(os.path.join(folder, "state.json"),
                      {"state": stream.checkpoint(folder)})
    if self.saver is None:
      self.saver = checkpoints.Saver(self.checkpoint_dir)
    self.saver.save(self.global_step, state, {
        "has_input_state": has_input_state,
        "global_step": self.global_step,
        "preemption_count": self.preemption_count,
        "batches_taken": self.batches_taken,
        "submission_time": self.clocks.submission,
        "eval_time": self.clocks.eval,
        "logging_time": self.clocks.logging,
        "total_duration": now() - self.clocks.session_start,
        "goals_reached": [self.validation_goal_reached, self.test_goal_reached],
        "eval_results": self.eval_results,
        "eval_rows": self.logger.rows,
        "first_target": self.first_target,
    })
    if has_input_state:
      self._drop_stale_input_states()
    self.last_save_end = now()
    self.last_save_seconds = self.last_save_end - t0

  def close(self) -> None:
    """Wait for the last checkpoint write; drop the input states orbax dropped."""
    if self.saver is not None:
      self.saver.close()
      if os.path.isdir(os.path.join(self.log_dir, INPUT_DIR)):
        self._drop_stale_input_states()

  def _input_dir(self, step: int) -> str:
    import jax

    return os.path.join(self.log_dir, INPUT_DIR, str(step), f"process_{jax.process_index()}")

  def _drop_stale_input_states(self) -> None:
    """Input states of checkpoints that orbax has since deleted."""
    root = os.path.join(self.log_dir, INPUT_DIR)
    # The step being written (asynchronously) is not listed yet: keep it too.
    kept = {str(s) for s in checkpoints.list_steps(self.checkpoint_dir)}
    kept.add(str(self.global_step))
    for name in os.listdir(root):
      if name not in kept:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)

  def snapshot(self, params: Any, model_state: Any) -> None:
    """Keep this step's weights and model state for `posthoc` (untimed, logging time)."""
    if self.snapshots is None or self.global_step in self.snapshot_steps:
      return
    t0 = now()
    # The Store says when all of this step is kept (power EMAs: also at evals).
    if self.snapshots.save(self.global_step, params, model_state, self.clocks.submission):
      self.snapshot_steps.add(self.global_step)
    self.clocks.logging += now() - t0

  def prune_snapshots(self) -> None:
    """Drop the snapshots the post-hoc grid no longer needs (after an eval)."""
    if self.snapshots is not None:
      t0 = now()
      self.snapshots.prune([s for s, _ in self.eval_results], self.global_step)
      self.clocks.logging += now() - t0

  def restore(self, template: dict[str, Any]) -> dict[str, Any] | None:
    """Load the latest checkpoint into this trial; returns its state or None."""
    if not self.checkpoint_dir:
      return None
    restored = checkpoints.restore_latest(self.checkpoint_dir, template)
    if restored is None:
      return None
    meta = restored.metadata
    self.global_step = int(meta["global_step"])
    self.preemption_count = int(meta["preemption_count"]) + 1
    self.batches_taken = int(meta["batches_taken"])
    if meta.get("has_input_state"):
      with open(os.path.join(self._input_dir(self.global_step), "state.json")) as f:
        self.input_state = json.load(f)["state"]
    self.clocks.submission = float(meta["submission_time"])
    self.clocks.eval = float(meta["eval_time"])
    self.clocks.logging = float(meta["logging_time"])
    self.validation_goal_reached, self.test_goal_reached = meta.get(
        "goals_reached", [False, False])
    self.eval_results = [(int(s), dict(m)) for s, m in meta["eval_results"]]
    self.first_target = tuple(meta["first_target"]) if meta["first_target"] else None
    # The checkpoint's rows are the truth: rows logged after it (by the
    # session that was killed) are redone, never duplicated.
    self.logger.rows = [dict(r) for r in meta["eval_rows"]]
    return restored.state

  # ----- evaluation --------------------------------------------------------------

  def evaluate(self, params, model_state, eval_params, eval_state, averaged, rng):
    """Untimed evaluation; returns the logged row.

    The row holds AlgoPerf's columns (its ``<split>/num_examples`` included)
    and, when an average was evaluated, the online weights' target metrics
    as ``validation_online/*``. ``eval_results`` gets the same entries with
    the time keys, as AlgoPerf hands them to submissions.
    """
    t0 = now()
    workload = self.workload
    metrics = workload.eval_model(
        self.eval_batch_size, eval_params, eval_state, rng, self.data_dir
    )
    metrics["validation/num_examples"] = workload.num_validation_examples
    if workload.num_test_examples:
      metrics["test/num_examples"] = workload.num_test_examples
    if averaged and self.options.log_online_metrics:
      online = workload.eval_model(
          self.eval_batch_size, params, model_state, rng, self.data_dir,
          splits=("validation",), metrics="target",
      )
      metrics.update({
          logs.ONLINE_PREFIX + k.split("/", 1)[1]: v for k, v in online.items()
      })
    t1 = now()
    self.clocks.eval += t1 - t0
    self.clocks.last_eval_end = t1  # the eval period counts from here (AlgoPerf)
    row = self.time_row(t1) | metrics
    self.eval_results.append((self.global_step, dict(row)))
    if self.first_target is None and workload.has_reached_validation_target(metrics):
      self.first_target = (self.global_step, self.clocks.submission)
    self.validation_goal_reached |= workload.has_reached_validation_target(metrics)
    self.test_goal_reached |= workload.has_reached_test_target(metrics)
    self.logger.append(row)
    self.clocks.logging += now() - t1
    return row

  def goals_reached(self) -> bool:
    """Both targets reached (once each, any time so far), as AlgoPerf stops."""
    return self.validation_goal_reached and self.test_goal_reached

  def time_remaining(self) -> bool:
    """AlgoPerf's budget decision, taken when an evaluation is due."""
    return self.clocks.submission < self.budget

  def train_state(self) -> dict[str, Any]:
    """AlgoPerf's ``train_state`` (for submissions whose update takes it)."""
    clocks = self.clocks
    return {
        "is_time_remaining": self.time_remaining(),
        "validation_goal_reached": self.validation_goal_reached,
        "test_goal_reached": self.test_goal_reached,
        "training_complete": False,
        "accumulated_submission_time": clocks.submission,
        "accumulated_eval_time": clocks.eval,
        "accumulated_logging_time": clocks.logging,
        "last_eval_time": clocks.last_eval_end,
        "last_step_end_time": clocks.step_end,
    }

  def time_row(self, at: float) -> dict[str, Any]:
    clocks = self.clocks
    return {
        "global_step": self.global_step,
        "preemption_count": self.preemption_count,
        "score": clocks.submission,
        "accumulated_submission_time": clocks.submission,
        "accumulated_eval_time": clocks.eval,
        "accumulated_logging_time": clocks.logging,
        "total_duration": at - clocks.session_start,
    }
