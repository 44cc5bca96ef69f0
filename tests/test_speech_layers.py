"""The speech models' shared layers (kit.speech_layers), checked against closed forms.

Both LibriSpeech models are built from these; their own tests pin the
models' trees and golden outputs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algoperf_avg.kit import speech_layers


def _frames(seed=0, shape=(3, 7, 4)):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32) * 2 + 1
  paddings = np.zeros(shape[:2], np.float32)
  paddings[1, 4:] = 1
  paddings[2, 2:] = 1
  return x, paddings


def _moved(variables, seed=1):
  """Every variable moved off its initial value (running variances kept positive)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: (jnp.abs(p) + 0.5 if path[-1].key == "var"
                       else p + 0.3 * jax.random.normal(jax.random.key(seed), p.shape)),
      variables)


def test_batch_norm_statistics_are_those_of_the_valid_frames_only():
  x, paddings = _frames()
  norm = speech_layers.BatchNorm(4, momentum=0.9, epsilon=1e-3)
  variables = norm.init(jax.random.key(0), x, paddings, use_running_average=True)
  noisy = np.where(paddings[..., None] > 0, 1e4, x)  # padded values must not count
  y, state = norm.apply(variables, noisy, paddings, use_running_average=False, update=True,
                        mutable=["batch_stats"])
  valid = x[paddings == 0]
  mean, var = valid.mean(axis=0), valid.var(axis=0)
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
  expected = (x - mean) / np.sqrt(var + 1e-3) * (1 - paddings)[..., None]
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
  # Running averages: the stored statistics, nothing updated.
  y, state = norm.apply(variables, x, paddings, use_running_average=True,
                        mutable=["batch_stats"])
  np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3) * (1 - paddings)[..., None],
                             rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, state["batch_stats"],
               variables["batch_stats"])


@pytest.mark.parametrize("use_running_average", [True, False])
def test_batch_norm_applies_one_plus_scale_and_bias_with_its_epsilon(use_running_average):
  x, paddings = _frames()
  epsilon = 0.5  # large, so that using another epsilon shows
  norm = speech_layers.BatchNorm(4, epsilon=epsilon)
  variables = _moved(norm.init(jax.random.key(0), x, paddings, use_running_average=True))
  params, stats = variables["params"], variables["batch_stats"]
  y = norm.apply(variables, x, paddings, use_running_average=use_running_average)
  if use_running_average:
    mean, var = stats["mean"], stats["var"]
  else:
    valid = x[paddings == 0]
    mean, var = valid.mean(axis=0), valid.var(axis=0)
  expected = ((x - mean) / np.sqrt(var + epsilon) * (1 + params["scale"]) + params["bias"])
  np.testing.assert_allclose(y, expected * (1 - paddings)[..., None], rtol=1e-5, atol=1e-5)


def test_batch_norm_padded_frames_change_no_valid_output_and_no_statistic():
  x, paddings = _frames()
  norm = speech_layers.BatchNorm(4, momentum=0.99)
  variables = _moved(norm.init(jax.random.key(0), x, paddings, use_running_average=True))
  other = np.where(paddings[..., None] > 0,
                   np.random.default_rng(5).standard_normal(x.shape) * 100, x)
  outputs = [norm.apply(variables, inputs, paddings, use_running_average=False, update=True,
                        mutable=["batch_stats"]) for inputs in (x, other)]
  (y, state), (y_other, state_other) = outputs
  np.testing.assert_allclose(y, y_other, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(y[paddings > 0]).sum()) == 0.0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), state, state_other)
  # Without ``update`` the batch statistics normalise but are not stored.
  _, kept = norm.apply(variables, x, paddings, use_running_average=False,
                       mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, kept["batch_stats"], variables["batch_stats"])


def test_batch_norm_of_an_all_padded_batch_is_zero_and_finite():
  x, _ = _frames()
  norm = speech_layers.BatchNorm(4)
  paddings = np.ones(x.shape[:2], np.float32)
  variables = norm.init(jax.random.key(0), x, paddings, use_running_average=True)
  y, state = norm.apply(variables, x, paddings, use_running_average=False, update=True,
                        mutable=["batch_stats"])
  np.testing.assert_array_equal(y, 0.0)
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.0)
  np.testing.assert_allclose(state["batch_stats"]["var"], 0.999, rtol=1e-6)


def test_layer_norm_starts_as_plain_normalisation():
  x, _ = _frames()
  norm = speech_layers.LayerNorm(4)
  variables = norm.init(jax.random.key(0), x)
  assert sorted(variables["params"]) == ["bias", "scale"]
  assert float(jnp.abs(variables["params"]["scale"]).sum()) == 0.0
  expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(norm.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


def test_layer_norm_multiplies_by_one_plus_scale():
  x, _ = _frames()
  norm = speech_layers.LayerNorm(4, epsilon=0.1)
  scale = np.array([-1.0, 0.0, 1.0, 2.0], np.float32)
  bias = np.array([0.5, -0.5, 0.0, 3.0], np.float32)
  y = norm.apply({"params": {"scale": scale, "bias": bias}}, x)
  normalised = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 0.1)
  np.testing.assert_allclose(y, normalised * (1 + scale) + bias, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y[..., 0], 0.5, rtol=1e-6)  # scale -1: only the bias left


def _reference_subsampling(x_BxTxFxC, kernel, bias, paddings_BxT):
  """3x3 stride-2 "SAME" convolution + bias, ReLU, padded frames zeroed, in numpy loops."""
  batch, time, bins, _ = x_BxTxFxC.shape
  out_time, out_bins = -(-time // 2), -(-bins // 2)
  # "SAME" with stride 2: pad (total) so the last window fits, one less before than after.
  before_t = max((out_time - 1) * 2 + 3 - time, 0) // 2
  before_f = max((out_bins - 1) * 2 + 3 - bins, 0) // 2
  padded = np.pad(x_BxTxFxC, [(0, 0), (before_t, 2), (before_f, 2), (0, 0)])
  y = np.zeros((batch, out_time, out_bins, kernel.shape[-1]), np.float64)
  for t in range(out_time):
    for f in range(out_bins):
      window = padded[:, 2 * t:2 * t + 3, 2 * f:2 * f + 3, :]
      y[:, t, f] = np.einsum("bhwi,hwio->bo", window, kernel)
  out_paddings = paddings_BxT[:, ::2]
  return np.maximum(y + bias, 0) * (1 - out_paddings)[:, :, None, None], out_paddings


@pytest.mark.parametrize("time,bins", [(7, 6), (8, 5)])
def test_subsampling_is_a_stride_two_convolution_that_halves_the_paddings(time, bins):
  x, paddings = _frames(shape=(3, time, 2))
  images = np.random.default_rng(1).standard_normal((3, time, bins, 2)).astype(np.float32)
  subsample = speech_layers.Conv2dSubsampling(2, 5)
  variables = _moved(subsample.init(jax.random.key(0), images, paddings))
  assert variables["params"]["kernel"].shape == (3, 3, 2, 5)
  y, y_paddings = subsample.apply(variables, images, paddings)
  expected, expected_paddings = _reference_subsampling(
      images, np.asarray(variables["params"]["kernel"]),
      np.asarray(variables["params"]["bias"]), paddings)
  assert y.shape == expected.shape == (3, (time + 1) // 2, (bins + 1) // 2, 5)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(y_paddings, expected_paddings)
  # Valid lengths 7/4/2 (or 8/4/2) become ceil(length / 2).
  lengths = (1 - paddings).sum(axis=1)
  np.testing.assert_array_equal((1 - y_paddings).sum(axis=1), np.ceil(lengths / 2))
  assert float(jnp.abs(y[y_paddings > 0]).sum()) == 0.0 and float(jnp.abs(y).sum()) > 0


def test_sinusoids_are_sines_then_cosines_of_geometric_timescales():
  signal = speech_layers.sinusoids(5, 8)
  assert signal.shape == (1, 5, 8)
  np.testing.assert_allclose(signal[0, 0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
  timescales = 10_000.0 ** (np.arange(4) / 3)  # from 1 to max_timescale
  angles = np.arange(5)[:, None] / timescales
  np.testing.assert_allclose(signal[0], np.concatenate([np.sin(angles), np.cos(angles)], 1),
                             rtol=1e-5, atol=1e-6)
  odd = speech_layers.sinusoids(3, 7)
  assert odd.shape == (1, 3, 7)
  np.testing.assert_array_equal(odd[0, :, -1], 0.0)  # the odd dimension is padded


def test_subsample_tree_shapes_and_positions():
  x, paddings = _frames(shape=(3, 7, 12))
  plain = speech_layers.Subsample(6)
  variables = plain.init(jax.random.key(0), x, paddings, False, 0.0)
  params = variables["params"]
  assert sorted(params) == ["Conv2dSubsampling_0", "Conv2dSubsampling_1", "Dense_0"]
  assert params["Conv2dSubsampling_0"]["kernel"].shape == (3, 3, 1, 6)
  assert params["Conv2dSubsampling_1"]["kernel"].shape == (3, 3, 6, 6)
  assert params["Dense_0"]["kernel"].shape == (3 * 6, 6)  # 12 bins -> 6 -> 3, x channels
  y, y_paddings = plain.apply(variables, x, paddings, False, 0.0)
  assert y.shape == (3, 2, 6)
  np.testing.assert_array_equal(y_paddings, paddings[:, ::2][:, ::2])
  positioned, _ = speech_layers.Subsample(6, add_positions=True).apply(
      variables, x, paddings, False, 0.0)
  np.testing.assert_allclose(positioned - y, np.broadcast_to(speech_layers.sinusoids(2, 6),
                                                             y.shape), atol=1e-6)
  # Dropout only in training: at rate 0.5 about half the outputs are zeroed,
  # the others doubled.
  dropped, _ = plain.apply(variables, x, paddings, True, 0.5,
                           rngs={"dropout": jax.random.key(2)})
  nonzero = np.asarray(y) != 0
  kept = np.asarray(dropped)[nonzero] != 0
  assert nonzero.sum() >= 20 and 0.2 < kept.mean() < 0.8
  np.testing.assert_allclose(np.asarray(dropped)[nonzero][kept],
                             2 * np.asarray(y)[nonzero][kept], rtol=1e-5)


class _BatchNormModel(speech_layers.SpeechModel):
  """The shared model with one batch norm as its encoder (records the flags it got)."""

  def encode(self, x, paddings_BxT, train, update_batch_norm, use_running_average_bn,
             dropout_rate):
    self.sow("intermediates", "flags", (update_batch_norm, use_running_average_bn))
    return speech_layers.BatchNorm(self.config.encoder_dim)(
        x, paddings_BxT, use_running_average=use_running_average_bn,
        update=update_batch_norm)


def _tiny_model(**fields):
  config = speech_layers.SpeechModelConfig(vocab_size=5, encoder_dim=4, **fields)
  rng = np.random.default_rng(0)
  audio = (rng.standard_normal((2, 4_000)) * 3_000).astype(np.float32)
  paddings = np.zeros((2, 4_000), np.float32)
  paddings[1, 2_500:] = 1
  model = _BatchNormModel(config)
  variables = model.init({"params": jax.random.key(0)}, audio, paddings, train=False)
  return model, variables, audio, paddings


@pytest.mark.parametrize("train,update,running,expected", [
    (True, None, None, (True, False)),
    (False, None, None, (False, True)),
    (False, True, None, (True, False)),  # recomputing statistics: batch statistics
    (True, False, None, (False, False)),
    (False, None, False, (False, False)),
])
def test_speech_model_batch_norm_flags_default_as_algoperfs(train, update, running,
                                                            expected):
  model, variables, audio, paddings = _tiny_model(use_specaug=False)
  _, state = model.apply(variables, audio, paddings, train=train, update_batch_norm=update,
                         use_running_average_bn=running, dropout_rate=0.0,
                         rngs={"dropout": jax.random.key(1)},
                         mutable=["batch_stats", "intermediates"])
  assert state["intermediates"]["flags"] == (expected,)
  stored_changed = not np.allclose(state["batch_stats"]["BatchNorm_0"]["mean"],
                                   variables["batch_stats"]["BatchNorm_0"]["mean"])
  assert stored_changed == expected[0]


def test_speech_model_tree_head_and_spec_augment_only_in_training():
  model, variables, audio, paddings = _tiny_model()
  assert sorted(variables["params"]) == ["BatchNorm_0", "Dense_0", "LayerNorm_0",
                                         "Subsample_0"]
  assert variables["params"]["Dense_0"]["kernel"].shape == (4, 5)
  logits, logit_paddings = model.apply(variables, audio, paddings, train=False)
  # 4000 samples -> 23 frames -> 12 -> 6; the 2500 valid samples' 16 frames -> 8 -> 4.
  assert logits.shape == (2, 6, 5)
  np.testing.assert_array_equal((1 - np.asarray(logit_paddings)).sum(axis=1), [6, 4])

  def train_logits(**fields):
    config = dataclasses.replace(model.config, **fields)
    return _BatchNormModel(config).apply(
        variables, audio, paddings, train=True, dropout_rate=0.0,
        rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])[0][0]

  np.testing.assert_array_equal(train_logits(use_specaug=False),
                                train_logits(use_specaug=False))
  assert not np.allclose(train_logits(use_specaug=True), train_logits(use_specaug=False))
