"""Our logs have AlgoPerf's columns and files, checked against real AlgoPerf logs."""

from __future__ import annotations

import csv
import io
import os
import tarfile

import pytest

from algoperf_avg import registry
from algoperf_avg.training import logs, runner

ARCHIVE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "..", "shared", "data", "algoperf_leaderboard_logs.tar.xz")
MEMBER = ("algoperf_v06/logs/external_tuning/baseline/study_0/ogbg_jax/trial_1/"
          "eval_measurements.csv")


def _algoperf_header() -> list[str]:
  if not os.path.exists(ARCHIVE):
    pytest.skip(f"AlgoPerf's leaderboard logs are not at {ARCHIVE} (see shared/data)")
  with tarfile.open(ARCHIVE) as archive:
    # Members may be stored as "./algoperf_v06/..." or "algoperf_v06/...".
    member = next(m for m in archive.getmembers() if m.name.lstrip("./") == MEMBER)
    text = archive.extractfile(member).read().decode()
  return next(csv.reader(io.StringIO(text)))


def test_ogbg_eval_columns_are_algoperfs(tmp_path):
  workload = registry.get_workload("ogbg", "small")
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  log_dir = tmp_path / "trial_1"
  runner.train_once(workload, sub, hp, 0, None, str(log_dir),
                    runner.RunOptions(max_global_steps=2, save_checkpoints=False))
  with open(log_dir / "eval_measurements.csv") as f:
    ours = next(csv.reader(f))
  assert sorted(ours) == sorted(_algoperf_header())
  # measurements.csv: every row, and AlgoPerf's final score row last.
  rows = logs.read_rows(str(log_dir / "measurements.csv"))
  assert set(rows[-1]) == {"score", "global_step", "preemption_count"}
  assert rows[-1]["global_step"] == 2 and rows[-2]["global_step"] == 2
