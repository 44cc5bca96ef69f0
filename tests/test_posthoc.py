"""Post-hoc averaging: a sweep over saved weights equals the online transforms."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.averaging import posthoc
from algoperf_avg.training import checkpoints, logs, runner
from tests.toy import ToyWorkload

STEPS, EVAL_EVERY, SAVE_EVERY = 24, 6, 2
LAWA = {"lawa_every": 4, "lawa_window": 3}  # evals at 6, 12: 1 and 3 records
EMA = {"ema_every": 2, "ema_decay": 0.8}
# Submissions that evaluate the average explicitly, whatever OptaxSubmission's
# default for modules without ``eval_params``.
_WRAPPER = (
    "from algoperf_avg.averaging import averaged_params as eval_params\n"
    "from submissions.{0} import DEFAULT_HPARAMS, HPARAMS, make_optimizer\n"
)


def _workload():
  return ToyWorkload(validation_target=2.0)  # unreachable: no early stop


def _train(tmp, name, hparams, save_params_every=None):
  if name == "nadamw":
    submission = registry.load_submission(name)
  else:
    path = tmp / f"{name}.py"
    path.write_text(_WRAPPER.format(name))
    submission = registry.load_submission(str(path))
  workload = _workload()
  log_dir = logs.trial_dir(str(tmp / name), 0, workload.workload_id, 1)
  runner.train_once(
      workload, submission, runner.resolve_hparams(workload, submission, hparams), 7,
      None, log_dir,
      runner.RunOptions(max_global_steps=STEPS, eval_every_steps=EVAL_EVERY,
                        save_checkpoints=False, save_params_every=save_params_every))
  return log_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A plain run keeping its weights, and the same run with online LAWA / EMA."""
  tmp = tmp_path_factory.mktemp("runs")
  return {
      "plain": _train(tmp, "nadamw", {}, save_params_every=SAVE_EVERY),
      "lawa": _train(tmp, "nadamw_lawa", LAWA),
      "ema": _train(tmp, "nadamw_ema", EMA),
  }


def _rows(log_dir):
  return {r["global_step"]: r for r in logs.read_rows(
      os.path.join(log_dir, "eval_measurements.csv"))}


def _json(log_dir, name):
  with open(os.path.join(log_dir, name)) as f:
    return json.load(f)


def test_sweep_equals_online_averaging(runs, tmp_path):
  lawa_dir, ema_dir = posthoc.sweep(
      _workload(), runs["plain"], str(tmp_path),
      lawa_grid=[(LAWA["lawa_every"], LAWA["lawa_window"])],
      ema_grid=[(EMA["ema_every"], EMA["ema_decay"])])
  plain = _rows(runs["plain"])
  worst = 0.0
  for log_dir, online_dir in ((lawa_dir, runs["lawa"]), (ema_dir, runs["ema"])):
    posthoc_rows, online_rows = _rows(log_dir), _rows(online_dir)
    assert sorted(posthoc_rows) == sorted(online_rows) == [6, 12, 18, 24]
    for step, row in posthoc_rows.items():
      for metric in ("loss", "accuracy"):
        key, online_key = f"validation/{metric}", f"validation_online/{metric}"
        np.testing.assert_allclose(row[key], online_rows[step][key], rtol=1e-5)
        worst = max(worst, abs(row[key] - online_rows[step][key]))
        # The average never fed back: all three runs trained the same weights.
        np.testing.assert_allclose(online_rows[step][online_key], plain[step][key],
                                   rtol=1e-5)
        assert row[online_key] == plain[step][key]
      # Not vacuous: the averages evaluate differently from the training weights.
      assert row["validation/loss"] != pytest.approx(plain[step]["validation/loss"])
  print(f"max |post-hoc - online| over validation metrics: {worst:.3g}")


def test_output_layout_columns_and_hparams(runs, tmp_path):
  out = tmp_path / "out"
  written = posthoc.sweep(_workload(), runs["plain"], str(out),
                          lawa_grid=[(4, 3)], ema_grid=[(2, 0.999)])
  assert written == [
      str(out / "nadamw_lawa_every4_window3" / "study_0" / "toy_small_jax" / "trial_1"),
      str(out / "nadamw_ema_every2_decay0.999" / "study_0" / "toy_small_jax" / "trial_1"),
  ]
  original_hparams = _json(runs["plain"], "hparams.json")
  assert _json(written[0], "hparams.json") == original_hparams | {
      "averaging": "lawa", "lawa_every": 4, "lawa_window": 3, "lawa_start_fraction": 0.0}
  assert _json(written[1], "hparams.json") == original_hparams | {
      "averaging": "ema", "ema_every": 2, "ema_decay": 0.999, "ema_start_fraction": 0.0}
  for log_dir in written:
    assert sorted(os.listdir(log_dir)) == [
        "eval_measurements.csv", "hparams.json", "measurements.csv", "meta_data_0.json",
        "status.json"]
    meta = _json(log_dir, "meta_data_0.json")
    assert meta["posthoc_of"] == os.path.abspath(runs["plain"])
    assert meta["workload_id"] == "toy_small" and meta["rng_seed"] == 7
    assert _json(log_dir, "status.json")["status"] == "completed"
    with open(os.path.join(log_dir, "eval_measurements.csv")) as f:
      header = f.readline().strip().split(",")
    assert header == list(logs.TIME_COLUMNS) + [
        "validation/accuracy", "validation/loss",
        "validation_online/accuracy", "validation_online/loss",
        "validation_online/num_examples"]
    for step, row in _rows(log_dir).items():
      saved = checkpoints.restore_checkpoint(
          os.path.join(runs["plain"], runner.PARAMS_DIR), step,
          {"params": _workload().init_model_fn(jax.random.key(0))[0]})
      assert row["score"] == row["accumulated_submission_time"] == pytest.approx(
          saved.metadata["submission_time"])


class ParamProbe(ToyWorkload):
  """Evaluation reports two weights, so averages can be checked directly."""

  def eval_model(self, global_batch_size, params, model_state, rng, data_dir,
                 splits=("train", "validation", "test"), metrics="all"):
    values = {"loss": float(params["kernel"][0, 0]), "accuracy": float(params["bias"][1])}
    return {f"{s}/{k}": v for s in splits if s != "test" for k, v in values.items()}


def _saved(log_dir):
  """step -> (kernel[0, 0], bias[1]) of every saved step, in float64."""
  template = {"params": ToyWorkload().init_model_fn(jax.random.key(0))[0]}
  params_dir = os.path.join(log_dir, runner.PARAMS_DIR)
  out = {}
  for step in checkpoints.list_steps(params_dir):
    p = checkpoints.restore_checkpoint(params_dir, step, template).state["params"]
    out[step] = np.array([p["kernel"][0, 0], p["bias"][1]], np.float64)
  return out


def _probed(log_dir):
  return {s: (r["validation/loss"], r["validation/accuracy"])
          for s, r in _rows(log_dir).items()}


def test_partial_lawa_window_and_ema_from_step_zero(runs, tmp_path):
  saved = _saved(runs["plain"])
  lawa, late, ema = posthoc.sweep(
      ParamProbe(), runs["plain"], str(tmp_path), lawa_grid=[(4, 3), (8, 2)],
      ema_grid=[(2, 0.5)], eval_steps=[2, 4, 6, 8, 12, 16])
  mean = lambda *steps: np.mean([saved[s] for s in steps], axis=0)  # noqa: E731
  expected_lawa = {2: saved[2], 4: mean(4), 6: mean(4), 8: mean(4, 8),
                   12: mean(4, 8, 12), 16: mean(8, 12, 16)}
  # every=8: nothing recorded before step 8, so the training weights count.
  expected_late = {2: saved[2], 4: saved[4], 6: saved[6], 8: mean(8),
                   12: mean(8), 16: mean(8, 16)}
  average, expected_ema = saved[0], {}
  for step in range(2, 17, 2):
    average = 0.5 * average + 0.5 * saved[step]
    expected_ema[step] = average
  for log_dir, expected in ((lawa, expected_lawa), (late, expected_late),
                            (ema, expected_ema)):
    got = _probed(log_dir)
    assert sorted(got) == [2, 4, 6, 8, 12, 16]
    for step, value in got.items():
      np.testing.assert_allclose(value, expected[step], rtol=1e-6, atol=1e-7)


def test_several_points_in_one_pass(runs, tmp_path, monkeypatch):
  reads = []
  restore = checkpoints.restore_checkpoint

  def counting_restore(directory, step, template):
    reads.append(step)
    return restore(directory, step, template)

  monkeypatch.setattr(checkpoints, "restore_checkpoint", counting_restore)
  grid = dict(lawa_grid=[(2, 2), (4, 3), (8, 2), (2, 10)],
              ema_grid=[(2, 0.5), (4, 0.9), (2, 0.5)])  # a duplicate: one folder
  together = posthoc.sweep(ParamProbe(), runs["plain"], str(tmp_path / "all"), **grid)
  assert len(together) == 6
  # Each saved step read once (step 0 for EMA's start), up to the last eval.
  assert reads == list(range(0, STEPS + 1, SAVE_EVERY))
  monkeypatch.setattr(checkpoints, "restore_checkpoint", restore)
  for i, (every, window) in enumerate(grid["lawa_grid"]):
    [alone] = posthoc.sweep(ParamProbe(), runs["plain"], str(tmp_path / f"l{i}"),
                            lawa_grid=[(every, window)])
    assert _probed(alone) == _probed(together[i])
  [alone] = posthoc.sweep(ParamProbe(), runs["plain"], str(tmp_path / "e"),
                          ema_grid=[(4, 0.9)])
  assert _probed(alone) == _probed(together[5])


def test_step_zero_recreated_from_the_seed(runs, tmp_path):
  copy = tmp_path / "trial_1"
  shutil.copytree(runs["plain"], copy)
  shutil.rmtree(copy / runner.PARAMS_DIR / "0")
  [with_zero] = posthoc.sweep(ParamProbe(), runs["plain"], str(tmp_path / "a"),
                              ema_grid=[(2, 0.9)])
  [recreated] = posthoc.sweep(ParamProbe(), str(copy), str(tmp_path / "b"),
                              ema_grid=[(2, 0.9)])
  assert _probed(recreated) == _probed(with_zero)


@pytest.mark.parametrize("grid, message", [
    (dict(lawa_grid=[(3, 2)]), "lawa_every3_window2 needs the weights of steps [3, 9, 15, 21]"),
    (dict(ema_grid=[(5, 0.9)]), "ema_every5_decay0.9 needs the weights of steps [5, 15]"),
    (dict(lawa_grid=[(0, 2)]), "every must be a positive integer"),
    (dict(lawa_grid=[(2, 0)]), "window must be a positive integer"),
    (dict(lawa_grid=[(2, 1.5)]), "window must be a positive integer"),
    (dict(ema_grid=[(2, 1.5)]), "decay must be a number in [0, 1]"),
    (dict(ema_grid=[(2,)]), "not a pair"),
    (dict(), "nothing to sweep"),
    (dict(lawa_grid=[(2, 2)], eval_steps=[6, 7]), "eval steps [7] have no saved weights"),
    (dict(lawa_grid=[(2, 2)], eval_steps=[26]), "eval steps [26] have no saved weights"),
])
def test_bad_grids_are_usage_errors_and_write_nothing(runs, tmp_path, grid, message):
  out = tmp_path / "out"
  with pytest.raises(spec.UsageError) as raised:
    posthoc.sweep(_workload(), runs["plain"], str(out), **grid)
  assert message in str(raised.value)
  assert not out.exists()


def test_runs_without_complete_saved_weights_are_usage_errors(runs, tmp_path):
  with pytest.raises(spec.UsageError, match="save_params_every"):
    posthoc.sweep(_workload(), runs["lawa"], str(tmp_path), lawa_grid=[(2, 2)])
  copy = tmp_path / "trial_1"
  shutil.copytree(runs["plain"], copy)
  shutil.rmtree(copy / runner.PARAMS_DIR / "8")
  # LAWA(2, 2) at the eval steps 6, 12, ... never averages step 8; (2, 3) does.
  posthoc.sweep(_workload(), str(copy), str(tmp_path / "fine"), lawa_grid=[(2, 2)])
  with pytest.raises(spec.UsageError, match=r"needs the weights of steps \[8\]"):
    posthoc.sweep(_workload(), str(copy), str(tmp_path), lawa_grid=[(2, 3)])
  with pytest.raises(spec.UsageError, match="is this a trial folder"):
    posthoc.sweep(_workload(), str(tmp_path / "nowhere"), str(tmp_path), lawa_grid=[(2, 2)])


def test_posthoc_command_resolves_the_workload(runs, tmp_path, monkeypatch):
  monkeypatch.setitem(registry.WORKLOADS, "toy", "tests.toy:ToyWorkload")
  written = posthoc.posthoc_command(runs["plain"], str(tmp_path), ["4:3", " 8:2"],
                                    ["2:0.9"], None)
  assert [os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(d))))
          for d in written] == ["nadamw_lawa_every4_window3", "nadamw_lawa_every8_window2",
                                "nadamw_ema_every2_decay0.9"]
  assert sorted(_rows(written[0])) == [6, 12, 18, 24]  # the run's eval steps


@pytest.mark.parametrize("lawa, ema, message", [
    (["64"], [], "lawa point '64' is not EVERY:WINDOW[:START] (e.g. 64:20)"),
    (["64:0.5"], [], "lawa point '64:0.5' is not EVERY:WINDOW[:START]"),
    (["a:2"], [], "lawa point 'a:2' is not EVERY:WINDOW[:START]"),
    ([], ["1:x"], "ema point '1:x' is not EVERY:DECAY[:START] (e.g. 8:0.99)"),
    ([], ["1:0.9:2:4"], "ema point '1:0.9:2:4' is not EVERY:DECAY[:START]"),
    ([], ["1:0.9:2"], "ema_every1_decay0.9_start2 needs the weights of steps [3, 5"),
    ([], ["3:0.9"], "ema_every3_decay0.9 needs the weights of steps [3, 9"),
])
def test_posthoc_command_bad_items(runs, tmp_path, monkeypatch, lawa, ema, message):
  monkeypatch.setitem(registry.WORKLOADS, "toy", "tests.toy:ToyWorkload")
  with pytest.raises(spec.UsageError) as raised:
    posthoc.posthoc_command(runs["plain"], str(tmp_path), lawa, ema, None)
  assert message in str(raised.value)
