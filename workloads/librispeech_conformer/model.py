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
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from algoperf_avg.kit import layers, speech_layers

_xavier = speech_layers.XAVIER


@dataclasses.dataclass(frozen=True)
class ConformerConfig(speech_layers.SpeechModelConfig):
  """Model hyperparameters (AlgoPerf's ``ConformerConfig`` defaults)."""

  num_attention_heads: int = 8
  num_encoder_layers: int = 4
  convolution_kernel_size: int = 5
  feed_forward_expansion_factor: int = 4
  attention_temperature: float = 1.0
  use_post_layer_norm: bool = True


class FeedForwardModule(nn.Module):
  """LayerNorm, Dense x4, swish, dropout, Dense back, dropout (padding zeroed)."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, keep_BxTx1, train, dropout_rate):
    dim = self.config.encoder_dim
    y = speech_layers.LayerNorm(dim)(x)
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
    y = speech_layers.LayerNorm(self.config.encoder_dim)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.config.num_attention_heads, qkv_features=self.config.encoder_dim,
        kernel_init=_xavier, bias_init=nn.initializers.zeros, use_bias=True,
        broadcast_dropout=False, dropout_rate=0.0, deterministic=True,
        attention_fn=functools.partial(_scaled_attention,
                                       temperature=self.config.attention_temperature),
    )(y, mask=mask)
    return layers.Dropout()(y, dropout_rate, deterministic=not train)


class ConvolutionBlock(nn.Module):
  """LayerNorm, GLU, depthwise conv (kernel 5), batch norm, swish, Dense, dropout."""

  config: ConformerConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, train, update_batch_norm, use_running_average,
               dropout_rate):
    dim = self.config.encoder_dim
    y = speech_layers.LayerNorm(dim)(x)
    y = (nn.Dense(dim, kernel_init=_xavier)(y)
         * jax.nn.sigmoid(nn.Dense(dim, kernel_init=_xavier)(y)))
    y = y * (1 - paddings_BxT)[..., None]
    y = nn.Conv(dim, (self.config.convolution_kernel_size,), padding="SAME",
                feature_group_count=dim, use_bias=False, kernel_init=_xavier)(y)
    y = speech_layers.BatchNorm(dim, self.config.batch_norm_momentum,
                                self.config.batch_norm_epsilon)(
        y, paddings_BxT, use_running_average=use_running_average, update=update_batch_norm)
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
      x = speech_layers.LayerNorm(self.config.encoder_dim)(x)
    return x


class Conformer(speech_layers.SpeechModel):
  """PCM ``(B, N)`` and paddings -> CTC logits ``(B, T, vocab)`` and frame paddings.

  `speech_layers.SpeechModel` with sinusoidal positions and
  ``num_encoder_layers`` `ConformerBlock` as the encoder.
  """

  config: ConformerConfig
  add_positions: ClassVar[bool] = True

  def encode(self, x, paddings_BxT, train, update_batch_norm, use_running_average_bn,
             dropout_rate):
    """The Conformer blocks."""
    for _ in range(self.config.num_encoder_layers):
      x = ConformerBlock(self.config)(x, paddings_BxT, train, update_batch_norm,
                                      use_running_average_bn, dropout_rate)
    return x
