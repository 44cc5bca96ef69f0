"""Tuning studies through the CLI: layout, reruns, and faults that spare the study."""

from __future__ import annotations

import json
import os

from algoperf_avg.training import logs
from tests.test_cli import assert_usage_error, cli

FAILING = """
from submissions import nadamw
HPARAMS = nadamw.HPARAMS
_calls = {"n": 0}

def make_optimizer(hparams, workload, step_hint):
  tx = nadamw.make_optimizer(hparams, workload, step_hint)
  if hparams["learning_rate"] > 0.05:  # the second trial's point
    def update(updates, state, params=None):
      raise RuntimeError("simulated crash inside the submission")
    return tx._replace(update=update)
  return tx
"""


def test_tune_layout_rerun_and_a_failing_trial(tmp_path):
  space = tmp_path / "space.json"
  space.write_text(json.dumps([{"learning_rate": 0.006}, {"learning_rate": 0.1}]))
  sub = tmp_path / "flaky.py"
  sub.write_text(FAILING)
  exp = tmp_path / "exp"
  args = ("tune", "--workload=ogbg", "--size=small", f"--submission={sub}",
          f"--tuning_search_space={space}", "--num_studies=2", "--num_tuning_trials=2",
          "--max_global_steps=2", f"--experiment_dir={exp}")
  first = cli(*args)
  # The crashing trial is named, the others ran, and the exit code says so.
  assert first.returncode == 1, first.stderr[-2000:]
  assert "study 0 trial 2/2 failed" in first.stderr
  assert "simulated crash" in first.stderr
  for study in (0, 1):
    ok = logs.trial_dir(str(exp), study, "ogbg_small", 1)
    bad = logs.trial_dir(str(exp), study, "ogbg_small", 2)
    assert json.load(open(os.path.join(ok, "status.json")))["status"] == "completed"
    assert logs.read_rows(os.path.join(ok, "eval_measurements.csv"))[-1]["global_step"] == 2
    status = json.load(open(os.path.join(bad, "status.json")))
    assert status["status"] == "failed" and "simulated crash" in status["message"]
    assert json.load(open(os.path.join(bad, "hparams.json")))["learning_rate"] == 0.1

  again = cli(*args)
  # Finished trials are skipped on rerun; the failed ones are tried again.
  assert again.stderr.count("already completed, skipped") == 2
  assert again.stderr.count("failed") >= 2


def test_self_tuning_takes_no_search_space(tmp_path):
  space = tmp_path / "space.json"
  space.write_text('{"learning_rate": {"feasible_points": [0.01]}}')
  result = cli("tune", "--ruleset=self", f"--tuning_search_space={space}",
               f"--experiment_dir={tmp_path / 'exp'}")
  assert_usage_error(result, "self-tuning")
  assert not (tmp_path / "exp").exists()


def test_list_prints_algoperf_parameter_count():
  result = cli("list")
  assert result.returncode == 0, result.stderr
  full = next(line for line in result.stdout.splitlines()
              if line.startswith("ogbg") and " full " in line)
  assert "3,554,176" in full and "0.28098" in full and "52,000" in full
