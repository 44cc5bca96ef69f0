"""Tests of the criteo1tb workload: AlgoPerf's numbers, placement, data, eval.

The contract test (tests/test_workload_contract.py) trains and evaluates both
sizes; these check what is particular to Criteo: the sizes, the row-sharded
table, the streamed TSV splits behind the workload and its loss.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from algoperf_avg import registry, spec
from tests import workload_data
from workloads.criteo1tb import input_pipeline, synthetic
from workloads.criteo1tb import workload as workload_lib

VOCAB = 1024


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("criteo_root"))
  return root, workload_data.write_criteo1tb(root)


def test_full_size_is_algoperfs():
  workload = registry.get_workload("criteo1tb")
  row = workload.describe()
  assert row["params"] == 539_267_457
  assert (row["metric"], row["direction"]) == ("loss", "min")
  assert (row["validation_target"], row["test_target"]) == (0.123735, 0.126041)
  assert (row["step_hint"], row["max_runtime_sec"]) == (10_666, 7_703)
  assert workload.eval_period_time_sec == 120
  assert (workload.eval_batch_size, workload.default_batch_size) == (131_072, 262_144)
  assert workload.num_eval_train_examples == 83_361_792  # AlgoPerf's rounding up
  assert workload.param_shapes["embedding_table"].shape == (4_194_304, 128)
  assert workload.is_output_params("Dense_7") and not workload.is_output_params("Dense_6")
  small = registry.get_workload("criteo1tb", "small")
  assert small.is_output_params("Dense_4")
  assert small.param_shapes["Dense_4"]["kernel"].shape == (64, 1)


def test_table_rows_are_sharded_and_the_rest_replicated(monkeypatch):
  workload = registry.get_workload("criteo1tb", vocab_size=VOCAB)
  specs = workload.param_partition_specs()
  assert specs["embedding_table"] == PartitionSpec("batch", None)
  others = [s for k, v in specs.items() if k != "embedding_table" for s in v.values()]
  assert len(others) == 2 * 8 and all(s is None for s in others)
  # Rows that do not split evenly over the devices stay replicated.
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  assert workload.param_partition_specs()["embedding_table"] is None


def test_vocab_size_option_and_bad_input():
  workload = registry.get_workload("criteo1tb", vocab_size="2048")
  assert workload.param_shapes["embedding_table"].shape == (2048, 128)
  assert workload.num_params == 539_267_457 - (4_194_304 - 2048) * 128
  for bad in ("0", "-3", "1.5", "many"):
    with pytest.raises(spec.UsageError, match="vocab_size"):
      registry.get_workload("criteo1tb", vocab_size=bad)
  with pytest.raises(spec.UsageError, match="manual_dir"):
    workload_lib.Criteo1TbWorkload.setup_data("/nonexistent", raw_dir="/x")


def test_full_size_says_how_to_prepare_missing_data(tmp_path):
  workload = registry.get_workload("criteo1tb", vocab_size=VOCAB)
  with pytest.raises(spec.UsageError, match="setup-data criteo1tb"):
    workload.check_data(str(tmp_path))
  with pytest.raises(spec.UsageError, match="setup-data criteo1tb"):
    workload.check_data(None)


def test_setup_data_prepares_data_root_criteo1tb(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  line = "\t".join(["1"] + ["3"] * 13 + ["0a1b2c3d"] * 26) + "\n"
  for day in range(24):
    (raw / f"day_{day}").write_text(line * 2)
  path = workload_lib.Criteo1TbWorkload.setup_data(str(tmp_path / "data"),
                                                   manual_dir=str(raw))
  assert path == str(tmp_path / "data" / "criteo1tb")
  assert os.path.isfile(os.path.join(path, "day_23_00"))
  # AlgoPerf's 5M-line shards: two lines make one shard of day 23, not 36.
  with pytest.raises(spec.UsageError, match="36"):
    registry.get_workload("criteo1tb").check_data(str(tmp_path / "data"))


def test_full_example_batch_needs_no_data():
  batch = registry.get_workload("criteo1tb").example_batch(4)
  assert {k: v.shape for k, v in batch.items()} == {
      "inputs": (4, 39), "targets": (4,), "weights": (4,)}


def test_eval_loss_is_the_mean_over_the_whole_split(data_root):
  root, written = data_root
  workload = registry.get_workload("criteo1tb", vocab_size=VOCAB, eval_batch_size=16)
  workload.check_data(root)
  params, state = workload.init_model_fn(jax.random.key(3))
  # A bias that moves the logits, so the loss is not the same for every line.
  params = dict(params, Dense_7=dict(params["Dense_7"], bias=jnp.array([-2.0])))
  metrics = workload.eval_model(16, params, state, None, root, splits=("validation",))
  split = input_pipeline.read_split(os.path.join(root, "criteo1tb"), "validation")
  assert len(split["targets"]) == len(written["validation"]) == 34
  logits = np.asarray(workload.model_fn(
      params, split, state, spec.ForwardPassMode.EVAL, None, False)[0])[:, 0]
  labels = split["targets"]
  expected = np.mean(np.logaddexp(0, logits) - labels * logits)
  np.testing.assert_allclose(metrics["validation/loss"], expected, rtol=1e-5)


def test_training_stream_resumes_where_it_stopped(data_root):
  root, _ = data_root
  workload = registry.get_workload("criteo1tb", vocab_size=VOCAB)
  stream = workload.train_batches(jax.random.key(0), root, 4)
  taken = [next(stream)["inputs"] for _ in range(5)]
  position = stream.checkpoint("unused")
  assert position == 5
  later = [next(stream)["inputs"] for _ in range(3)]
  resumed = workload.train_batches(jax.random.key(0), root, 4, start=position)
  for expected in later:
    np.testing.assert_array_equal(next(resumed)["inputs"], expected)
  assert not np.array_equal(taken[0], later[0])


def test_small_data_is_generated_once_into_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("ALGOPERF_AVG_CACHE", str(tmp_path))
  tiny = dataclasses.replace(workload_lib.SMALL_DATA, train_lines_per_day=32,
                             lines_per_shard=8)
  folder = workload_lib.small_data_dir(tiny)
  assert folder.startswith(str(tmp_path / "criteo1tb_small-"))
  input_pipeline.check_data(folder)
  assert input_pipeline.num_examples(folder, "train") == 23 * 32
  stamp = os.stat(os.path.join(folder, "day_0_00")).st_mtime_ns
  workload_lib.small_data_dir.cache_clear()
  assert workload_lib.small_data_dir(tiny) == folder
  assert os.stat(os.path.join(folder, "day_0_00")).st_mtime_ns == stamp


def test_small_config_counts_the_generated_lines():
  small = registry.get_workload("criteo1tb", "small")
  data = small.config
  generated = workload_lib.SMALL_DATA
  assert data.num_train_examples == 23 * generated.train_lines_per_day
  assert data.num_validation_examples == 17 * generated.lines_per_shard
  assert data.num_test_examples == 19 * generated.lines_per_shard
  assert isinstance(generated, synthetic.Config)
