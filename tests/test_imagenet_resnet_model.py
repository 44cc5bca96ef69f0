"""Tests of the ResNet model: AlgoPerf's tree, golden outputs, batch norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from workloads.imagenet_resnet import model

# A CPU-sized ResNet through the same code (32x32 images).
SMALL = dict(num_classes=10, stage_sizes=(1, 1, 1, 1), num_filters=16)
# Fewer modules for the behaviour tests, so they compile quickly.
TINY = dict(num_classes=3, stage_sizes=(1, 2), num_filters=4)

# AlgoPerf's imagenet_resnet JAX ResNet50 on `_golden_variables` and
# `_golden_images` (identical parameter and batch-statistics trees).
GOLDEN_TRAIN_LOGITS = [[-0.3873187, -1.1103077, 0.1702188, 0.4000209],
                       [-0.4578881, -0.6048996, 0.4393502, 0.4928768]]
GOLDEN_TRAIN_SUMS = [-23.760551, -24.6773]
GOLDEN_EVAL_LOGITS = [[-4.55173, -2.0722108, 2.584691, -0.0985316],
                      [-4.488629, -2.0162795, 2.513773, -0.0080335]]
GOLDEN_EVAL_SUMS = [-141.67072, -141.3013]
GOLDEN_STATS_SUMS = [11.073052, 25829.624]  # sum of all new means, sum of all new variances


def _init(resnet: model.ResNet, image_size: int, shapes_only: bool = True):
  x = jnp.zeros((1, image_size, image_size, 3))
  init = lambda: resnet.init(jax.random.key(0), x)  # noqa: E731
  return jax.eval_shape(init) if shapes_only else jax.jit(init)()


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _golden_variables(shapes):
  """Parameters and batch statistics drawn with numpy (JAX-version proof)."""
  rng = np.random.default_rng(5678)

  def make(path, leaf):
    name = path[-1].key
    values = rng.uniform(-np.sqrt(3), np.sqrt(3), leaf.shape).astype(np.float32)
    if name == "kernel":
      return values / np.sqrt(np.prod(leaf.shape[:-1]))
    if name == "scale":
      return 1 + 0.1 * values
    if name == "var":
      return 1 + 0.25 * values
    return 0.1 * values

  return jax.tree_util.tree_map_with_path(make, shapes)


def _golden_images(n: int = 2, size: int = 224) -> np.ndarray:
  return np.random.default_rng(1234).normal(size=(n, size, size, 3)).astype(np.float32)


def test_full_parameter_count_matches_algoperf():
  variables = _init(model.ResNet(), 224)
  assert set(variables) == {"params", "batch_stats"}
  assert _count(variables["params"]) == 25_557_032
  assert _count(variables["batch_stats"]) == 53_120


def test_full_parameter_tree_has_algoperf_layout():
  variables = _init(model.ResNet(), 224)
  params = variables["params"]
  blocks = {f"BottleneckResNetBlock_{i}" for i in range(16)}
  assert set(params) == {"Conv_init", "BatchNorm_init", "Dense_0"} | blocks
  assert params["Conv_init"]["kernel"].shape == (7, 7, 3, 64)
  assert "bias" not in params["Conv_init"]
  first = params["BottleneckResNetBlock_0"]
  assert set(first) == {f"Conv_{i}" for i in range(3)} | {
      f"BatchNorm_{i}" for i in range(3)} | {"Conv_proj", "BatchNorm_proj"}
  assert first["Conv_proj"]["kernel"].shape == (1, 1, 64, 256)
  assert "Conv_proj" not in params["BottleneckResNetBlock_1"]  # identity shortcut
  # v1.5: the 3x3 convolution is the strided one, so the first block of a
  # stage holds the projection; the bottleneck widens 4x.
  stage_two = params["BottleneckResNetBlock_3"]
  assert stage_two["Conv_1"]["kernel"].shape == (3, 3, 128, 128)
  assert stage_two["Conv_proj"]["kernel"].shape == (1, 1, 256, 512)
  assert params["Dense_0"]["kernel"].shape == (2048, 1000)
  stats = variables["batch_stats"]["BottleneckResNetBlock_15"]["BatchNorm_2"]
  assert set(stats) == {"mean", "var"} and stats["mean"].shape == (2048,)


def test_small_model_is_small():
  variables = _init(model.ResNet(**SMALL), 32)
  assert _count(variables["params"]) == 511_514
  assert _count(variables["batch_stats"]) == 4_832


def test_initialisation():
  # One block, and enough head weights to estimate their spread.
  resnet = model.ResNet(num_classes=64, stage_sizes=(2,), num_filters=4)
  variables = _init(resnet, 16, shapes_only=False)
  params, stats = variables["params"], variables["batch_stats"]
  for i in range(2):
    block = params[f"BottleneckResNetBlock_{i}"]
    assert not np.any(block["BatchNorm_2"]["scale"])  # blocks start as identity
    assert np.all(block["BatchNorm_1"]["scale"] == 1)
  head = np.asarray(params["Dense_0"]["kernel"])
  assert 0.008 < head.std() < 0.012 and not np.any(params["Dense_0"]["bias"])
  assert all(np.all(s["mean"] == 0) and np.all(s["var"] == 1)
             for s in jax.tree.leaves(stats, is_leaf=lambda t: "mean" in t))


def test_outputs_match_algoperf_golden_values():
  resnet = model.ResNet()
  variables = _golden_variables(_init(resnet, 224))
  x = _golden_images()

  @jax.jit
  def run(variables, x):
    train_logits, updates = resnet.apply(variables, x, update_batch_norm=True,
                                         mutable=["batch_stats"])
    return train_logits, updates["batch_stats"], resnet.apply(
        variables, x, update_batch_norm=False)

  train_logits, new_stats, eval_logits = jax.tree.map(np.asarray, run(variables, x))
  np.testing.assert_allclose(train_logits[:, :4], GOLDEN_TRAIN_LOGITS, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(train_logits.sum(1), GOLDEN_TRAIN_SUMS, rtol=1e-4,
                             atol=1e-3)
  np.testing.assert_allclose(eval_logits[:, :4], GOLDEN_EVAL_LOGITS, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(eval_logits.sum(1), GOLDEN_EVAL_SUMS, rtol=1e-4, atol=1e-3)
  leaves = jax.tree_util.tree_leaves_with_path(new_stats)
  sums = [sum(float(leaf.sum()) for path, leaf in leaves if path[-1].key == key)
          for key in ("mean", "var")]
  np.testing.assert_allclose(sums, GOLDEN_STATS_SUMS, rtol=1e-4)


def test_batch_norm_updates_running_averages_with_momentum_0_9():
  resnet = model.ResNet(**TINY)
  variables = _golden_variables(_init(resnet, 32))
  x = jnp.asarray(_golden_images(8, 32))
  # The first batch norm sees the stem convolution's output directly.
  features = jax.lax.conv_general_dilated(
      x, variables["params"]["Conv_init"]["kernel"], (2, 2), [(3, 3), (3, 3)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  batch_mean = features.mean((0, 1, 2))
  batch_var = features.var((0, 1, 2))
  _, updates = resnet.apply(variables, x, update_batch_norm=True, mutable=["batch_stats"])
  old = variables["batch_stats"]["BatchNorm_init"]
  new = updates["batch_stats"]["BatchNorm_init"]
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * batch_mean,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * batch_var,
                             rtol=1e-4, atol=1e-5)


def test_eval_mode_uses_running_averages_and_is_per_example():
  resnet = model.ResNet(**TINY)
  variables = _golden_variables(_init(resnet, 32))
  x = _golden_images(4, 32)
  evaluate = jax.jit(lambda x: resnet.apply(variables, x, update_batch_norm=False))
  train = jax.jit(lambda x: resnet.apply(variables, x, update_batch_norm=True,
                                         mutable=["batch_stats"])[0])
  np.testing.assert_allclose(evaluate(x[:1])[0], evaluate(x)[0], atol=1e-5)
  # In training mode an example's logits depend on its batch mates.
  assert not np.allclose(train(x[:2])[0], train(x)[0], atol=1e-4)
  # AlgoPerf's use_running_average_bn=True with update_batch_norm=True:
  # stored statistics normalise and stay as they are.
  logits, updates = resnet.apply(variables, x, update_batch_norm=True,
                                 use_running_average_bn=True, mutable=["batch_stats"])
  np.testing.assert_allclose(logits, evaluate(x), atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"],
               variables["batch_stats"])
