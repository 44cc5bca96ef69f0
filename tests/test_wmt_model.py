"""Tests of the WMT Transformer: AlgoPerf's layout, golden values, masks, cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from workloads.wmt import decode, model

TINY = model.TransformerConfig(vocab_size=64, emb_dim=32, num_heads=4, num_layers=2,
                               qkv_dim=32, mlp_dim=48, max_len=16)


def _shapes(config: model.TransformerConfig):
  return jax.eval_shape(
      lambda key: model.init_params(model.Transformer(config), key),
      jax.random.key(0))


def golden_params(config: model.TransformerConfig, seed: int = 5678):
  """Weights drawn with numpy (JAX-version proof), about unit-scale logits."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(_shapes(config), sep="/")
  params = {}
  for path in sorted(flat):
    shape = flat[path].shape
    values = rng.standard_normal(shape, dtype=np.float32)
    if path.endswith("embedding"):
      params[path] = values
    elif path.endswith("scale"):
      params[path] = 1.0 + 0.1 * values
    elif path.endswith("bias"):
      params[path] = 0.1 * values
    else:  # kernels: fan-in is the first axis (out: heads x head_dim)
      fan_in = shape[0] * (shape[1] if path.endswith("out/kernel") else 1)
      params[path] = values / np.sqrt(fan_in)
  return traverse_util.unflatten_dict(params, sep="/")


def golden_batch(config: model.TransformerConfig, batch: int, length: int,
                 seed: int = 1234) -> dict[str, np.ndarray]:
  """Rows of random ids (3..vocab) followed by padding, drawn with numpy.

  Source rows get shorter down the batch and target rows longer, so rows
  mix full, padded and short sequences.
  """
  rng = np.random.default_rng(seed)
  ids = {}
  for key in ("inputs", "targets"):
    lengths = np.linspace(length, 2, batch).astype(int)
    lengths = lengths if key == "inputs" else lengths[::-1]
    values = rng.integers(3, config.vocab_size, (batch, length)).astype(np.int32)
    ids[key] = np.where(np.arange(length) < lengths[:, None], values, 0)
  return ids


def _apply(config, params, batch, **kwargs):
  return model.Transformer(config).apply(
      {"params": params}, **model.batch_arguments(batch), **kwargs)


@jax.jit
def _evaluate(params, batch):
  """Evaluation logits of the TINY model (one compile per batch shape)."""
  return _apply(TINY, params, batch, train=False)


def test_full_parameter_count_matches_algoperf():
  shapes = _shapes(model.TransformerConfig())
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 133_521_408


def test_small_variant_is_the_same_code_with_smaller_widths():
  shapes = _shapes(model.SMALL)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 198_912
  full = _shapes(model.FULL)
  for side, block in (("encoder", "encoderblock_1"),
                      ("decoder", "encoderdecoderblock_1")):
    assert jax.tree.structure(shapes[side][block]) == jax.tree.structure(
        full[side][block])
  assert set(shapes["encoder"]) < set(full["encoder"])


def test_full_parameter_tree_has_algoperf_layout():
  shapes = _shapes(model.TransformerConfig())
  assert set(shapes) == {"shared_embedding", "encoder", "decoder"}
  assert shapes["shared_embedding"]["embedding"].shape == (32_000, 1024)
  assert set(shapes["encoder"]) == {f"encoderblock_{i}" for i in range(6)} | {
      "encoder_layernorm"}
  assert set(shapes["decoder"]) == {f"encoderdecoderblock_{i}" for i in range(6)} | {
      "encoderdecoder_layernorm"}
  block = shapes["decoder"]["encoderdecoderblock_5"]
  assert set(block) == {"LayerNorm_0", "LayerNorm_1", "LayerNorm_2", "MlpBlock_0",
                        "MultiHeadDotProductAttention_0",
                        "MultiHeadDotProductAttention_1"}
  attention = block["MultiHeadDotProductAttention_1"]
  assert set(attention) == {"query", "key", "value", "out"}  # no biases
  assert set(attention["query"]) == {"kernel"}
  assert attention["query"]["kernel"].shape == (1024, 16, 64)
  assert attention["out"]["kernel"].shape == (16, 64, 1024)
  mlp = shapes["encoder"]["encoderblock_0"]["MlpBlock_0"]
  assert mlp["Dense_0"]["kernel"].shape == (1024, 1024)
  assert mlp["Dense_1"]["bias"].shape == (1024,)


def test_initialisation_is_algoperf_s():
  params = jax.jit(lambda key: model.init_params(model.Transformer(TINY), key))(
      jax.random.key(0))
  assert float(jnp.std(params["shared_embedding"]["embedding"])) == pytest.approx(
      1.0, rel=0.05)
  mlp = params["encoder"]["encoderblock_0"]["MlpBlock_0"]
  limit = np.sqrt(6 / (32 + 48))  # Xavier uniform
  assert float(jnp.abs(mlp["Dense_0"]["kernel"]).max()) <= limit
  assert float(jnp.abs(mlp["Dense_0"]["kernel"]).max()) > 0.9 * limit
  assert float(jnp.abs(mlp["Dense_0"]["bias"]).max()) < 1e-5
  layer_norm = params["decoder"]["encoderdecoder_layernorm"]
  np.testing.assert_array_equal(layer_norm["scale"], 1.0)


def test_outputs_match_algoperf_golden_values():
  # Computed with AlgoPerf's wmt_jax models.Transformer (commit 2c90454f) on
  # the same numpy weights and ids; the parameter trees are identical.
  params = golden_params(TINY)
  batch = golden_batch(TINY, 3, 16)
  logits = np.asarray(_evaluate(params, batch))
  assert logits.shape == (3, 16, 64)
  np.testing.assert_allclose(logits[:, 0, :4], GOLDEN_FIRST_LOGITS, atol=1e-5)
  np.testing.assert_allclose(logits.sum(axis=(1, 2)), GOLDEN_ROW_SUMS, rtol=1e-5,
                             atol=1e-3)


def test_packed_outputs_match_algoperf_golden_values():
  params = golden_params(TINY)
  packed = _packed_batch()
  logits = np.asarray(_evaluate(params, packed))
  np.testing.assert_allclose(logits[0, [0, 5, 9], :3], GOLDEN_PACKED_LOGITS, atol=1e-5)


GOLDEN_FIRST_LOGITS = [[0.1343669, 0.46638, 0.0768669, -0.3494568],
                       [0.6233095, 0.7349516, -0.2589349, -0.5397248],
                       [0.2852439, -0.0658054, 0.2013586, -0.667906]]
GOLDEN_ROW_SUMS = [120.31774, 186.62906, 111.83205]
GOLDEN_PACKED_LOGITS = [[0.3730102, 0.8966092, 0.0994081],
                        [0.1254503, 1.460558, -0.6957923],
                        [-1.0606087, 1.7011744, -0.0591367]]


def _packed_batch() -> dict[str, np.ndarray]:
  """One row holding two pairs (5 + 4 source, 3 + 6 target tokens)."""
  rng = np.random.default_rng(99)
  inputs = np.zeros((1, 16), np.int32)
  targets = np.zeros((1, 16), np.int32)
  inputs[0, :9] = rng.integers(3, 64, 9)
  targets[0, :9] = rng.integers(3, 64, 9)
  inputs_segmentation = np.zeros((1, 16), np.int32)
  inputs_segmentation[0, :5], inputs_segmentation[0, 5:9] = 1, 2
  targets_segmentation = np.zeros((1, 16), np.int32)
  targets_segmentation[0, :3], targets_segmentation[0, 3:9] = 1, 2
  inputs_position = np.zeros((1, 16), np.int32)
  inputs_position[0, :9] = np.r_[np.arange(5), np.arange(4)]
  targets_position = np.zeros((1, 16), np.int32)
  targets_position[0, :9] = np.r_[np.arange(3), np.arange(6)]
  return {"inputs": inputs, "targets": targets,
          "inputs_segmentation": inputs_segmentation,
          "targets_segmentation": targets_segmentation,
          "inputs_position": inputs_position, "targets_position": targets_position}


def _segment(packed: dict[str, np.ndarray], side_slices) -> dict[str, np.ndarray]:
  """The pair at ``side_slices`` of a packed row, alone and padded to 16."""
  alone = {}
  for key, part in zip(("inputs", "targets"), side_slices, strict=True):
    row = np.zeros((1, 16), np.int32)
    values = packed[key][0, part]
    row[0, : len(values)] = values
    alone[key] = row
  return alone


def test_packed_pairs_attend_only_within_their_segment():
  params = golden_params(TINY)
  packed = _packed_batch()
  model_ = model.Transformer(TINY)
  encode = model.Transformer.encode
  encoded = model_.apply({"params": params}, packed["inputs"],
                         packed["inputs_position"], packed["inputs_segmentation"],
                         method=encode)
  for part in (slice(0, 5), slice(5, 9)):
    alone = _segment(packed, (part, part))
    encoded_alone = model_.apply({"params": params}, alone["inputs"], method=encode)
    np.testing.assert_allclose(encoded[0, part],
                               encoded_alone[0, : part.stop - part.start], atol=1e-5)
  logits = _evaluate(params, packed)
  first = _evaluate(params, _segment(packed, (slice(0, 5), slice(0, 3))))
  np.testing.assert_allclose(logits[0, :3], first[0, :3], atol=1e-5)


def test_second_packed_pair_sees_the_first_only_through_the_shifted_token():
  # As in AlgoPerf, targets are shifted right across the whole row, so the
  # second pair's decoder starts from the first pair's last token, not 0.
  params = golden_params(TINY)
  packed = _packed_batch()
  changed = {k: v.copy() for k, v in packed.items()}
  changed["inputs"][0, :5] = (changed["inputs"][0, :5] + 7) % 61 + 3
  changed["targets"][0, :2] = (changed["targets"][0, :2] + 7) % 61 + 3
  logits = _evaluate(params, packed)
  np.testing.assert_allclose(logits[0, 3:9],
                             _evaluate(params, changed)[0, 3:9],
                             atol=1e-5)
  changed["targets"][0, 2] = changed["targets"][0, 2] % 61 + 4
  assert not np.allclose(logits[0, 3], _evaluate(params, changed)[0, 3])


def test_padding_does_not_change_real_positions():
  params = golden_params(TINY)
  batch = golden_batch(TINY, 3, 16)
  logits = _evaluate(params, batch)
  shorter = {k: v[:, :12] for k, v in batch.items()}  # row 1 keeps all 9 ids
  np.testing.assert_allclose(logits[1, :9],
                             _evaluate(params, shorter)[1, :9],
                             atol=1e-5)


def test_dropout_only_in_training_and_rate_may_be_traced():
  params = golden_params(TINY)
  batch = golden_batch(TINY, 2, 16)
  train = jax.jit(lambda rate: _apply(TINY, params, batch, train=True,
                                      dropout_rate=rate,
                                      rngs={"dropout": jax.random.key(3)}))
  evaluated = _evaluate(params, batch)
  # One compile serves every rate; a (traced) rate of 0 keeps every unit.
  np.testing.assert_allclose(train(0.0), evaluated, atol=1e-6)
  dropped = train(0.1)
  assert not np.allclose(dropped, evaluated, atol=1e-3)
  np.testing.assert_allclose(dropped, train(0.1), atol=0)  # same key, same masks


def test_cached_decoding_matches_teacher_forcing():
  params = golden_params(TINY)
  batch = golden_batch(TINY, 3, 16)
  logits = _evaluate(params, batch)
  transformer = model.Transformer(TINY)
  decoder = model.Transformer(TINY, decode=True)
  encoded = transformer.apply({"params": params}, batch["inputs"],
                              method=model.Transformer.encode)
  cache = jax.jit(decoder.init)(jax.random.key(0), batch["inputs"],
                                batch["targets"])["cache"]

  @jax.jit
  def step(cache, previous):
    return decoder.apply(
        {"params": params, "cache": cache}, encoded, batch["inputs"], previous,
        mutable=["cache"], method=model.Transformer.decode_logits)

  previous = np.zeros((3, 1), np.int32)
  for position in range(16):
    step_logits, variables = step(cache, previous)
    cache = variables["cache"]
    # Teacher-forced positions see only real targets before them; compare
    # where the target itself is real (past the end, the mask differs).
    real = batch["targets"][:, position] > 0
    np.testing.assert_allclose(step_logits[real, 0], logits[real, position],
                               atol=1e-4)
    previous = batch["targets"][:, position : position + 1]


def test_sinusoidal_table():
  table = model.sinusoidal_table(8, 6)
  frequencies = np.exp(-np.log(1e4) * np.arange(3) / 2)
  np.testing.assert_allclose(table[5, :3], np.sin(5 * frequencies), rtol=1e-6)
  np.testing.assert_allclose(table[5, 3:], np.cos(5 * frequencies), rtol=1e-6)
  assert np.all(model.sinusoidal_table(4, 7)[:, 6] == 0)


@pytest.mark.slow  # about 40 s and 2 GB on 2 CPU cores
def test_full_model_takes_a_training_step_and_translates_on_cpu():
  transformer = model.Transformer(model.FULL)
  params = jax.jit(lambda key: model.init_params(transformer, key, 1, 32))(
      jax.random.key(0))
  batch = golden_batch(model.FULL, 2, 32)
  weights = (batch["targets"] > 0).astype(np.float32)

  def loss(p):
    logits = transformer.apply({"params": p}, **model.batch_arguments(batch),
                               train=True, rngs={"dropout": jax.random.key(1)})
    log_probs = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
    return -(picked * weights).sum() / weights.sum()

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  # An untrained model is near uniform over 32k pieces.
  assert abs(float(value) - np.log(32_000)) < 2.0
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  ids = jax.jit(lambda p, x: decode.translate(transformer, p, x, max_decode_len=6))(
      params, batch["inputs"])
  assert ids.shape == (2, 5)
