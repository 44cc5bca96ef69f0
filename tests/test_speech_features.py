"""The log-mel front end and SpecAugment (kit.speech_features)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg.kit import speech_features as features


def test_mel_weights_equal_tensorflows():
  import tensorflow as tf

  ours = features.mel_weights(80, 257, 16_000.0, 125.0, 7_600.0)
  theirs = tf.signal.linear_to_mel_weight_matrix(80, 257, 16_000, 125.0, 7_600.0).numpy()
  np.testing.assert_allclose(ours, theirs, atol=5e-5)


def test_a_tone_lights_the_mel_bin_of_its_frequency():
  config = features.FrontendConfig()
  n = 16_000
  tone = 8_000 * np.sin(2 * np.pi * 1_000.0 * np.arange(n) / 16_000)
  logmel, paddings = features.log_mel(jnp.asarray(tone[None], jnp.float32),
                                      jnp.zeros((1, n)), config, mean=None, std=None)
  assert logmel.shape == (1, config.num_frames(n), 80) == (1, 98, 80)
  weights = features.mel_weights(80, 257, 16_000.0, 125.0, 7_600.0)
  assert int(np.argmax(logmel[0].mean(axis=0))) == int(np.argmax(weights[32]))  # 1 kHz bin
  assert float(paddings.sum()) == 0.0


def test_padded_samples_are_ignored_and_frames_padded_when_all_padding():
  n = 8_000
  rng = np.random.default_rng(0)
  audio = rng.normal(0, 1_000, (1, n)).astype(np.float32)
  paddings = np.zeros((1, n), np.float32)
  paddings[0, 5_000:] = 1
  noisy = audio.copy()
  noisy[0, 5_000:] = 30_000  # padded samples must not matter
  a, pa = features.log_mel(jnp.asarray(audio), jnp.asarray(paddings))
  b, pb = features.log_mel(jnp.asarray(noisy), jnp.asarray(paddings))
  np.testing.assert_allclose(a, b, atol=1e-6)
  # A frame (401 samples every 160) is padding iff it starts at or after 5,000.
  starts = np.arange(pa.shape[1]) * 160
  np.testing.assert_array_equal(np.asarray(pa[0]), (starts >= 5_000).astype(np.float32))
  np.testing.assert_array_equal(pa, pb)


def test_spec_augment_masks_bounded_bands():
  features_ = jnp.ones((4, 200, 80))
  paddings = jnp.zeros((4, 200)).at[3, 100:].set(1.0)
  out = np.asarray(features.spec_augment(jax.random.key(0), features_, paddings))
  zero_bins = (out == 0).all(axis=1)  # whole frequency bins masked
  assert (zero_bins.sum(axis=1) <= 2 * 27).all() and zero_bins.sum() > 0
  frames = (out == 0).all(axis=2)
  lengths = np.array([200, 200, 200, 100])
  assert (frames.sum(axis=1) <= 10 * np.maximum(0.05 * lengths, 1)).all()
  assert not np.array_equal(out[0], out[1])  # each utterance draws its own masks
