"""AlgoPerf's training rules, each on the toy workload with a small fake submission.

The rules of AlgoPerf's ``submission_runner.train_once`` that the runner keeps:
when training stops, what a submission is given (hyperparameters,
``train_state``, ``eval_results``), how steps and the eval period are counted,
the optional submission functions, and a resumed trial's ``hparams.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax.numpy as jnp
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.training import logs, runner
from algoperf_avg.training import trial as trial_lib
from tests.toy import TOY_CONFIG, ToyWorkload

# AlgoPerf adds these to each eval result it hands to the submission.
TIME_KEYS = ("score", "total_duration", "accumulated_submission_time",
             "accumulated_eval_time", "accumulated_logging_time")


class ToyWithTest(ToyWorkload):
  """The toy with a test split (drawn like validation) and a test target."""

  configs = {"small": dataclasses.replace(TOY_CONFIG, num_test_examples=256)}

  def __init__(self, test_target: float, **kwargs):
    super().__init__(**kwargs)
    self._targets = dataclasses.replace(self._targets, test=test_target)

  def eval_batches(self, split, data_dir, batch_size, *, shard_index=0, num_shards=1):
    if split != "test":
      yield from super().eval_batches(split, data_dir, batch_size,
                                      shard_index=shard_index, num_shards=num_shards)
      return
    x, y = self._split("test", self.num_test_examples)
    for first in range(0, len(y), batch_size):
      yield self._example_batch(x, y, range(first, min(first + batch_size, len(y))))


@dataclasses.dataclass
class Record:
  """What the fake submission was given, one entry per update."""

  hparams: list = dataclasses.field(default_factory=list)
  train_states: list = dataclasses.field(default_factory=list)
  eval_results: list = dataclasses.field(default_factory=list)
  steps: list = dataclasses.field(default_factory=list)


def fake_submission(record: Record, *, raise_at: int | None = None,
                    with_train_state: bool = True, clock=None,
                    default_hparams=None) -> spec.Submission:
  """Counts its updates (params unchanged); raises TrainingCompleteError at ``raise_at``."""

  def init_optimizer_state(workload, params, model_state, hyperparameters, rng):
    record.hparams.append(dict(hyperparameters))
    return {"count": jnp.zeros([], jnp.int32)}

  def update(workload, params, types, model_state, hyperparameters, batch, loss_type,
             optimizer_state, eval_results, global_step, rng, **train_state):
    record.hparams.append(dict(hyperparameters))
    record.train_states.append(dict(train_state.get("train_state") or {}))
    record.eval_results.append(list(eval_results))
    record.steps.append(global_step)
    if clock is not None:
      clock.t += 1.0  # one second per update
    if global_step == raise_at:
      raise spec.TrainingCompleteError()
    return {"count": optimizer_state["count"] + 1}, params, model_state

  if with_train_state:
    def update_params(workload, params, types, model_state, hyperparameters, batch,
                      loss_type, optimizer_state, eval_results, global_step, rng,
                      train_state=None):
      return update(workload, params, types, model_state, hyperparameters, batch,
                    loss_type, optimizer_state, eval_results, global_step, rng,
                    train_state=train_state)
  else:
    def update_params(workload, params, types, model_state, hyperparameters, batch,
                      loss_type, optimizer_state, eval_results, global_step, rng):
      return update(workload, params, types, model_state, hyperparameters, batch,
                    loss_type, optimizer_state, eval_results, global_step, rng)

  def prepare_for_eval(workload, params, types, model_state, hyperparameters, loss_type,
                       optimizer_state, eval_results, global_step, rng):
    return optimizer_state, params, model_state

  return spec.Submission(
      name="fake", get_batch_size=lambda _: 32,
      init_optimizer_state=init_optimizer_state, update_params=update_params,
      prepare_for_eval=prepare_for_eval,
      data_selection=lambda workload, queue, *args: next(queue),
      default_hparams=dict(default_hparams or {}))


def train(workload, submission, log_dir=None, hparams=None, ruleset="external",
          **options):
  options = {"save_checkpoints": False, **options}
  return runner.train_once(
      workload, submission,
      runner.resolve_hparams(workload, submission, hparams or {}, ruleset=ruleset),
      0, None, log_dir, runner.RunOptions(**options))


# ----- (a) stop at target: validation AND test --------------------------------------


@pytest.mark.parametrize("validation_target, test_target, stops_early", [
    (0.5, 0.5, True),
    (0.5, 1.01, False),  # validation reached, test never
    (1.01, 0.5, False),  # test reached, validation never
])
def test_stops_at_target_only_once_validation_and_test_are_reached(
    validation_target, test_target, stops_early):
  workload = ToyWithTest(test_target, validation_target=validation_target)
  nadamw = registry.load_submission("nadamw")
  result = train(workload, nadamw, max_global_steps=40, eval_every_steps=5)
  last = result.eval_rows[-1]
  assert "test/accuracy" in last and "validation/accuracy" in last
  reached_both = last["validation/accuracy"] >= 0.5 and last["test/accuracy"] >= 0.5
  assert reached_both  # the easy targets are met early in every case
  assert (result.global_step < 40) == stops_early
  if stops_early:  # at the first eval where both hold
    assert all(r["validation/accuracy"] < 0.5 or r["test/accuracy"] < 0.5
               for r in result.eval_rows[:-1])


# ----- (b) self-tuning: no tuned hyperparameters -----------------------------------


def test_self_tuning_ruleset_gives_the_submission_no_tuned_hyperparameters():
  workload = ToyWorkload(validation_target=1.01)
  record = Record()
  submission = fake_submission(record, default_hparams={"my_knob": 3})
  train(workload, submission, ruleset="self", max_global_steps=2)
  assert record.hparams and all(h == {"my_knob": 3} for h in record.hparams)
  # The external ruleset gives the workload's reference set under the defaults.
  external = runner.resolve_hparams(workload, submission, {"learning_rate": 0.2})
  assert dict(external) == {**workload.reference_hparams, "my_knob": 3,
                            "learning_rate": 0.2}


# ----- (c) train_state ----------------------------------------------------------------


def test_train_state_is_passed_with_the_runs_bookkeeping():
  workload = ToyWorkload(validation_target=0.0)  # reached at the first eval
  record = Record()
  train(workload, fake_submission(record), max_global_steps=4, eval_every_steps=2,
        stop_at_target=False)
  first, *later = record.train_states
  assert set(first) == {
      "is_time_remaining", "validation_goal_reached", "test_goal_reached",
      "training_complete", "accumulated_submission_time", "accumulated_eval_time",
      "accumulated_logging_time", "last_eval_time", "last_step_end_time"}
  assert first["is_time_remaining"] and not first["validation_goal_reached"]
  assert first["last_eval_time"] == -math.inf and first["accumulated_eval_time"] == 0
  # After the eval at step 2: goals (no test split: met) and its clocks.
  step3 = later[1]
  assert step3["validation_goal_reached"] and step3["test_goal_reached"]
  assert step3["accumulated_eval_time"] > 0 and math.isfinite(step3["last_eval_time"])
  times = [s["accumulated_submission_time"] for s in record.train_states]
  assert times == sorted(times) and times[-1] > 0


def test_update_params_without_train_state_is_called_without_it():
  record = Record()
  result = train(ToyWorkload(validation_target=1.01),
                 fake_submission(record, with_train_state=False), max_global_steps=3)
  assert result.status == "completed" and record.steps == [0, 1, 2]
  assert record.train_states == [{}, {}, {}]


# ----- (d) eval_results ------------------------------------------------------------


def test_eval_results_carry_the_time_keys():
  record = Record()
  train(ToyWorkload(validation_target=1.01), fake_submission(record),
        max_global_steps=5, eval_every_steps=2)
  assert [len(e) for e in record.eval_results] == [0, 0, 1, 1, 2]
  steps = [step for step, _ in record.eval_results[-1]]
  assert steps == [2, 4]
  for _, result in record.eval_results[-1]:
    for key in TIME_KEYS:
      assert key in result, key
    assert result["score"] == result["accumulated_submission_time"] > 0
    assert "validation/accuracy" in result and "train/loss" in result


# ----- (e) TrainingCompleteError ------------------------------------------------------


def test_the_step_that_raises_training_complete_counts():
  record = Record()
  result = train(ToyWorkload(validation_target=1.01), fake_submission(record, raise_at=4),
                 max_global_steps=50, eval_every_steps=3)
  assert record.steps == [0, 1, 2, 3, 4]
  assert result.global_step == 5
  assert [r["global_step"] for r in result.eval_rows] == [3, 5]  # a final eval


# ----- (f) the eval period ------------------------------------------------------------


class FakeClock:
  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


def test_eval_period_counts_from_the_end_of_the_previous_eval(monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(trial_lib, "now", clock)
  workload = ToyWorkload(validation_target=1.01, eval_period_sec=3.0)
  eval_model = workload.eval_model

  def slow_eval(*args, **kwargs):
    clock.t += 5.0  # each evaluation takes 5 s
    return eval_model(*args, **kwargs)

  monkeypatch.setattr(workload, "eval_model", slow_eval)
  result = train(workload, fake_submission(Record(), clock=clock), max_global_steps=10)
  # Steps take 1 s: the first eval right after step 1, then 3 steps after each
  # eval's end. Counted from an eval's start, every step would be due.
  assert [r["global_step"] for r in result.eval_rows] == [1, 4, 7, 10]
  assert result.accumulated_submission_time == pytest.approx(10.0)
  assert result.eval_rows[-1]["accumulated_eval_time"] == pytest.approx(20.0)


# ----- (g) optional submission functions ----------------------------------------------

SUBMISSION_WITHOUT_PREPARE = '''
import jax.numpy as jnp

def get_batch_size(workload_name):
  return 32

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
  return {"count": jnp.zeros([], jnp.int32)}

def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results,
                  global_step, rng):
  return ({"count": optimizer_state["count"] + 1}, current_param_container, model_state)

def data_selection(workload, input_queue, optimizer_state, current_param_container,
                   model_state, hyperparameters, global_step, rng):
  return next(input_queue)
'''
EVAL_BATCH_SIZE = '''
def get_eval_batch_size(workload_name):
  return {"toy": 64}[workload_name]
'''


def _write(tmp_path, name, text):
  path = tmp_path / f"{name}.py"
  path.write_text(text)
  return registry.load_submission(str(path))


def _eval_batch_sizes(monkeypatch, workload):
  sizes = []
  eval_model = workload.eval_model

  def recording(global_batch_size, *args, **kwargs):
    sizes.append(global_batch_size)
    return eval_model(global_batch_size, *args, **kwargs)

  monkeypatch.setattr(workload, "eval_model", recording)
  return sizes


def test_a_submission_without_prepare_for_eval_runs(tmp_path, monkeypatch):
  workload = ToyWorkload(validation_target=1.01)
  sizes = _eval_batch_sizes(monkeypatch, workload)
  submission = _write(tmp_path, "no_prepare", SUBMISSION_WITHOUT_PREPARE)
  assert submission.get_eval_batch_size is None
  result = train(workload, submission, max_global_steps=4, eval_every_steps=2)
  assert result.status == "completed"
  assert [r["global_step"] for r in result.eval_rows] == [2, 4]
  assert sizes == [workload.eval_batch_size] * 2  # the workload's own


def test_get_eval_batch_size_is_used_when_defined(tmp_path, monkeypatch):
  workload = ToyWorkload(validation_target=1.01)
  sizes = _eval_batch_sizes(monkeypatch, workload)
  submission = _write(tmp_path, "with_eval_batch_size",
                      SUBMISSION_WITHOUT_PREPARE + EVAL_BATCH_SIZE)
  train(workload, submission, max_global_steps=2, eval_every_steps=2)
  assert sizes == [64] != [workload.eval_batch_size]


# ----- hparams.json of a resumed trial ----------------------------------------------


def test_a_resumed_trial_keeps_its_hparams_json(tmp_path, capsys):
  workload = ToyWorkload(validation_target=1.01)
  log_dir = str(tmp_path / "trial_1")
  first, second = Record(), Record()
  train(workload, fake_submission(first), log_dir, {"learning_rate": 0.1},
        max_global_steps=2, eval_every_steps=2, save_checkpoints=True,
        checkpoint_every_sec=0)
  with open(f"{log_dir}/hparams.json") as f:
    written = json.load(f)
  assert written["learning_rate"] == 0.1
  # Rerun into the same folder with another value: it resumes with the saved one.
  result = train(workload, fake_submission(second), log_dir, {"learning_rate": 0.5},
                 max_global_steps=4, eval_every_steps=2, save_checkpoints=True,
                 checkpoint_every_sec=0)
  assert result.eval_rows[-1]["preemption_count"] == 1 and second.steps == [2, 3]
  assert {h["learning_rate"] for h in second.hparams} == {0.1}
  with open(f"{log_dir}/hparams.json") as f:
    assert json.load(f) == written
  assert "using its hparams.json" in capsys.readouterr().err
  assert logs.read_rows(f"{log_dir}/eval_measurements.csv")[-1]["global_step"] == 4
