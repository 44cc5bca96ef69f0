"""Tests of the criteo1tb DLRM-small model.

The full 4,194,304 x 128 table (2.15 GB) is never materialised: its shapes
come from `jax.eval_shape`, and tests that run the full architecture use a
reduced vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from workloads.criteo1tb import model

REDUCED_VOCAB = 4096


def _param_shapes(net: model.DlrmSmall):
  return jax.eval_shape(
      lambda key: net.init({"params": key}, jnp.ones((2, 39)), train=False),
      jax.random.key(0))["params"]


def _golden_inputs() -> np.ndarray:
  """Four rows of AlgoPerf inputs drawn with numpy (JAX-version proof)."""
  rng = np.random.default_rng(1234)
  dense = np.log1p(rng.integers(0, 1000, (4, 13))).astype(np.float32)
  buckets = rng.integers(0, 39_884_406, (4, 26)).astype(np.float32)
  return np.concatenate([dense, buckets], axis=1)


def _golden_params(shapes):
  rng = np.random.default_rng(5678)

  def make(path, leaf):
    values = rng.uniform(-1, 1, leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == "kernel":
      return values / np.sqrt(leaf.shape[0])
    if name == "bias":
      return values * 0.1
    return values  # embedding_table

  return jax.tree_util.tree_map_with_path(make, shapes)


def test_full_parameter_count_and_tree():
  shapes = _param_shapes(model.DlrmSmall())
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 539_267_457
  assert shapes["embedding_table"].shape == (4_194_304, 128)
  assert shapes["embedding_table"].size == 536_870_912
  kernels = {name: shapes[name]["kernel"].shape for name in shapes if name != "embedding_table"}
  assert kernels == {
      "Dense_0": (13, 512), "Dense_1": (512, 256), "Dense_2": (256, 128),
      # 128 bottom outputs + 27 * 28 / 2 = 378 dot products.
      "Dense_3": (506, 1024), "Dense_4": (1024, 1024), "Dense_5": (1024, 512),
      "Dense_6": (512, 256), "Dense_7": (256, 1),
  }


def test_small_widths():
  shapes = _param_shapes(model.DlrmSmall(**model.SMALL_WIDTHS))
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 191_889
  assert shapes["Dense_2"]["kernel"].shape == (16 + 27 * 28 // 2, 128)


def test_outputs_match_algoperf_golden_values():
  # Computed with AlgoPerf's criteo1tb_jax models.DlrmSmall(vocab_size=4096) on
  # the same weights and inputs (bit-identical on CPU, as were its init,
  # dropout masks and gradients); the parameter trees are identical.
  net = model.DlrmSmall(vocab_size=REDUCED_VOCAB)
  params = _golden_params(_param_shapes(net))
  inputs = _golden_inputs()
  logits = net.apply({"params": params}, inputs, train=False)
  assert logits.shape == (4, 1)
  np.testing.assert_allclose(
      logits[:, 0], [0.23036689, 0.17680503, 0.24518263, 0.21377774], atol=1e-5)
  dropped = net.apply({"params": params}, inputs, train=True, dropout_rate=0.5,
                      rngs={"dropout": jax.random.PRNGKey(0)})
  np.testing.assert_allclose(
      dropped[:, 0], [0.36238727, 0.17340127, 0.14585786, 0.42393458], atol=1e-5)


def test_init_is_algoperf_initialisation():
  net = model.DlrmSmall(vocab_size=REDUCED_VOCAB)
  params = net.init({"params": jax.random.key(0)}, jnp.ones((2, 39)), train=False)["params"]
  table = np.asarray(params["embedding_table"])
  # U[0, 1) / sqrt(vocab).
  assert table.min() >= 0 and table.max() < 1 / 64
  assert abs(table.mean() - 0.5 / 64) < 1e-4
  kernel = np.asarray(params["Dense_1"]["kernel"])  # Glorot uniform
  assert np.abs(kernel).max() <= np.sqrt(6 / (512 + 256))
  top = np.asarray(params["Dense_4"]["kernel"])  # N(0, 2 / (fan_in + fan_out))
  assert abs(top.std() - np.sqrt(2 / 2048)) < 1e-3
  bias = np.asarray(params["Dense_4"]["bias"])  # N(0, 1 / fan_out)
  assert 0.02 < bias.std() < 0.04


def test_dot_interact_is_the_upper_triangle_with_diagonal():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 5, 3)).astype(np.float32)
  out = np.asarray(model.dot_interact(jnp.asarray(features)))
  expected = [
      [features[b, i] @ features[b, j] for i in range(5) for j in range(i, 5)]
      for b in range(2)
  ]
  np.testing.assert_allclose(out, expected, rtol=1e-5)
  assert model.dot_interact(jnp.zeros((1, 27, 4))).shape == (1, 378)


def _numpy_dlrm(params, inputs, vocab_size, embed_dim):
  """DLRM-small written out in numpy (bottom MLP of 2 layers, top of 3)."""
  p = jax.tree.map(np.asarray, params)

  def dense(x, name):
    return x @ p[name]["kernel"] + p[name]["bias"]

  x = np.maximum(dense(inputs[:, :13], "Dense_0"), 0)
  bottom = np.maximum(dense(x, "Dense_1"), 0)
  rows = inputs[:, 13:].astype(np.int64) % vocab_size
  vectors = np.concatenate(
      [bottom.reshape(len(inputs), -1, embed_dim), p["embedding_table"][rows]], 1)
  pairs = np.stack([
      np.array([vectors[b, i] @ vectors[b, j]
                for i in range(vectors.shape[1]) for j in range(i, vectors.shape[1])])
      for b in range(len(inputs))
  ])
  x = np.concatenate([bottom, pairs], 1)
  x = np.maximum(dense(x, "Dense_2"), 0)
  x = np.maximum(dense(x, "Dense_3"), 0)
  return dense(x, "Dense_4")


def test_small_model_matches_numpy():
  net = model.DlrmSmall(**model.SMALL_WIDTHS)
  inputs = _golden_inputs()
  params = net.init({"params": jax.random.key(1)}, inputs, train=False)["params"]
  np.testing.assert_allclose(
      net.apply({"params": params}, inputs, train=False),
      _numpy_dlrm(params, inputs, 8192, 16), rtol=1e-4, atol=1e-5)


def test_bucket_ids_wrap_modulo_the_table():
  net = model.DlrmSmall(vocab_size=REDUCED_VOCAB)
  inputs = _golden_inputs()
  params = net.init({"params": jax.random.key(0)}, inputs, train=False)["params"]
  wrapped = inputs.copy()
  wrapped[:, 13:] = inputs[:, 13:] % REDUCED_VOCAB
  np.testing.assert_array_equal(
      net.apply({"params": params}, inputs, train=False),
      net.apply({"params": params}, wrapped, train=False))


def test_dropout_only_in_training_and_rate_may_be_traced():
  net = model.DlrmSmall(**model.SMALL_WIDTHS)
  inputs = _golden_inputs()
  params = net.init({"params": jax.random.key(0)}, inputs, train=False)["params"]
  rngs = {"dropout": jax.random.key(3)}

  def run(train, rate):
    return net.apply({"params": params}, inputs, train=train, dropout_rate=rate, rngs=rngs)

  evaluated = run(False, 0.5)
  np.testing.assert_array_equal(run(True, 0.0), evaluated)
  np.testing.assert_array_equal(run(True, None), evaluated)
  dropped = run(True, 0.5)
  assert not np.allclose(dropped, evaluated)
  traced = jax.jit(lambda rate: run(True, rate))(0.5)
  np.testing.assert_allclose(traced, dropped, rtol=1e-5)


def test_bottom_output_must_split_into_embeddings():
  net = model.DlrmSmall(vocab_size=16, mlp_bottom_dims=(8, 12), embed_dim=8)
  with pytest.raises(ValueError, match="multiple of embed_dim"):
    net.init({"params": jax.random.key(0)}, jnp.ones((2, 39)), train=False)


def test_full_architecture_trains_at_a_reduced_vocabulary():
  net = model.DlrmSmall(vocab_size=REDUCED_VOCAB)
  inputs = np.concatenate([_golden_inputs()] * 2)
  targets = np.array([1, 0, 0, 1, 0, 0, 0, 1], np.float32)
  params = net.init({"params": jax.random.key(0)}, inputs, train=False)["params"]
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state):
    def loss(p):
      logits = net.apply({"params": p}, inputs, train=True, dropout_rate=0.1,
                         rngs={"dropout": jax.random.key(0)})
      return optax.sigmoid_binary_cross_entropy(logits[:, 0], targets).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  opt_state = optimizer.init(params)
  losses = []
  for _ in range(4):
    params, opt_state, value = step(params, opt_state)
    losses.append(float(value))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  # Only the looked-up rows of the table move.
  touched = np.unique(inputs[:, 13:].astype(np.int64) % REDUCED_VOCAB)
  table = np.asarray(params["embedding_table"])
  initial = np.asarray(net.init({"params": jax.random.key(0)}, inputs,
                                train=False)["params"]["embedding_table"])
  moved = np.flatnonzero(np.any(table != initial, axis=1))
  np.testing.assert_array_equal(moved, touched)
