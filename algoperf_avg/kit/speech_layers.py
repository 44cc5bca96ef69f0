"""Flax layers AlgoPerf's two LibriSpeech models share (Conformer, DeepSpeech).

Both models stack the same pieces around their encoders, with the same
parameter names and initialisers as AlgoPerf's JAX models:

* `LayerNorm`: over the last axis, eps 1e-6, applied as ``(1 + scale)`` with
  a zero-initialised ``scale`` (lingvo's convention);
* `BatchNorm`: batch norm whose statistics count only the valid (unpadded)
  frames, lingvo's defaults (momentum 0.999, eps 1e-3), the same
  ``(1 + scale)`` form, output zeroed on padded frames;
* `Conv2dSubsampling`: a 3x3 stride-2 convolution + ReLU over
  ``(time, frequency)`` that halves the frame paddings too;
* `Subsample`: two of those and a Dense to the model width (plus sinusoidal
  positions for the Conformer), then dropout;
* `SpeechModelConfig` and `SpeechModel`: the config fields both models have,
  and the model around the encoder blocks (AlgoPerf's call signature,
  features, subsampling, final LayerNorm, CTC head); each model subclasses
  both and defines its blocks in `SpeechModel.encode`.

The running statistics keep the shape ``(dim,)``; AlgoPerf's DeepSpeech
stores them as ``(1, 1, dim)`` after its first update (a broadcast), which
holds the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf_avg.kit import layers, speech_features

DROPOUT_RATE = 0.1  # AlgoPerf's default for both models
# The kernel initialiser of every Dense and convolution in both models.
XAVIER = nn.initializers.xavier_uniform()


class LayerNorm(nn.Module):
  """Layer norm over the last axis with ``(1 + scale)``; ``scale`` and ``bias`` start at 0."""

  dim: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.zeros, (self.dim,))
    bias = self.param("bias", nn.initializers.zeros, (self.dim,))
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(variance + self.epsilon) * (1 + scale) + bias


def masked_moments(x_BxTxD: jax.Array, paddings_BxT: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and (biased) variance over the frames whose padding is 0."""
  weights = (1.0 - paddings_BxT)[..., None]
  frames = jnp.maximum(jnp.sum(jnp.broadcast_to(weights, x_BxTxD.shape), axis=(0, 1)), 1.0)
  mean = jnp.sum(x_BxTxD * weights, axis=(0, 1)) / frames
  variance = jnp.sum(jnp.square(x_BxTxD - mean) * weights, axis=(0, 1)) / frames
  return mean, variance


class BatchNorm(nn.Module):
  """Padding-aware batch norm over ``(batch, time)`` for ``(B, T, dim)`` inputs.

  With ``use_running_average`` the stored ``batch_stats`` (``mean`` from 0,
  ``var`` from 1) normalise; otherwise the moments of the valid frames do,
  and with ``update`` they are folded into the stored ones as
  ``momentum * stored + (1 - momentum) * batch``.
  """

  dim: int
  momentum: float = 0.999
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, paddings_BxT: jax.Array, *,
               use_running_average: bool, update: bool = False) -> jax.Array:
    stored_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.dim,))
    stored_var = self.variable("batch_stats", "var", jnp.ones, (self.dim,))
    scale = self.param("scale", nn.initializers.zeros, (self.dim,))
    bias = self.param("bias", nn.initializers.zeros, (self.dim,))
    if use_running_average:
      mean, variance = stored_mean.value, stored_var.value
    else:
      mean, variance = masked_moments(x_BxTxD, paddings_BxT)
      if update:
        stored_mean.value = self.momentum * stored_mean.value + (1 - self.momentum) * mean
        stored_var.value = self.momentum * stored_var.value + (1 - self.momentum) * variance
    normalised = (x_BxTxD - mean) * ((1 + scale) / jnp.sqrt(variance + self.epsilon)) + bias
    return normalised * (1.0 - paddings_BxT)[..., None]


class Conv2dSubsampling(nn.Module):
  """3x3 convolution, stride 2 in time and frequency, + bias, ReLU; halves the paddings.

  A subsampled frame is padding when the input frame at its stride position
  is (AlgoPerf computes this as a 1x1 stride-2 convolution of the paddings);
  padded frames of the output are zeroed.
  """

  input_channels: int
  output_channels: int

  @nn.compact
  def __call__(self, x_BxTxFxC: jax.Array, paddings_BxT: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", XAVIER,
                        (3, 3, self.input_channels, self.output_channels))
    bias = self.param("bias", nn.initializers.zeros, (self.output_channels,))
    y = jax.lax.conv_general_dilated(x_BxTxFxC, kernel, window_strides=(2, 2),
                                     padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = nn.relu(y + bias)
    paddings = paddings_BxT[:, ::2]
    return y * (1.0 - paddings)[:, :, None, None], paddings


def sinusoids(length: int, dim: int, max_timescale: float = 10_000.0) -> np.ndarray:
  """``(1, length, dim)`` positions: sines then cosines, geometric timescales."""
  half = dim // 2
  increment = math.log(max_timescale) / max(half - 1, 1)
  inverse = np.exp(np.arange(half, dtype=np.float32) * -increment)
  angles = np.arange(length, dtype=np.float32)[:, None] * inverse[None, :]
  signal = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  return np.pad(signal, [(0, 0), (0, dim % 2)])[None].astype(np.float32)


class Subsample(nn.Module):
  """Two `Conv2dSubsampling` (4x fewer frames and bins), a Dense to the model width, dropout.

  With ``add_positions`` (the Conformer), `sinusoids` are added before the
  dropout; DeepSpeech has no position embedding.
  """

  encoder_dim: int
  add_positions: bool = False

  @nn.compact
  def __call__(self, x_BxTxF: jax.Array, paddings_BxT: jax.Array, train: bool,
               dropout_rate: float) -> tuple[jax.Array, jax.Array]:
    y, paddings = Conv2dSubsampling(1, self.encoder_dim)(x_BxTxF[..., None], paddings_BxT)
    y, paddings = Conv2dSubsampling(self.encoder_dim, self.encoder_dim)(y, paddings)
    batch, time, bins, channels = y.shape
    y = nn.Dense(self.encoder_dim, kernel_init=XAVIER)(
        y.reshape(batch, time, bins * channels))
    if self.add_positions:
      y = y + sinusoids(time, self.encoder_dim)
    return layers.Dropout()(y, dropout_rate, deterministic=not train), paddings


@dataclasses.dataclass(frozen=True)
class SpeechModelConfig:
  """The hyperparameters both models have (AlgoPerf's defaults); each model's config extends it."""

  vocab_size: int = 1024
  encoder_dim: int = 512
  batch_norm_momentum: float = 0.999
  batch_norm_epsilon: float = 0.001
  use_specaug: bool = True
  specaug: speech_features.SpecAugmentConfig = speech_features.SpecAugmentConfig()
  frontend: speech_features.FrontendConfig = speech_features.FrontendConfig()


class SpeechModel(nn.Module):
  """PCM ``(B, N)`` and paddings -> CTC logits ``(B, T, vocab)`` and frame paddings.

  AlgoPerf's call signature and what both models do around their encoder
  blocks: log-mel features, SpecAugment in training (its key from this
  module's ``dropout`` stream, as in AlgoPerf), `Subsample` (positions added
  when the class sets ``add_positions``), the subclass's `encode`, a final
  `LayerNorm` and a Dense CTC head. Batch-norm flags left as None take
  AlgoPerf's defaults: statistics update when training; running averages
  normalise only when neither training nor updating them.
  """

  config: SpeechModelConfig
  add_positions: ClassVar[bool] = False

  @nn.compact
  def __call__(self, audio_BxN: jax.Array, paddings_BxN: jax.Array, train: bool,
               update_batch_norm: bool | None = None,
               use_running_average_bn: bool | None = None,
               dropout_rate: float = DROPOUT_RATE) -> tuple[jax.Array, jax.Array]:
    config = self.config
    update_batch_norm = train if update_batch_norm is None else update_batch_norm
    if use_running_average_bn is None:
      use_running_average_bn = not (train or update_batch_norm)
    x, paddings = speech_features.log_mel(audio_BxN, paddings_BxN, config.frontend)
    if train and config.use_specaug:
      x = speech_features.spec_augment(self.make_rng("dropout"), x, paddings,
                                       config.specaug)
    x, paddings = Subsample(config.encoder_dim, self.add_positions)(x, paddings, train,
                                                                   dropout_rate)
    x = self.encode(x, paddings, train, update_batch_norm, use_running_average_bn,
                    dropout_rate)
    x = LayerNorm(config.encoder_dim)(x)
    return nn.Dense(config.vocab_size, kernel_init=XAVIER)(x), paddings

  def encode(self, x_BxTxD: jax.Array, paddings_BxT: jax.Array, train: bool,
             update_batch_norm: bool, use_running_average_bn: bool,
             dropout_rate: float) -> jax.Array:
    """The model's blocks on the subsampled frames; their modules become this module's children."""
    raise NotImplementedError
