"""The ImageNet workloads' shared half: sizes, options, data checks, real-format input."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.kit import imagenet
from tests import workload_data


def test_full_size_is_algoperfs():
  vit = registry.get_workload("imagenet_vit", "full")
  assert vit.num_params == 22_122_472
  assert (vit.eval_batch_size, vit.num_eval_train_examples) == (2048, 51_200)
  assert (vit.num_validation_examples, vit.num_test_examples) == (50_000, 10_000)
  assert vit.validation_target_value == pytest.approx(0.77309)
  assert vit.test_target_value == pytest.approx(0.6519)
  assert (vit.step_hint, vit.max_allowed_runtime_sec, vit.eval_period_time_sec) == (
      167_999, 69_768, 420)
  assert vit.is_output_params("head") and not vit.is_output_params("pre_logits")
  config = vit.input_config
  assert config == imagenet.VIT_PREPROCESSING
  assert config.randaugment and config.mixup_alpha == 0.2 and config.image_size == 224


def test_small_size_scales_the_same_augmentation():
  vit = registry.get_workload("imagenet_vit", "small")
  config = vit.input_config
  assert (config.image_size, config.resize_size, config.num_classes) == (32, 36, 10)
  assert config.randaugment and config.mixup_alpha == 0.2
  assert config.randaugment_translate == pytest.approx(100 * 32 / 224)
  assert config.area_range == (0.3, 1.0) and config.randaugment_magnitude == 5
  assert not vit.requires_data_dir


def test_unprepared_data_is_one_usage_error(tmp_path):
  vit = registry.get_workload("imagenet_vit", "full")
  with pytest.raises(spec.UsageError, match="setup-data imagenet --manual_dir"):
    vit.check_data(str(tmp_path))
  with pytest.raises(spec.UsageError, match="--manual_dir"):
    type(vit).setup_data(str(tmp_path))
  with pytest.raises(spec.UsageError, match="takes only --manual_dir"):
    type(vit).setup_data(str(tmp_path), raw_dir="x")
  assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("imagenet_data"))
  return root, workload_data.write_imagenet(root)


def test_full_size_reads_prepared_imagenet_and_imagenet_v2(data_root, tmp_path):
  root, labels = data_root
  vit = registry.get_workload("imagenet_vit", "full")
  vit.check_data(root)
  counts = {split: sum(len(b["targets"]) for b in vit.eval_batches(split, root, 4))
            for split in ("eval_train", "validation", "test")}
  assert counts == {"eval_train": 12, "validation": 5, "test": 6}
  test_labels = [int(t) for b in vit.eval_batches("test", root, 4) for t in b["targets"]]
  assert sorted(test_labels) == labels["test"]
  # The test split may live elsewhere (a workload option).
  moved = registry.get_workload("imagenet_vit", "full",
                                imagenet_v2_dir=os.path.join(root, "imagenet_v2"))
  moved.check_data(root)
  elsewhere = registry.get_workload("imagenet_vit", "full",
                                    imagenet_v2_dir=str(tmp_path / "nowhere"))
  with pytest.raises(spec.UsageError, match="imagenet_v2"):
    elsewhere.check_data(root)


def test_training_stream_resumes_from_its_checkpoint(data_root, tmp_path):
  root, _ = data_root
  vit = registry.get_workload("imagenet_vit", "full")
  rng = jax.random.key(3)
  stream = vit.train_batches(rng, root, 2)
  first = next(stream)
  assert first["inputs"].shape == (2, 224, 224, 3)
  assert first["targets"].shape == (2, 1000)  # mixup's soft labels
  state = stream.checkpoint(str(tmp_path))
  expected = [next(stream) for _ in range(3)]
  resumed = vit.train_batches(rng, root, 2, start=state)
  for a in expected:
    b = next(resumed)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])


def test_resnet_full_size_is_algoperfs_and_keeps_batch_statistics():
  resnet = registry.get_workload("imagenet_resnet", "full")
  assert resnet.num_params == 25_557_032
  _, state = jax.eval_shape(resnet.init_model_fn, jax.random.key(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state)) == 53_120
  assert (resnet.eval_batch_size, resnet.num_eval_train_examples) == (1024, 50_176)
  assert resnet.batch_norm_momentum == 0.9 and resnet.is_output_params("Dense_0")
  assert not resnet.input_config.randaugment and resnet.input_config.mixup_alpha is None

  small = registry.get_workload("imagenet_resnet", "small")
  params, state = small.init_model_fn(jax.random.key(0))
  batch = small.example_batch(4)
  batch["inputs"] = np.random.default_rng(0).normal(size=batch["inputs"].shape)
  _, updated = small.model_fn(params, batch, state, spec.ForwardPassMode.TRAIN, None,
                              update_batch_norm=True)
  assert jax.tree.structure(updated) == jax.tree.structure(state)
  means = updated["batch_stats"]["BatchNorm_init"]["mean"]
  assert not np.allclose(means, state["batch_stats"]["BatchNorm_init"]["mean"])
  _, same = small.model_fn(params, batch, state, spec.ForwardPassMode.EVAL, None,
                           update_batch_norm=False)
  assert same is state
