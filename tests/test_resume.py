"""Checkpoint/resume: a SIGKILLed run, restarted, logs what an unbroken run logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from algoperf_avg import registry, spec
from algoperf_avg.training import logs, runner
from tests.toy import ToyWorkload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 160, 10

CHILD = f"""
import sys, time
from algoperf_avg import registry
from algoperf_avg.training import runner
from tests.toy import ToyWorkload

class SlowToy(ToyWorkload):
  def train_batches(self, *args, **kwargs):
    for batch in super().train_batches(*args, **kwargs):
      time.sleep(0.02)  # slow enough to be killed mid-way
      yield batch

workload = SlowToy(validation_target=2.0)
sub = registry.load_submission(sys.argv[2])
hp = runner.resolve_hparams(workload, sub, {{}})
runner.train_once(workload, sub, hp, 0, None, sys.argv[1],
                  runner.RunOptions(max_global_steps={STEPS}, eval_every_steps={EVERY}))
"""

METRICS = ("global_step", "train/loss", "validation/loss", "validation/accuracy")


def start(log_dir, submission):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-c", CHILD, str(log_dir), submission],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def rows_of(log_dir):
  path = os.path.join(log_dir, "eval_measurements.csv")
  return logs.read_rows(path) if os.path.exists(path) else []


# NadamW+EMA: the averaging buffer must survive the restart too.
@pytest.mark.parametrize("submission", ["nadamw_ema"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, submission):
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  child = start(straight, submission)
  assert child.wait(timeout=300) == 0, child.stderr.read()[-2000:]

  child = start(broken, submission)
  deadline = time.time() + 120
  while len(rows_of(broken)) < 5 and time.time() < deadline:
    time.sleep(0.05)
  child.send_signal(signal.SIGKILL)
  child.wait()
  killed_at = len(rows_of(broken))
  assert 5 <= killed_at < STEPS // EVERY, "the kill must land mid-way"

  child = start(broken, submission)
  assert child.wait(timeout=300) == 0, child.stderr.read()[-2000:]

  expected, got = rows_of(straight), rows_of(broken)
  assert [r["global_step"] for r in got] == list(range(EVERY, STEPS + 1, EVERY))
  # Bit-identical metrics: same weights, same data order, same RNG.
  assert [{k: r[k] for k in METRICS} for r in got] == [
      {k: r[k] for k in METRICS} for r in expected]
  assert got[0]["preemption_count"] == 0 and got[-1]["preemption_count"] == 1
  assert os.path.exists(broken / "meta_data_1.json")
  assert os.path.exists(broken / "flags_1.json")
  status = json.load(open(broken / "status.json"))
  assert status["status"] == "completed" and status["preemption_count"] == 1
  # Submission time keeps accumulating across the restart, and never exceeds
  # the wall time of the whole trial.
  scores = [r["score"] for r in got]
  assert scores == sorted(scores)
  assert all(r["score"] <= r["total_duration"] for r in got)


def test_refuses_to_resume_another_submissions_trial(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  log_dir = str(tmp_path / "trial_1")
  for name in ("nadamw", "nadamw_ema"):
    sub = registry.load_submission(name)
    hp = runner.resolve_hparams(workload, sub, {})
    if name == "nadamw":
      runner.train_once(workload, sub, hp, 0, None, log_dir,
                        runner.RunOptions(max_global_steps=2))
    else:
      with pytest.raises(spec.UsageError, match="holds a run of"):
        runner.train_once(workload, sub, hp, 0, None, log_dir,
                          runner.RunOptions(max_global_steps=2))
