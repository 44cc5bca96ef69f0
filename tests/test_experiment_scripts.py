"""Which finished runs the experiment scripts read back instead of training.

A comparison takes up to hours on a small speech variant:
`scripts/averaging_comparison.py --reuse` picks up an interrupted one by
reading the runs that completed, and only those; `scripts/calibrate_small.py
--reference_runs` reads a comparison's NadamW runs as its cosine runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import types

import pytest

from algoperf_avg import registry
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import logs, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts",
                                                                   name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def script():
  return _load("averaging_comparison")


@pytest.fixture(scope="module")
def calibrate():
  return _load("calibrate_small")


def _write_run(folder, hparams, status, rows):
  os.makedirs(folder, exist_ok=True)
  logs.write_json(os.path.join(folder, "hparams.json"), hparams)
  logs.write_json(os.path.join(folder, "status.json"), {"status": status})
  logs.atomic_write_text(os.path.join(folder, "eval_measurements.csv"), logs.format_csv(rows))


@pytest.fixture
def finished(tmp_path):
  """A completed seed-3 run with one LAWA point in an experiment folder."""
  workload = registry.get_workload("ogbg", "small")
  hp = runner.resolve_hparams(workload, registry.load_submission("nadamw"), {})
  point = GridPoint("lawa", 4, window=20)
  exp = str(tmp_path / "exp")
  base = logs.trial_dir(os.path.join(exp, "seed3", "nadamw"), 0, workload.workload_id, 1)
  averaged = logs.trial_dir(os.path.join(exp, "seed3", f"nadamw_{point.label}"), 0,
                            workload.workload_id, 1)
  _write_run(base, dict(hp), "completed",
             [{"global_step": 100, "validation/mean_average_precision": 0.5}])
  _write_run(averaged, dict(hp) | point.hparams(workload.step_hint), "completed",
             [{"global_step": 100, "validation/mean_average_precision": 0.6}])
  return types.SimpleNamespace(workload=workload, point=point, exp=exp, base=base,
                               averaged=averaged)


def _never_trains(*args, **kwargs):
  raise AssertionError("a completed run was trained again")


def test_reuse_reads_a_completed_run(script, finished, monkeypatch):
  monkeypatch.setattr(runner, "train_once", _never_trains)
  rows, averaged = script.train(finished.workload, 3, [finished.point], finished.exp,
                                reuse=True)
  assert rows == [{"global_step": 100, "validation/mean_average_precision": 0.5}]
  assert averaged[finished.point][0]["validation/mean_average_precision"] == 0.6


@pytest.mark.parametrize("change", ["running", "other_lr", "missing_point", "no_reuse"])
def test_anything_else_is_trained(script, finished, monkeypatch, change):
  calls = []

  def train_once(*args, **kwargs):
    calls.append(args)
    return types.SimpleNamespace(eval_rows=[{"global_step": 100}])

  monkeypatch.setattr(runner, "train_once", train_once)
  points = [finished.point]
  if change == "running":
    logs.write_json(os.path.join(finished.averaged, "status.json"), {"status": "running"})
  elif change == "other_lr":
    path = os.path.join(finished.base, "hparams.json")
    with open(path) as f:
      hp = json.load(f)
    logs.write_json(path, hp | {"learning_rate": hp["learning_rate"] * 2})
  elif change == "missing_point":
    points.append(GridPoint("ema", 8, decay=0.9))
    folder = logs.trial_dir(os.path.join(finished.exp, "seed3", f"nadamw_{points[1].label}"),
                            0, finished.workload.workload_id, 1)
    _write_run(folder, {}, "running", [{"global_step": 100}])
  rows, _ = script.train(finished.workload, 3, points, finished.exp,
                         reuse=change != "no_reuse")
  assert len(calls) == 1 and rows == [{"global_step": 100}]


def test_calibration_reads_the_comparisons_nadamw_runs(calibrate, finished):
  hint = finished.workload.step_hint
  rows = [{"global_step": step, "validation/mean_average_precision": step / 1e4}
          for step in (hint // 2, hint, hint + 100)]
  _write_run(finished.base, json.load(open(os.path.join(finished.base, "hparams.json"))),
             "completed", rows)
  assert calibrate.reference_run(finished.workload, 3, finished.exp) == rows[:2]


@pytest.mark.parametrize("change", ["running", "other_lr", "short", "no_run"])
def test_calibration_refuses_other_runs(calibrate, finished, change, capsys):
  hint = finished.workload.step_hint
  path = os.path.join(finished.base, "hparams.json")
  with open(path) as f:
    hp = json.load(f)
  rows = [{"global_step": hint, "validation/mean_average_precision": 0.5}]
  if change == "running":
    _write_run(finished.base, hp, "running", rows)
  elif change == "other_lr":
    _write_run(finished.base, hp | {"learning_rate": 1.0}, "completed", rows)
  elif change == "short":
    _write_run(finished.base, hp, "completed", [{"global_step": hint // 2}])
  seed = 4 if change == "no_run" else 3
  with pytest.raises(SystemExit) as exit_info:
    calibrate.reference_run(finished.workload, seed, finished.exp)
  assert exit_info.value.code == 2
  assert "--reference_runs" in capsys.readouterr().err


def test_calibration_reads_back_its_completed_constant_run(calibrate, finished, monkeypatch):
  hp = runner.resolve_hparams(finished.workload, registry.load_submission("nadamw"),
                              {"schedule": "constant"})
  folder = os.path.join(finished.exp + "_calibration", "constant")
  rows = [{"global_step": 100, "validation/mean_average_precision": 0.4}]
  _write_run(folder, dict(hp), "completed", rows)
  monkeypatch.setattr(runner, "train_once", _never_trains)
  assert calibrate.train(finished.workload, 0, "constant", folder) == rows
  _write_run(folder, dict(hp) | {"schedule": "cosine"}, "completed", rows)
  with pytest.raises(AssertionError, match="trained again"):
    calibrate.train(finished.workload, 0, "constant", folder)
