"""Every module in submissions/ (and the new-submission template) trains.

New files in submissions/ are picked up automatically: each is loaded, trained
on the toy workload until it learns, and run for a few steps on OGBG-small.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from algoperf_avg import registry
from algoperf_avg.training import runner
from tests.toy import ToyWorkload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBMISSIONS = registry.submission_names()


def test_the_baselines_are_registered():
  assert {"nadamw", "nadamw_ema"} <= set(SUBMISSIONS)


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_submission_learns_the_toy_task(name):
  workload = ToyWorkload(validation_target=0.85)
  sub = registry.load_submission(name)
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, None, None,
                             runner.RunOptions(max_global_steps=150, eval_every_steps=25))
  assert result.status == "completed"
  assert result.reached_target, result.eval_rows[-1]


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_submission_runs_on_ogbg_small(name):
  from algoperf_avg import registry as reg

  workload = reg.get_workload("ogbg", "small")
  sub = registry.load_submission(name)
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, None, None,
                             runner.RunOptions(max_global_steps=3))
  assert result.global_step == 3 and result.status == "completed"
  assert math.isfinite(result.eval_rows[-1]["validation/loss"])


def test_new_submission_template_runs_as_is(tmp_path):
  path = tmp_path / "my_opt.py"
  env = dict(os.environ, PYTHONPATH=ROOT)
  made = subprocess.run(
      [sys.executable, "-m", "algoperf_avg.cli", "new-submission", "my_opt",
       f"--out={path}"], capture_output=True, text=True, env=env, timeout=120)
  assert made.returncode == 0, made.stderr
  ran = subprocess.run(
      [sys.executable, "-m", "algoperf_avg.cli", "run", "--workload=ogbg",
       "--size=small", f"--submission={path}", "--max_global_steps=5",
       f"--experiment_dir={tmp_path / 'exp'}"],
      capture_output=True, text=True, env=env, timeout=300)
  assert ran.returncode == 0, ran.stderr[-2000:]
  assert "my_opt" in ran.stdout
  csv = tmp_path / "exp" / "study_0" / "ogbg_small_jax" / "trial_1" / "eval_measurements.csv"
  assert csv.exists()
