"""The fixed-budget runner: timing rules, stopping, logs, divergence."""

from __future__ import annotations

import csv
import json
import os
import time

import jax
import jax.numpy as jnp
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.training import logs, runner
from tests.toy import ToyWorkload


def _algoperf_submission(update, prepare=None, name="custom"):
  """A five-function submission around ``update(params) -> params``."""

  def init_optimizer_state(workload, params, model_state, hparams, rng):
    return {"count": jnp.zeros([], jnp.int32)}

  def update_params(workload, params, types, model_state, hparams, batch, loss_type,
                    opt_state, eval_results, global_step, rng):
    return {"count": opt_state["count"] + 1}, update(params), model_state

  def prepare_for_eval(workload, params, types, model_state, hparams, loss_type,
                       opt_state, eval_results, global_step, rng):
    if prepare:
      prepare()
    return opt_state, params, model_state

  def data_selection(workload, queue, opt_state, params, model_state, hparams, step, rng):
    return next(queue)

  return spec.Submission(
      name=name, get_batch_size=lambda _: 32,
      init_optimizer_state=init_optimizer_state, update_params=update_params,
      prepare_for_eval=prepare_for_eval, data_selection=data_selection,
  )


def _train(workload, submission, tmp_path=None, hparams=None, **options):
  log_dir = str(tmp_path / "trial_1") if tmp_path else None
  options.setdefault("save_checkpoints", False)  # resume has its own tests
  hp = runner.resolve_hparams(workload, submission, hparams)
  return runner.train_once(workload, submission, hp, 0, None, log_dir,
                           runner.RunOptions(**options))


class SlowEvalToy(ToyWorkload):
  """Each split's evaluation takes 100 s on the trial's clock (a virtual offset)."""

  eval_seconds = 100.0
  offset = 0.0

  def finalize_metrics(self, *args, **kwargs):
    SlowEvalToy.offset += self.eval_seconds
    return super().finalize_metrics(*args, **kwargs)


def test_eval_time_is_excluded_from_submission_time(tmp_path, monkeypatch):
  from algoperf_avg.training import trial as trial_lib

  real = trial_lib.now
  monkeypatch.setattr(trial_lib, "now", lambda: real() + SlowEvalToy.offset)
  workload = SlowEvalToy(validation_target=2.0)  # unreachable: no early stop
  result = _train(workload, registry.load_submission("nadamw"), tmp_path,
                  max_global_steps=6, eval_every_steps=1)
  rows = logs.read_rows(str(tmp_path / "trial_1" / "eval_measurements.csv"))
  assert len(rows) == 6
  # Two splits (train, validation) per eval, 100 s each on the trial's clock.
  assert rows[-1]["accumulated_eval_time"] >= 6 * 2 * workload.eval_seconds
  # The submission clock never saw them (the real steps take well under 100 s).
  assert result.accumulated_submission_time < workload.eval_seconds
  assert rows[-1]["total_duration"] >= rows[-1]["accumulated_eval_time"]


def _slow_device_fn(finished):
  """Jitted device work (~0.1 s) that reports, from the device, when it ended."""
  w = jax.random.normal(jax.random.key(0), (384, 384)) / 20.0

  def record(total):
    del total
    finished.append(time.perf_counter())

  @jax.jit
  def slow(params):
    x = jnp.tile(params["kernel"][:1, :1], (384, 384))
    x = jax.lax.fori_loop(0, 200, lambda i, x: jnp.tanh(x @ w), x)
    jax.debug.callback(record, x.sum())  # runs when the device work is done
    return jax.tree.map(lambda p: p + 0.0 * x.sum(), params)

  return slow


def test_clock_waits_for_asynchronous_device_work(tmp_path, monkeypatch):
  """The clock is read after the device finished; no threshold on any duration.

  Each step's device work ends in a host callback stamped with the time it
  ran. The runner keeps one step in flight: the clock closing step k is read
  after step k-1's callback, and before an eval after the last step's one.
  """
  from algoperf_avg.training import trial as trial_lib

  finished, reads = [], []
  add_step = trial_lib.Clocks.add_step

  def recording(self, at):
    reads.append(at)
    add_step(self, at)

  monkeypatch.setattr(trial_lib.Clocks, "add_step", recording)
  workload = ToyWorkload(validation_target=2.0)
  steps = 4
  result = _train(workload, _algoperf_submission(_slow_device_fn(finished)), tmp_path,
                  max_global_steps=steps, eval_every_steps=steps)
  assert result.global_step == steps and len(finished) == steps
  # reads: one per step (after dispatching it), and one before the eval.
  assert len(reads) == steps + 1
  for k in range(1, steps):  # closing step k+1 waited for step k's device work
    assert reads[k] >= finished[k - 1]
  assert reads[-1] >= finished[-1]  # the eval's submission time includes all of it
  rows = logs.read_rows(str(tmp_path / "trial_1" / "eval_measurements.csv"))
  assert rows[-1]["score"] == result.accumulated_submission_time


def test_prepare_for_eval_is_timed(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  sub = _algoperf_submission(lambda p: p, prepare=lambda: time.sleep(0.2))
  result = _train(workload, sub, tmp_path, max_global_steps=3, eval_every_steps=1)
  assert result.accumulated_submission_time >= 3 * 0.2


def test_stops_when_validation_target_reached(tmp_path):
  workload = ToyWorkload(validation_target=0.8)
  result = _train(workload, registry.load_submission("nadamw"), tmp_path,
                  max_global_steps=300, eval_every_steps=5)
  assert result.reached_target and result.status == "completed"
  assert result.global_step < 300
  rows = result.eval_rows
  first = next(r for r in rows if r["validation/accuracy"] > 0.8)
  assert result.steps_to_target == first["global_step"] == rows[-1]["global_step"]
  assert result.time_to_target == pytest.approx(first["score"])


def test_keeps_training_past_target_without_flag():
  workload = ToyWorkload(validation_target=0.8)
  result = _train(workload, registry.load_submission("nadamw"),
                  max_global_steps=60, eval_every_steps=20, stop_at_target=False)
  assert result.global_step == 60 and result.reached_target
  assert [r["global_step"] for r in result.eval_rows] == [20, 40, 60]


def _virtual_clock(monkeypatch, step_seconds):
  """The trial's clock as a counter that each training step advances.

  Returns ``tick``, which a submission's update calls once per step.
  """
  from algoperf_avg.training import trial as trial_lib

  clock = {"t": 0.0}
  monkeypatch.setattr(trial_lib, "now", lambda: clock["t"])

  def tick(params):
    clock["t"] += step_seconds
    return params

  return tick


@pytest.mark.parametrize("multiplier", [1.0, 1.5])
def test_budget_is_checked_at_evals_as_algoperf(tmp_path, monkeypatch, multiplier):
  """AlgoPerf checks the budget when an eval is due: the run ends at the first
  due eval whose submission time is past it, without evaluating
  (``--ruleset=self``: 1.5x the budget)."""
  tick = _virtual_clock(monkeypatch, step_seconds=0.1)
  workload = ToyWorkload(validation_target=2.0, max_runtime_sec=1.0,
                         eval_period_sec=0.35)
  result = _train(workload, _algoperf_submission(tick), tmp_path,
                  budget_multiplier=multiplier)
  budget = multiplier * workload.max_allowed_runtime_sec
  scores = [r["score"] for r in result.eval_rows]
  assert result.status == "completed" and not result.reached_target
  spent = result.accumulated_submission_time
  assert scores[-1] < budget <= spent  # the eval past the budget did not run ...
  assert spent - scores[-1] == pytest.approx(0.4)  # ... and came one period later
  # Evals come one period apart on the clock (steps are 0.1 s, the period 0.35 s).
  steps = [r["global_step"] for r in result.eval_rows]
  assert steps[0] == 1 and all(b - a == 4 for a, b in zip(steps[1:], steps[2:], strict=False))


def test_log_layout_and_columns(tmp_path):
  exp = tmp_path / "exp"
  trial = logs.trial_dir(str(exp), 0, "toy_small", 1)
  assert trial == str(exp / "study_0" / "toy_small_jax" / "trial_1")
  workload = ToyWorkload(validation_target=2.0)
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {"learning_rate": 0.02})
  runner.train_once(workload, sub, hp, 3, None, trial,
                    runner.RunOptions(max_global_steps=4, eval_every_steps=2,
                                      flags={"workload": "toy"}))
  files = sorted(os.listdir(trial))
  assert files == ["checkpoints", "eval_measurements.csv", "flags_0.json", "hparams.json",
                   "input_state", "measurements.csv", "meta_data_0.json", "status.json"]
  with open(os.path.join(trial, "eval_measurements.csv")) as f:
    header = next(csv.reader(f))
  assert header[:7] == ["global_step", "preemption_count", "score",
                        "accumulated_submission_time", "accumulated_eval_time",
                        "accumulated_logging_time", "total_duration"]
  assert {"train/loss", "train/accuracy", "validation/loss",
          "validation/accuracy"} <= set(header)
  hparams = json.load(open(os.path.join(trial, "hparams.json")))
  assert hparams["learning_rate"] == 0.02 and hparams["beta2"] == 0.99
  meta = json.load(open(os.path.join(trial, "meta_data_0.json")))
  assert meta["workload_id"] == "toy_small" and meta["rng_seed"] == 3
  assert json.load(open(os.path.join(trial, "status.json")))["status"] == "completed"
  assert not [f for f in os.listdir(trial) if f.endswith(".tmp")]


def test_divergence_is_recorded_not_raised(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  sub = registry.load_submission("nadamw")
  result = _train(workload, sub, tmp_path, hparams={"learning_rate": float("nan")},
                  max_global_steps=50, eval_every_steps=10)
  assert result.status == "diverged" and not result.reached_target
  # Step 1 makes the weights NaN and step 2's loss is NaN; it is read while
  # step 3 is dispatched (one step in flight), which ends the trial.
  assert result.global_step == 2
  rows = logs.read_rows(str(tmp_path / "trial_1" / "eval_measurements.csv"))
  assert rows[-1]["diverged"] == 1
  status = json.load(open(tmp_path / "trial_1" / "status.json"))
  assert status["status"] == "diverged" and "nan" in status["message"].lower()


def test_averaged_eval_logs_online_metrics_too(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  path = tmp_path / "zero_eval.py"
  path.write_text(
      "import jax, jax.numpy as jnp\n"
      "from submissions import nadamw\n"
      "make_optimizer = nadamw.make_optimizer\n"
      "def eval_params(opt_state, params):\n"
      "  return jax.tree.map(jnp.zeros_like, params)\n"
  )
  result = _train(workload, registry.load_submission(str(path)),
                  max_global_steps=30, eval_every_steps=30)
  row = result.eval_rows[-1]
  # Zero weights predict class 0 for everything; the online weights learned.
  assert row["validation/accuracy"] < 0.5
  assert row["validation_online/accuracy"] > 0.8
