"""Tests of the ViT model: AlgoPerf's parameter tree, golden outputs, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from workloads.imagenet_vit import model

# AlgoPerf's imagenet_vit JAX ViT (S/16) on `_golden_params` and
# `_golden_images` (identical parameter trees).
GOLDEN_LOGITS = [[0.4592996, -0.7782484, -0.0854079, -1.1356367],
                 [0.5836982, -0.6406, -0.211105, -1.2369454]]
GOLDEN_SUMS = [-6.687455, -6.722151]

# A CPU-sized ViT through the same code (32x32 images, 16 tokens), and a
# shallower one that compiles quickly for the behaviour tests.
SMALL = dict(num_classes=10, patch_size=(8, 8), width=64, depth=4, mlp_dim=256,
             num_heads=4)
TINY = dict(SMALL, depth=1)


def _shapes(vit: model.ViT, image_size: int):
  x = jnp.zeros((1, image_size, image_size, 3))
  return jax.eval_shape(lambda: vit.init(jax.random.key(0), x, train=False))["params"]


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _golden_params(shapes):
  """Unit-variance-per-layer weights drawn with numpy (JAX-version proof)."""
  rng = np.random.default_rng(5678)

  def make(path, leaf):
    names = [p.key for p in path]
    shape = leaf.shape
    values = rng.uniform(-np.sqrt(3), np.sqrt(3), shape).astype(np.float32)
    if names[-1] == "kernel":
      # Attention kernels are (in, heads, head_dim), "out" is (heads, head_dim, out).
      fan_in = shape[0] if len(shape) == 3 and names[-2] != "out" else np.prod(shape[:-1])
      return values / np.sqrt(fan_in)
    if names[-1] == "scale":
      return 1 + 0.1 * values
    return 0.1 * values

  return jax.tree_util.tree_map_with_path(make, shapes)


def _golden_images(n: int = 2, size: int = 224) -> np.ndarray:
  return np.random.default_rng(1234).normal(size=(n, size, size, 3)).astype(np.float32)


def test_full_parameter_count_matches_algoperf():
  assert _count(_shapes(model.ViT(), 224)) == 22_122_472


def test_full_parameter_tree_has_algoperf_layout():
  shapes = _shapes(model.ViT(), 224)
  assert set(shapes) == {"conv_patch_extract", "Transformer", "pre_logits", "head"}
  assert shapes["conv_patch_extract"]["kernel"].shape == (16, 16, 3, 384)
  encoder = shapes["Transformer"]
  assert set(encoder) == {f"encoderblock_{i}" for i in range(12)} | {"encoder_layernorm"}
  block = encoder["encoderblock_11"]
  assert set(block) == {"LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2",
                        "MlpBlock_3"}
  attention = block["MultiHeadDotProductAttention_1"]
  assert set(attention) == {"query", "key", "value", "out"}
  assert attention["query"]["kernel"].shape == (384, 6, 64)
  assert attention["out"]["kernel"].shape == (6, 64, 384)
  assert block["MlpBlock_3"]["Dense_0"]["kernel"].shape == (384, 1536)
  assert block["MlpBlock_3"]["Dense_1"]["kernel"].shape == (1536, 384)
  assert shapes["pre_logits"]["kernel"].shape == (384, 384)
  assert shapes["head"]["kernel"].shape == (384, 1000)


def test_small_model_is_small():
  assert _count(_shapes(model.ViT(**SMALL), 32)) == 217_226


def test_initialisation():
  vit = model.ViT(**TINY)
  params = vit.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
  assert not np.any(params["head"]["kernel"]) and not np.any(params["head"]["bias"])
  mlp = params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]
  assert 0 < np.abs(mlp["bias"]).max() < 1e-4  # N(0, 1e-6), not zeros
  # Xavier-uniform: bound sqrt(6 / (fan_in + fan_out)).
  bound = np.sqrt(6 / (64 + 256))
  assert bound * 0.9 < np.abs(mlp["kernel"]).max() <= bound
  query = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]["query"]
  assert np.abs(query["kernel"]).max() <= np.sqrt(6 / (64 + 64))
  assert not np.any(query["bias"])


def test_outputs_match_algoperf_golden_values():
  # Computed with AlgoPerf's imagenet_vit JAX ViT (S/16) on the same weights
  # and images; the parameter trees are identical.
  vit = model.ViT()
  params = _golden_params(_shapes(vit, 224))
  logits = np.asarray(jax.jit(lambda p, x: vit.apply({"params": p}, x, train=False))(
      params, _golden_images()))
  assert logits.shape == (2, 1000)
  np.testing.assert_allclose(
      logits[:, :4], GOLDEN_LOGITS, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits.sum(1), GOLDEN_SUMS, rtol=1e-4, atol=1e-3)


def test_position_embeddings_closed_form():
  pe = model.posemb_sincos_2d(3, 5, 16)
  assert pe.shape == (1, 15, 16)
  token = 2 * 5 + 3  # row 2, column 3
  omega = 10_000.0 ** -(np.arange(4) / 3)
  np.testing.assert_allclose(
      pe[0, token],
      np.concatenate([np.sin(3 * omega), np.cos(3 * omega),
                      np.sin(2 * omega), np.cos(2 * omega)]),
      rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="divisible by 4"):
    model.posemb_sincos_2d(2, 2, 6)


def test_dropout_only_in_training_and_rate_may_be_traced():
  vit = model.ViT(**TINY)
  x = jnp.asarray(_golden_images(2, 32))
  params = _golden_params(_shapes(vit, 32))
  rngs = {"dropout": jax.random.key(3)}

  def run(train, rate):  # ``rate`` is a Python value, closed over.
    return jax.jit(lambda: vit.apply({"params": params}, x, train=train,
                                     dropout_rate=rate, rngs=rngs))()

  np.testing.assert_allclose(run(True, 0.0), run(False, 0.5), atol=1e-6)
  dropped = run(True, 0.3)
  assert not np.allclose(dropped, run(False, 0.3), atol=1e-3)
  traced = jax.jit(lambda rate: vit.apply({"params": params}, x, train=True,
                                          dropout_rate=rate, rngs=rngs))(0.3)
  np.testing.assert_allclose(traced, dropped, atol=1e-5)


def test_logits_do_not_depend_on_batch_mates():
  vit = model.ViT(**TINY)
  params = _golden_params(_shapes(vit, 32))
  x = _golden_images(3, 32)
  apply = jax.jit(lambda x: vit.apply({"params": params}, x, train=False))
  np.testing.assert_allclose(apply(x[:1])[0], apply(x)[0], atol=1e-5)
