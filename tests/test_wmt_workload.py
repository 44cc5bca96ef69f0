"""Tests of the WMT workload class (workloads/wmt/workload.py).

The contract test (tests/test_workload_contract.py) trains, evaluates and
resumes both sizes; these check what is particular to WMT: AlgoPerf's sizes,
init key and metric names, the tokenizer check, BLEU through the engine.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.kit import data
from tests import workload_data
from workloads.wmt import input_pipeline, metrics, model, synthetic
from workloads.wmt import workload as wmt


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  folder = tmp_path_factory.mktemp("wmt_root")
  workload_data.write_wmt(str(folder))
  return str(folder)


def test_full_is_algoperf_s_workload():
  workload = registry.get_workload("wmt", "full")
  row = workload.describe()
  assert row["params"] == 133_521_408
  assert (row["metric"], row["direction"]) == ("bleu", "max")
  assert (row["validation_target"], row["test_target"]) == (30.8491, 30.7219)
  assert (row["step_hint"], row["max_runtime_sec"]) == (120_000, 43_336)
  assert workload.eval_period_time_sec == 840
  assert (workload.num_train_examples, workload.num_eval_train_examples,
          workload.num_validation_examples, workload.num_test_examples) == (
              5_906_184, 3_072, 3_000, 3_003)
  assert (workload.eval_batch_size, workload.default_batch_size) == (128, 128)
  assert workload.max_length == 256
  assert workload.is_output_params("shared_embedding")
  assert workload.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY


def test_init_splits_the_key_first_as_algoperf():
  workload = registry.get_workload("wmt", "small")
  params, state = workload.init_model_fn(jax.random.key(3))
  params_rng, _ = jax.random.split(jax.random.key(3))
  expected = model.init_params(model.Transformer(workload.model_config), params_rng)
  assert state == {}
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(a, b)


def test_full_data_errors_say_how_to_prepare(tmp_path):
  workload = registry.get_workload("wmt", "full")
  with pytest.raises(spec.UsageError, match="setup-data wmt"):
    workload.check_data(None)
  with pytest.raises(spec.UsageError, match="no data folder .*setup-data wmt"):
    workload.check_data(str(tmp_path))
  (tmp_path / "wmt").mkdir()
  with pytest.raises(spec.UsageError, match="no prepared wmt17_translate.*setup-data wmt"):
    workload.check_data(str(tmp_path))
  with pytest.raises(spec.UsageError, match="takes no options"):
    wmt.WmtWorkload.setup_data(str(tmp_path), manual_dir="x")
  with pytest.raises(spec.UsageError, match="bad value 'many' for option vocab_size"):
    registry.get_workload("wmt", "full", vocab_size="many")


def test_a_tokenizer_of_another_size_is_a_usage_error(root):
  workload = registry.get_workload("wmt", "full", vocab_size=workload_data.WMT_VOCAB_SIZE)
  workload.check_data(root)
  next(workload.eval_batches("test", root, 4))
  with pytest.raises(spec.UsageError, match="160 pieces but the wmt model 32000"):
    registry.get_workload("wmt", "full").eval_batches("test", root, 4)
  with pytest.raises(spec.UsageError, match="unknown eval split"):
    workload.eval_batches("train", root, 4)


def test_example_batch_has_the_training_shapes_without_data():
  batch = registry.get_workload("wmt", "full").example_batch(3)
  assert set(batch) == set(input_pipeline.TRAIN_KEYS)
  assert all(v.shape == (3, 256) for v in batch.values())


def test_metrics_are_algoperf_s_and_bleu_is_the_corpus_bleu_of_real_rows(root):
  workload = registry.get_workload("wmt", "full", vocab_size=workload_data.WMT_VOCAB_SIZE)
  (batch,) = list(workload.evaluator.host_batches("test", root, 4))
  assert batch["valid"].tolist() == [1, 1, 1, 0]  # 3 test pairs, padded to 4
  tokenizer = input_pipeline.load_tokenizer(f"{root}/wmt")
  # A "translation" that is the reference for two rows and garbage for one.
  translations = np.array(batch["targets"])
  translations[1] = 7
  sums = {"loss": np.float32(12.0), "num_tokens": np.float32(48.0),
          "correct": np.float32(24.0)}
  valid = batch["valid"] > 0
  per_example = {"translations": translations[valid], "targets": batch["targets"][valid]}
  result = workload.finalize_metrics("test", sums, per_example)
  assert set(result) == {"bleu", "loss", "accuracy"}  # AlgoPerf's wmt eval keys
  assert result["loss"] == 0.25 and result["accuracy"] == 0.5
  assert result["bleu"] == metrics.bleu_from_ids(translations[:3], batch["targets"][:3],
                                                tokenizer)
  assert 0 < result["bleu"] < 100
  assert set(workload.finalize_metrics("test", {}, per_example, metrics="target")) == {
      "bleu"}


def test_small_data_is_the_generated_task_cached_in_the_real_layout(monkeypatch, tmp_path):
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
  config = synthetic.Config(num_train=300, num_validation=20, num_test=10, vocab_size=150)
  folder = wmt.small_data_dir(config)
  assert folder == data.cache_dir("wmt_small", config)
  assert input_pipeline.data_problem(folder) is None
  assert wmt.small_data_dir(config) == folder  # found, not rebuilt
  assert list(input_pipeline.read_pairs(folder, "test")) == synthetic.generate_splits(
      config)["test"]
