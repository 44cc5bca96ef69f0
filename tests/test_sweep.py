"""In-run sweeps of averages equal the online transforms, from one training run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.averaging import sweep
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import logs, runner
from tests.test_snapshots import EVAL_EVERY, STEPS, _assert_equal_rows, _train
from tests.toy import ToyBNWorkload, ToyWorkload

POINTS = (GridPoint("lawa", 3, window=2, start_step=10), GridPoint("ema", 2, decay=0.7),
          GridPoint("swa", 2, start_step=10))


def test_sweep_folders_equal_online_runs(tmp_path):
  workload = ToyWorkload(validation_target=2.0)  # step_hint 200: 0.05 -> step 10
  run = _train(tmp_path, workload, "nadamw", {}, sweep_averages=POINTS,
               sweep_dir=str(tmp_path / "sweep"))
  online = [
      _train(tmp_path, workload, "nadamw_lawa",
             {"lawa_every": 3, "lawa_window": 2, "lawa_start_fraction": 0.05}),
      _train(tmp_path, workload, "nadamw_ema", {"ema_every": 2, "ema_decay": 0.7}),
      _train(tmp_path, workload, "nadamw_swa", {"swa_start_fraction": 0.05, "swa_every": 2}),
  ]
  for point, online_dir in zip(POINTS, online, strict=True):
    folder = logs.trial_dir(str(tmp_path / "sweep" / f"nadamw_{point.label}"), 0,
                            workload.workload_id, 1)
    _assert_equal_rows(folder, online_dir)
    rows = sweep.sweep_rows(folder)
    run_rows = logs.read_rows(os.path.join(run, "eval_measurements.csv"))
    # The run's own submission time and online metrics, row by row.
    assert [r["score"] for r in rows] == [r["score"] for r in run_rows]
    assert [r["validation_online/loss"] for r in rows] == [
        r["validation/loss"] for r in run_rows]


def test_sweep_with_recomputed_batch_norm_equals_online(tmp_path):
  workload = ToyBNWorkload(validation_target=2.0)
  hparams = {"bn_policy": "recompute", "bn_batches": 2}
  _train(tmp_path, workload, "nadamw", hparams, sweep_averages=(GridPoint("ema", 2, decay=0.8),),
         sweep_dir=str(tmp_path / "sweep"))
  online = _train(tmp_path, workload, "nadamw_ema", dict(hparams, ema_every=2, ema_decay=0.8))
  folder = logs.trial_dir(str(tmp_path / "sweep" / "nadamw_ema_every2_decay0.8"), 0,
                          workload.workload_id, 1)
  _assert_equal_rows(folder, online, rtol=1e-5)


def test_a_sweep_cannot_resume(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  log_dir = str(tmp_path / "exp" / "study_0" / "toy_small_jax" / "trial_1")
  options = dict(eval_every_steps=EVAL_EVERY, sweep_averages=POINTS[:1])
  runner.train_once(workload, sub, hp, 0, None, log_dir,
                    runner.RunOptions(max_global_steps=6, **options))
  with pytest.raises(spec.UsageError, match="cannot resume"):
    runner.train_once(workload, sub, hp, 0, None, log_dir,
                      runner.RunOptions(max_global_steps=STEPS, **options))
  assert np.isfinite(sweep.sweep_rows(logs.trial_dir(
      str(tmp_path / "nadamw_lawa_every3_window2_start10"), 0, "toy_small", 1))[0]["score"])
