"""Tests of the fastMRI U-Net: AlgoPerf's parameter tree, golden outputs, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workloads.fastmri import model


def _param_shapes(net: model.UNet, size: int = 32):
  inputs = jnp.zeros((1, size, size))
  return jax.eval_shape(
      lambda: net.init({"params": jax.random.key(0)}, inputs, train=False)
  )["params"]


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _golden_params(shapes):
  """Weights drawn with numpy, so the golden values survive JAX RNG changes."""
  rng = np.random.default_rng(5678)

  def make(path, leaf):
    values = rng.uniform(-1, 1, leaf.shape).astype(np.float32)
    if path[-1].key == "bias":
      return 0.1 * values
    fan_in = int(np.prod(leaf.shape[:-1]))
    return values * np.sqrt(3.0 / fan_in)  # unit-variance pre-activations

  return jax.tree_util.tree_map_with_path(make, shapes)


def _golden_inputs(size: int) -> np.ndarray:
  rng = np.random.default_rng(1234)
  return rng.normal(size=(2, size, size)).astype(np.float32)


def test_full_parameter_count_matches_algoperf():
  assert _count(_param_shapes(model.UNet())) == 7_756_097


def test_full_parameter_tree_has_algoperf_layout():
  shapes = _param_shapes(model.UNet())
  expected = {f"ConvBlock_{i}" for i in range(9)}
  expected |= {f"TransposeConvBlock_{i}" for i in range(4)}
  assert set(shapes) == expected | {"Conv_0"}
  # Encoder 1 -> 32 -> 64 -> 128 -> 256, bottleneck 512, decoder back to 32.
  assert shapes["ConvBlock_0"]["Conv_0"]["kernel"].shape == (3, 3, 1, 32)
  assert shapes["ConvBlock_4"]["Conv_1"]["kernel"].shape == (3, 3, 512, 512)
  assert shapes["TransposeConvBlock_0"]["ConvTranspose_0"]["kernel"].shape == (
      2, 2, 512, 256)
  assert shapes["ConvBlock_5"]["Conv_0"]["kernel"].shape == (3, 3, 512, 256)
  assert shapes["ConvBlock_8"]["Conv_1"]["kernel"].shape == (3, 3, 32, 32)
  # Only the final 1x1 convolution has a bias; instance norm has no parameters.
  assert set(shapes["Conv_0"]) == {"kernel", "bias"}
  assert shapes["Conv_0"]["kernel"].shape == (1, 1, 32, 1)
  biases = [p for p, _ in jax.tree_util.tree_leaves_with_path(shapes)
            if p[-1].key == "bias"]
  assert len(biases) == 1


def test_small_model_uses_the_same_code():
  small = model.UNet(num_channels=4, num_pool_layers=3)
  shapes = _param_shapes(small)
  assert _count(shapes) == 30_089
  assert set(shapes) == ({f"ConvBlock_{i}" for i in range(7)}
                         | {f"TransposeConvBlock_{i}" for i in range(3)}
                         | {"Conv_0"})


# AlgoPerf's JAX UNet (commit 2c90454f) on the same weights and inputs gave
# these (max |ours - AlgoPerf| was 0.0 for every output in float32 on CPU).
GOLDEN_64 = {
    "corner": [[-0.21449654, 0.16303231, 0.39177892], [0.9526844, -0.4152123, 0.6619078]],
    "sums": [489.58096, 488.33167],
    "abs_sums": [2500.1594, 2481.0493],
}


def test_outputs_match_algoperf_golden_values():
  params = _golden_params(_param_shapes(model.UNet()))
  outputs = np.asarray(jax.jit(
      lambda p, x: model.UNet().apply({"params": p}, x, train=False))(
          params, _golden_inputs(64)))
  assert outputs.shape == (2, 64, 64)
  np.testing.assert_allclose(outputs[0, :2, :3], GOLDEN_64["corner"], atol=2e-5)
  np.testing.assert_allclose(outputs.sum((1, 2)), GOLDEN_64["sums"], rtol=1e-4)
  np.testing.assert_allclose(np.abs(outputs).sum((1, 2)), GOLDEN_64["abs_sums"],
                             rtol=1e-5)


def test_full_size_forward_pass():
  params = _golden_params(_param_shapes(model.UNet()))
  inputs = _golden_inputs(320)[:1]
  outputs = jax.jit(lambda p, x: model.UNet().apply({"params": p}, x, train=False))(
      params, inputs)
  assert outputs.shape == (1, 320, 320)
  # AlgoPerf's UNet on these weights and inputs.
  np.testing.assert_allclose(outputs[0, :2, :3], [[0.25061822, -0.07303475, -0.00463187],
                                                  [0.15390505, -0.2370968, -0.09219824]],
                             atol=2e-5)
  np.testing.assert_allclose(float(outputs.sum()), 12444.953, rtol=1e-4)
  np.testing.assert_allclose(float(jnp.abs(outputs).sum()), 62822.168, rtol=1e-5)


def test_instance_norm_is_per_image_and_channel():
  x = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 6, 3)).astype(np.float32)
  mean = x.mean((1, 2), keepdims=True)
  expected = (x - mean) / np.sqrt(x.var((1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(model.instance_norm(jnp.asarray(x)), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 37, 45), (2, 30, 16)])
def test_any_size_comes_back_the_same_size(shape):
  net = model.UNet(num_channels=2, num_pool_layers=3)
  inputs = jnp.ones(shape)
  outputs = jax.eval_shape(
      lambda: net.apply(net.init({"params": jax.random.key(0)}, inputs, train=False),
                        inputs, train=False))
  assert outputs.shape == shape


def _block_and_input():
  block = model.ConvBlock(16)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 3)), jnp.float32)
  params = {"params": _golden_params(jax.eval_shape(
      lambda: block.init({"params": jax.random.key(0)}, x, False, 0.0))["params"])}

  @jax.jit
  def train(rate, seed):
    return block.apply(params, x, True, rate, rngs={"dropout": jax.random.key(seed)})

  return jax.jit(lambda: block.apply(params, x, False, 0.5))(), train


def test_dropout_drops_whole_channels_at_the_rate():
  plain, train = _block_and_input()
  out = np.asarray(train(0.5, 1))
  # Whole (example, channel) planes are zero, about half of them; LeakyReLU
  # outputs are never exactly zero otherwise.
  dropped = np.all(out == 0, axis=(1, 2))
  assert np.array_equal(dropped, np.any(out == 0, axis=(1, 2)))
  assert 0.25 < dropped.mean() < 0.75
  assert not np.allclose(out, plain)
  np.testing.assert_array_equal(out, train(0.5, 1))
  assert not np.array_equal(out, train(0.5, 2))


def test_dropout_rate_zero_or_eval_is_the_identity_and_rate_can_be_traced():
  plain, train = _block_and_input()
  np.testing.assert_allclose(train(0.0, 1), plain, atol=1e-5)
  assert not np.allclose(train(0.3, 1), plain)
  assert train._cache_size() == 1  # one compilation for every rate
  block = model.ConvBlock(16)
  x = jnp.ones((1, 4, 4, 1))
  params = {"params": _golden_params(jax.eval_shape(
      lambda: block.init({"params": jax.random.key(0)}, x, False, 0.0))["params"])}
  # A Python 0 needs no dropout rng at all.
  jax.jit(lambda p: block.apply(p, x, True, 0))(params)
