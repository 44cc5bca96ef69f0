"""The fastMRI workload: sizes, setup-data, and SSIM through the eval engine."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algoperf_avg import registry, spec
from tests import workload_data
from workloads.fastmri import input_pipeline as ip
from workloads.fastmri import metrics, synthetic
from workloads.fastmri import workload as fastmri_workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("data"))
  workload_data.write_fastmri(root)
  return root


def test_full_size_is_algoperfs():
  workload = registry.get_workload("fastmri", "full")
  row = workload.describe()
  assert row["params"] == 7_756_097
  assert (row["validation_target"], row["test_target"]) == (0.723653, 0.740633)
  assert (row["step_hint"], row["max_runtime_sec"]) == (18_094, 4_430)
  assert workload.eval_period_time_sec == 80 and workload.eval_batch_size == 256
  assert (workload.num_train_examples, workload.num_validation_examples,
          workload.num_test_examples, workload.num_eval_train_examples) == (
              34_742, 3_554, 3_581, 3_584)
  assert workload.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR
  assert workload.is_output_params("Conv_0") and not workload.is_output_params("ConvBlock_0")


def test_small_size_counts_match_its_generated_files():
  workload = registry.get_workload("fastmri", "small")
  index = ip.load_index(workload._data_dir(None))
  files = workload.config.num_validation_files
  assert workload.requires_data_dir is False
  assert sum(v.num_slices for v in ip.split_volumes(index, "train")) == (
      workload.num_train_examples)
  for split, count in (("validation", workload.num_validation_examples),
                       ("test", workload.num_test_examples)):
    assert sum(v.num_slices for v in ip.split_volumes(index, split, files)) == count
  assert workload.targets.step_budget == workload.step_hint


def test_generated_data_lives_in_the_cache_named_by_its_config(monkeypatch, tmp_path):
  monkeypatch.setenv("ALGOPERF_AVG_CACHE", str(tmp_path))
  config = synthetic.Config(
      image_size=16, kspace_rows=20, kspace_cols=(18,), slices_per_volume=2,
      num_train_volumes=2, num_val_volumes=2, num_validation_files=1)
  folder = fastmri_workload.generated_dir(config)
  assert os.path.dirname(folder) == str(tmp_path)
  assert folder != fastmri_workload.generated_dir(synthetic.Config())
  assert fastmri_workload._ensure_generated(config) == folder
  assert ip.data_problem(folder) is None


def test_init_splits_the_key_first_as_algoperf():
  workload = registry.get_workload("fastmri", "small")
  params, state = workload.init_model_fn(jax.random.key(3))
  params_rng, _ = jax.random.split(jax.random.key(3))
  expected = workload._model.init({"params": params_rng}, jnp.zeros((1, 8, 8)),
                                  train=False)["params"]
  assert state == {}
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_validation_ssim_is_the_mean_over_slices(data_root):
  """Engine (padded batches) = per-slice SSIM of the examples read directly."""
  workload = registry.get_workload("fastmri", "full", eval_batch_size=16)
  params, state = workload.init_model_fn(jax.random.key(0))
  got = workload.evaluator.evaluate("validation", params, state, None, data_root, 16)
  examples = list(ip.eval_examples(os.path.join(data_root, "fastmri"), "validation"))
  assert len(examples) == 100  # AlgoPerf: the first 100 sorted val files
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  outputs, _ = workload.model_fn(params, batch, state, spec.ForwardPassMode.EVAL, None,
                                 False)
  per_slice = metrics.ssim(outputs, batch["targets"], batch["mean"], batch["std"],
                           batch["volume_max"])
  np.testing.assert_allclose(got["ssim"], float(np.mean(per_slice)), rtol=1e-5)
  l1 = np.mean(np.abs(np.asarray(outputs) - batch["targets"]))
  np.testing.assert_allclose(got["loss"], l1, rtol=1e-5)


def test_full_size_reads_the_prepared_folder_and_says_how_to_prepare(tmp_path, data_root):
  workload = registry.get_workload("fastmri", "full")
  workload.check_data(data_root)  # prepared by setup_data: no complaint
  with pytest.raises(spec.UsageError, match="setup-data fastmri"):
    workload.check_data(str(tmp_path))
  with pytest.raises(spec.UsageError, match="only --manual_dir"):
    fastmri_workload.FastMRIWorkload.setup_data(str(tmp_path), raw_dir="x")
  with pytest.raises(spec.UsageError, match="unknown eval split"):
    next(workload.eval_batches("train", data_root, 4))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "algoperf_avg.cli", *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))


def test_setup_data_command_links_and_indexes_the_user_folders(tmp_path, data_root):
  downloads = os.path.join(data_root, "downloads")
  result = _cli("setup-data", "fastmri", f"--data_dir={tmp_path}",
                f"--manual_dir={downloads}")
  assert result.returncode == 0, result.stderr
  assert "knee_singlecoil_val: 102 volumes, 102 slices" in result.stdout
  assert ip.data_problem(str(tmp_path / "fastmri")) is None

  empty = tmp_path / "empty"
  empty.mkdir()
  result = _cli("setup-data", "fastmri", f"--data_dir={tmp_path / 'other'}",
                f"--manual_dir={empty}")
  assert result.returncode == 2 and result.stderr.startswith("error: ")
  assert "knee_singlecoil_train.tar.xz" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "other").exists()  # nothing half-written
