"""Our logs have AlgoPerf's columns and files, checked against real AlgoPerf logs."""

from __future__ import annotations

import csv
import io
import json
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


# meta_data_0.json keys of AlgoPerf's logger (algoperf/logger_utils.py,
# get_meta_data at commit 2c90454f). The leaderboard archive keeps only
# eval_measurements.csv and hparams.json, so the list is written out here.
ALGOPERF_SYSTEM_KEYS = {
    "cpu.util.avg_percent_since_last", "cpu.freq.current",
    "mem.total", "mem.available", "mem.used", "mem.percent_used",
    "mem.read_bytes_since_boot", "mem.write_bytes_since_boot",
    "net.bytes_sent_since_boot", "net.bytes_recv_since_boot",
    "os_platform", "python_version", "python_compiler", "git_branch", "git_commit_hash",
    "cpu_model_name", "cpu_count", "rng_seed",
}
ALGOPERF_GPU_KEYS = {"gpu_model_name", "gpu_count", "gpu_driver", "gpu.count"} | {
    f"gpu.{which}.{metric}" for which in ("0", "1", "avg")
    for metric in ("compute.util", "mem.util", "mem.total", "mem.used", "mem.free",
                   "temp.current")}
# Its workload.* keys are the workload's number/string attributes: those of
# every workload (spec.Workload), and OGBG's model sizes. (train_mean and
# train_stddev are numbers only in AlgoPerf's OGBG, copies of its test target.)
ALGOPERF_WORKLOAD_KEYS = {f"workload.{k}" for k in (
    "target_metric_name", "validation_target_value", "test_target_value",
    "num_train_examples", "num_eval_train_examples", "num_validation_examples",
    "num_test_examples", "eval_batch_size", "max_allowed_runtime_sec",
    "eval_period_time_sec", "step_hint", "latent_dim", "num_message_passing_steps")}
FAKE_NVIDIA_SMI = ("0, NVIDIA H100 80GB HBM3, 550.54.15, 40, 81559, 20000, 61559, 35\n"
                   "1, NVIDIA H100 80GB HBM3, 550.54.15, 60, 81559, 40000, 41559, 45\n")


def _fake_nvidia_smi(monkeypatch, output=None):
  """``nvidia-smi`` answers ``output`` (None: as if it were not installed)."""
  command = logs._command
  monkeypatch.setattr(logs, "_command", lambda *args, **kw: (
      output if args[0] == "nvidia-smi" else command(*args, **kw)))


def test_meta_data_has_algoperfs_keys_and_ours(monkeypatch):
  import platform

  import psutil

  _fake_nvidia_smi(monkeypatch)
  workload = registry.get_workload("ogbg", "small")
  meta = logs.meta_data(workload, 7, {"submission": "nadamw"})
  assert ALGOPERF_SYSTEM_KEYS | ALGOPERF_WORKLOAD_KEYS <= set(meta)
  assert not {k for k in meta if k.startswith("gpu")}  # no GPU, no gpu keys (AlgoPerf)
  for ours in ("workload", "workload_id", "size", "num_params", "jax_version",
               "device_kind", "num_devices", "git_commit", "targets", "submission"):
    assert ours in meta, ours
  assert meta["rng_seed"] == 7 and meta["cpu_count"] == psutil.cpu_count()
  assert meta["python_compiler"] == platform.python_compiler()
  assert meta["workload.validation_target_value"] == workload.validation_target_value
  assert meta["workload.num_test_examples"] == workload.num_test_examples
  assert meta["git_commit_hash"] == meta["git_commit"]
  assert 0 < meta["mem.used"] < meta["mem.total"]
  assert not {k for k in meta if k.startswith("workload.")
              and not isinstance(meta[k], (bool, int, float, str))}


def test_gpu_keys_follow_algoperfs_names_and_units(monkeypatch):
  _fake_nvidia_smi(monkeypatch, FAKE_NVIDIA_SMI)
  info = logs.system_info()
  assert ALGOPERF_GPU_KEYS <= set(info)
  assert info["gpu_count"] == info["gpu.count"] == 2
  assert info["gpu_model_name"] == "NVIDIA H100 80GB HBM3"
  assert info["gpu_driver"] == "550.54.15"
  assert info["gpu.0.compute.util"] == pytest.approx(0.4)  # GPUtil's load: a fraction
  assert info["gpu.1.mem.util"] == pytest.approx(40000 / 81559)
  assert info["gpu.avg.mem.used"] == 30000 and info["gpu.avg.temp.current"] == 40


def test_meta_data_file_of_a_trial(tmp_path):
  from tests.toy import ToyWorkload

  workload = ToyWorkload()
  sub = registry.load_submission("nadamw")
  runner.train_once(workload, sub, runner.resolve_hparams(workload, sub, {}), 3, None,
                    str(tmp_path), runner.RunOptions(max_global_steps=1,
                                                     save_checkpoints=False))
  with open(tmp_path / "meta_data_0.json") as f:
    meta = json.load(f)
  assert ALGOPERF_SYSTEM_KEYS <= set(meta)
  assert meta["rng_seed"] == 3 and meta["workload.dim"] == 8  # the toy's own attribute
  assert meta["submission"] == "nadamw"
