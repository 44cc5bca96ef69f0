"""Post-hoc snapshots: SWA and start steps, batch norm, grid-limited storage, disk."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.averaging import posthoc, snapshots
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import checkpoints, logs, runner
from tests.toy import ToyBNWorkload, ToyWorkload

STEPS, EVAL_EVERY = 24, 6
_WRAPPER = (
    "from algoperf_avg.averaging import averaged_params as eval_params\n"
    "from submissions.{0} import DEFAULT_HPARAMS, HPARAMS, make_optimizer\n"
)


def _train(tmp, workload, name, hparams, **options):
  if name == "nadamw":
    submission = registry.load_submission(name)
  else:
    path = tmp / f"{name}.py"
    path.write_text(_WRAPPER.format(name))
    submission = registry.load_submission(str(path))
  log_dir = logs.trial_dir(str(tmp / f"{name}_{len(os.listdir(tmp))}"), 0,
                           workload.workload_id, 1)
  runner.train_once(
      workload, submission, runner.resolve_hparams(workload, submission, hparams), 7,
      None, log_dir,
      runner.RunOptions(max_global_steps=STEPS, eval_every_steps=EVAL_EVERY,
                        save_checkpoints=False, **options))
  return log_dir


def _rows(log_dir):
  return {r["global_step"]: r for r in logs.read_rows(
      os.path.join(log_dir, "eval_measurements.csv"))}


def _assert_equal_rows(posthoc_dir, online_dir, rtol=1e-6):
  got, want = _rows(posthoc_dir), _rows(online_dir)
  assert sorted(got) == sorted(want) == [6, 12, 18, 24]
  for step in got:
    for key in ("validation/loss", "validation/accuracy"):
      np.testing.assert_allclose(got[step][key], want[step][key], rtol=rtol,
                                 err_msg=f"step {step} {key}")


def test_swa_and_start_steps_equal_the_online_transforms(tmp_path):
  workload = ToyWorkload(validation_target=2.0)  # step_hint 200: start 0.05 -> step 10
  plain = _train(tmp_path, workload, "nadamw", {}, save_params_every=1)
  online = {
      "swa": _train(tmp_path, workload, "nadamw_swa",
                    {"swa_start_fraction": 0.05, "swa_every": 2}),
      "lawa": _train(tmp_path, workload, "nadamw_lawa",
                     {"lawa_every": 3, "lawa_window": 2, "lawa_start_fraction": 0.05}),
      "ema": _train(tmp_path, workload, "nadamw_ema",
                    {"ema_every": 2, "ema_decay": 0.7, "ema_start_fraction": 0.05}),
  }
  points = [GridPoint("swa", 2, start_step=10), GridPoint("lawa", 3, window=2, start_step=10),
            GridPoint("ema", 2, decay=0.7, start_step=10)]
  written = posthoc.sweep(workload, plain, str(tmp_path / "out"), points=points)
  for directory, method in zip(written, ("swa", "lawa", "ema"), strict=True):
    _assert_equal_rows(directory, online[method])
  # Before the start (step 6) they evaluate the training weights, as online.
  assert _rows(written[0])[6]["validation/loss"] == _rows(plain)[6]["validation/loss"]


@pytest.mark.parametrize("policy", ["latest", "recompute"])
def test_batch_norm_workload_posthoc_equals_online(tmp_path, policy):
  workload = ToyBNWorkload(validation_target=2.0)
  hparams = {"bn_policy": policy, "bn_batches": 2}
  plain = _train(tmp_path, workload, "nadamw", hparams, save_params_every=2)
  online = _train(tmp_path, workload, "nadamw_ema",
                  dict(hparams, ema_every=2, ema_decay=0.8))
  [swept] = posthoc.sweep(workload, plain, str(tmp_path / "out"), ema_grid=[(2, 0.8)])
  _assert_equal_rows(swept, online, rtol=1e-5)
  # The snapshots hold the batch statistics, so "latest" is the run's own.
  saved = checkpoints.read_metadata(os.path.join(plain, snapshots.PARAMS_DIR), 6)
  assert saved["items"] == ["model_state", "params"]


def test_grid_keeps_only_what_its_averages_need(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  grid = (GridPoint("lawa", 2, window=2),)
  kept = _train(tmp_path, workload, "nadamw", {}, posthoc_grid=grid)
  saved = checkpoints.list_steps(os.path.join(kept, snapshots.PARAMS_DIR))
  # Step 0, the evals, and each eval's last two records (every 2nd step).
  assert saved == [0, 4, 6, 10, 12, 16, 18, 22, 24]
  online = _train(tmp_path, workload, "nadamw_lawa", {"lawa_every": 2, "lawa_window": 2})
  [swept] = posthoc.sweep(workload, kept, str(tmp_path / "out"), points=list(grid))
  _assert_equal_rows(swept, online)
  with pytest.raises(spec.UsageError, match=r"lawa_every2_window3 needs the weights of steps \[2"):
    posthoc.sweep(workload, kept, str(tmp_path / "bad"), lawa_grid=[(2, 3)])


def test_policy_counts_and_parses():
  policy = snapshots.Policy(grid=(GridPoint("lawa", 2, window=2), GridPoint("ema", 8, 0, 0.9)))
  assert policy.count(24, [6, 12, 18, 24]) == len({0, 4, 6, 10, 12, 16, 18, 22, 24, 8})
  assert snapshots.parse_grid(["lawa:64:20", "ema:8:0.99:100", "swa:1:500", "lawa:64:20"]) == [
      GridPoint("lawa", 64, window=20), GridPoint("ema", 8, decay=0.99, start_step=100),
      GridPoint("swa", 1, start_step=500)]
  for bad, message in (("lawa:64", "EVERY:WINDOW"), ("ema:1:2", "decay must be in"),
                       ("swa:0:3", "every must be >= 1"), ("sma:1:2", "unknown averaging"),
                       ("lawa", "METHOD:")):
    with pytest.raises(spec.UsageError, match=message):
      snapshots.parse_grid([bad])


def test_bfloat16_halves_the_bytes_and_big_runs_are_refused(tmp_path, monkeypatch):
  workload = ToyWorkload(validation_target=2.0)
  params, state = workload.init_model_fn(__import__("jax").random.key(0))
  assert snapshots.snapshot_bytes(params, state, "bfloat16") * 2 == (
      snapshots.snapshot_bytes(params, state, None))
  Usage = collections.namedtuple("Usage", "total used free")
  monkeypatch.setattr(snapshots.shutil, "disk_usage", lambda _: Usage(10, 10, 1000))
  log_dir = tmp_path / "exp" / "trial_1"
  with pytest.raises(spec.UsageError, match="post-hoc snapshots: 25 of .* GiB free"):
    runner.train_once(workload, registry.load_submission("nadamw"),
                      runner.resolve_hparams(workload, registry.load_submission("nadamw"), {}),
                      0, None, str(log_dir),
                      runner.RunOptions(max_global_steps=STEPS, eval_every_steps=EVAL_EVERY,
                                        save_params_every=1))
  assert not (tmp_path / "exp").exists()  # refused before anything was written
