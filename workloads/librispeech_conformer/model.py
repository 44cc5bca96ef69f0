"""AlgoPerf's Conformer for LibriSpeech (Gulati et al., 2020), in Flax.

Same modules, parameter names and initialisers as AlgoPerf's JAX model
(``librispeech_conformer/librispeech_jax/models.py``), so a key gives the
same weights: log-mel features (`kit.speech_features`), SpecAugment in
training, two 3x3 stride-2 ReLU convolutions and a Dense to the model width,
sinusoidal positions, then per block::

    x = x + 0.5 * FeedForward(x)
    x = x + SelfAttention(x)
    x = x + Convolution(x)        # GLU, depthwise conv, padding-aware batch norm
    x = x + 0.5 * FeedForward(x)
    x = LayerNorm(x)

and a final LayerNorm and Dense to the vocabulary (the CTC head). Norm scales
are stored as ``scale`` with ``1 + scale`` applied (zero init).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf_avg.kit import layers, speech_features

DROPOUT_RATE = 0.1
_xavier = nn.initializers.xavier_uniform()


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
  """Model hyperparameters (AlgoPerf's ``ConformerConfig`` defaults)."""

  vocab_size: int = 1024
  encoder_dim: int = 512
  num_attention_heads: int = 8
  num_encoder_layers: int = 4
  convolution_kernel_size: int = 5
  feed_forward_expansion_factor: int = 4
  batch_norm_momentum: float = 0.999
  batch_norm_epsilon: float = 0.001
  use_specaug: bool = True
  specaug: speech_features.SpecAugmentConfig = speech_features.SpecAugmentConfig()
  frontend: speech_features.FrontendConfig = speech_features.FrontendConfig()
  attention_temperature: float = 1.0
  use_post_layer_norm: bool = True


class LayerNorm(nn.Module):
  """Layer norm with ``(1 + scale)`` (zero-initialised scale), eps 1e-6."""

  dim: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.zeros, (self.dim,))
    bias = self.param("bias", nn.initializers.zeros, (self.dim,))
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * (1 + scale) + bias


class Conv2dSubsampling(nn.Module):
  """A 3x3 stride-2 convolution + ReLU; a frame is padding if its first input is."""

  input_channels: int
  output_channels: int

  @nn.compact
  def __call__(self, x_BxTxFxC, paddings_BxT):
    kernel = self.param("kernel", _xavier,
                        (3, 3, self.input_channels, self.output_channels))
    bias = self.param("bias", nn.initializers.zeros, (self.output_channels,))
    y = jax.lax.conv_general_dilated(
        x_BxTxFxC, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = nn.relu(y + bias)
    paddings = paddings_BxT[:, ::2]  # the stride-2 pick of a 1x1 conv of ones
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
  """Two stride-2 convolutions, a Dense to the model width, positions, dropout."""

  encoder_dim: int

  @nn.compact
  def __call__(self, x_BxTxF, paddings_BxT, train, dropout_rate):
    y, paddings = Conv2dSubsampling(1, self.encoder_dim)(x_BxTxF[..., None], paddings_BxT)
    y, paddings = Conv2dSubsampling(self.encoder_dim, self.encoder_dim)(y, paddings)
    batch, time, bins, channels = y.shape
    y = nn.Dense(self.encoder_dim, kernel_init=_xavier)(
        y.reshape(batch, time, bins * channels))
    y = y + sinusoids(time, self.encoder_dim)
    return layers.Dropout()(y, dropout_rate, deterministic=not train), paddings


class FeedForwardModule(nn.Module):
  """LayerNorm, Dense x4, swish, dropout, Dense back, dropout (padding zeroed)."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, keep_BxTx1, train, dropout_rate):
    dim = self.config.encoder_dim
    y = LayerNorm(dim)(x)
    y = nn.swish(nn.Dense(dim * self.config.feed_forward_expansion_factor,
                          kernel_init=_xavier)(y))
    y = layers.Dropout()(y, dropout_rate, deterministic=not train) * keep_BxTx1
    y = nn.Dense(dim, kernel_init=_xavier)(y) * keep_BxTx1
    return layers.Dropout()(y, dropout_rate, deterministic=not train)


class QueryScaler(nn.Module):
  """A learned per-dimension query scale, ``softplus(s) / softplus(0)``, s = 0 at init."""

  dim: int

  @nn.compact
  def __call__(self, query):
    scale = self.param("scale", nn.initializers.zeros, (self.dim,))
    return query * (1.442695041 * jax.nn.softplus(scale))


def _scaled_attention(query, key, value, bias=None, mask=None, temperature=1.0, **kwargs):
  """Flax's dot-product attention with `QueryScaler` on the query (no dropout)."""
  del kwargs  # dropout settings: the probabilities are never dropped
  query = QueryScaler(query.shape[-1])(query)
  weights = nn.attention.dot_product_attention_weights(query, key, bias, mask,
                                                       deterministic=True)
  return jnp.einsum("...hqk,...khd->...qhd", weights, value) * temperature


class MultiHeadedSelfAttention(nn.Module):
  """LayerNorm then self-attention over the valid frames, then dropout."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, train, dropout_rate):
    valid = (1 - paddings_BxT) > 0
    mask = nn.make_attention_mask(valid, valid, dtype=jnp.float32)
    y = LayerNorm(self.config.encoder_dim)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.config.num_attention_heads, qkv_features=self.config.encoder_dim,
        kernel_init=_xavier, bias_init=nn.initializers.zeros, use_bias=True,
        broadcast_dropout=False, dropout_rate=0.0, deterministic=True,
        attention_fn=functools.partial(_scaled_attention,
                                       temperature=self.config.attention_temperature),
    )(y, mask=mask)
    return layers.Dropout()(y, dropout_rate, deterministic=not train)


class BatchNorm(nn.Module):
  """Batch norm over the valid frames only, ``(1 + scale)``; lingvo's defaults.

  ``batch_stats``: running ``mean`` (init 0) and ``var`` (init 1), updated as
  ``m * old + (1 - m) * batch`` when ``update_batch_norm``.
  """

  config: ConformerConfig

  @nn.compact
  def __call__(self, x_BxTxD, paddings_BxT, update_batch_norm, use_running_average):
    dim = self.config.encoder_dim
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (dim,))
    running_var = self.variable("batch_stats", "var", jnp.ones, (dim,))
    scale = self.param("scale", nn.initializers.zeros, (dim,))
    bias = self.param("bias", nn.initializers.zeros, (dim,))
    keep = (1.0 - paddings_BxT)[..., None]
    if use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      count = jnp.maximum(jnp.sum(keep * jnp.ones_like(x_BxTxD), axis=(0, 1)), 1.0)
      mean = jnp.sum(x_BxTxD * keep, axis=(0, 1)) / count
      var = jnp.sum(jnp.square(x_BxTxD - mean) * keep, axis=(0, 1)) / count
      if update_batch_norm:
        m = self.config.batch_norm_momentum
        running_mean.value = m * running_mean.value + (1 - m) * mean
        running_var.value = m * running_var.value + (1 - m) * var
    y = (x_BxTxD - mean) * ((1 + scale) / jnp.sqrt(var + self.config.batch_norm_epsilon))
    return (y + bias) * keep


class ConvolutionBlock(nn.Module):
  """LayerNorm, GLU, depthwise conv (kernel 5), batch norm, swish, Dense, dropout."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, train, update_batch_norm, use_running_average,
               dropout_rate):
    dim = self.config.encoder_dim
    y = LayerNorm(dim)(x)
    y = (nn.Dense(dim, kernel_init=_xavier)(y)
         * jax.nn.sigmoid(nn.Dense(dim, kernel_init=_xavier)(y)))
    y = y * (1 - paddings_BxT)[..., None]
    y = nn.Conv(dim, (self.config.convolution_kernel_size,), padding="SAME",
                feature_group_count=dim, use_bias=False, kernel_init=_xavier)(y)
    y = BatchNorm(self.config)(y, paddings_BxT, update_batch_norm, use_running_average)
    y = nn.Dense(dim, kernel_init=_xavier)(nn.swish(y))
    return layers.Dropout()(y, dropout_rate, deterministic=not train)


class ConformerBlock(nn.Module):
  """Macaron feed-forwards around attention and convolution, then LayerNorm."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, train, update_batch_norm, use_running_average,
               dropout_rate):
    keep = (1 - paddings_BxT)[..., None]
    x = x + 0.5 * FeedForwardModule(self.config)(x, keep, train, dropout_rate)
    x = x + MultiHeadedSelfAttention(self.config)(x, paddings_BxT, train, dropout_rate)
    x = x + ConvolutionBlock(self.config)(x, paddings_BxT, train, update_batch_norm,
                                          use_running_average, dropout_rate)
    x = x + 0.5 * FeedForwardModule(self.config)(x, keep, train, dropout_rate)
    if self.config.use_post_layer_norm:
      x = LayerNorm(self.config.encoder_dim)(x)
    return x


class Conformer(nn.Module):
  """PCM ``(B, N)`` and paddings -> CTC logits ``(B, T, vocab)`` and frame paddings."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, audio_BxN, paddings_BxN, train: bool,
               update_batch_norm: bool | None = None,
               use_running_average_bn: bool | None = None,
               dropout_rate: float = DROPOUT_RATE):
    config = self.config
    update_batch_norm = train if update_batch_norm is None else update_batch_norm
    if use_running_average_bn is None:
      use_running_average_bn = not (train or update_batch_norm)
    x, paddings = speech_features.log_mel(audio_BxN, paddings_BxN, config.frontend)
    if train and config.use_specaug:
      x = speech_features.spec_augment(self.make_rng("dropout"), x, paddings,
                                       config.specaug)
    x, paddings = Subsample(config.encoder_dim)(x, paddings, train, dropout_rate)
    for _ in range(config.num_encoder_layers):
      x = ConformerBlock(config)(x, paddings, train, update_batch_norm,
                                 use_running_average_bn, dropout_rate)
    x = LayerNorm(config.encoder_dim)(x)
    return nn.Dense(config.vocab_size, kernel_init=_xavier)(x), paddings
