"""Encoder-decoder Transformer for WMT translation (AlgoPerf's base model).

The layers, initialisers and module names follow AlgoPerf's JAX
``Transformer`` (itself the Flax WMT example) with its default settings:
pre-layer-norm blocks, ReLU MLPs, attention without biases and without
dropout on its probabilities, fixed sinusoidal position embeddings and one
embedding table shared by the encoder input, the decoder input and the
output logits (scaled by ``1/sqrt(emb_dim)``). The parameter tree is
therefore the same (``shared_embedding``, ``encoder/encoderblock_i/...``,
``decoder/encoderdecoderblock_i/...``) and parameters move between the two
without renaming; the ``Dropout_i`` modules sit at the same paths, so a
dropout key draws the same masks.

Token 0 is padding (attention masks are built from ``ids > 0``). Packed rows
carry ``*_segmentation`` ids (attention stays inside a segment) and
``*_position`` ids (each segment's position embeddings restart at 0).

A module built with ``decode=True`` runs the decoder one token at a time with
a key/value cache (``cache`` collection), for beam search
(`workloads.wmt.decode`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf_avg.kit.layers import Dropout

DROPOUT_RATE = 0.1


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Sizes of the Transformer; the defaults are AlgoPerf's (133,521,408 params).

  Attributes:
    vocab_size: entries of the shared embedding (the tokenizer's vocabulary).
    emb_dim: width of the embeddings and the residual stream.
    num_heads: attention heads; ``qkv_dim`` must be divisible by it.
    num_layers: encoder blocks, and as many decoder blocks.
    qkv_dim: total width of the queries, keys and values (all heads).
    mlp_dim: hidden width of each block's MLP.
    max_len: rows of the sinusoidal position table (longest sequence).
  """

  vocab_size: int = 32_000
  emb_dim: int = 1024
  num_heads: int = 16
  num_layers: int = 6
  qkv_dim: int = 1024
  mlp_dim: int = 1024
  max_len: int = 256

  def __post_init__(self):
    if self.qkv_dim % self.num_heads:
      raise ValueError(
          f"qkv_dim {self.qkv_dim} is not divisible by num_heads {self.num_heads}")


FULL = TransformerConfig()
# The CPU variant for the generated task (`workloads.wmt.synthetic`): 198,912
# parameters, a 512-piece vocabulary and pairs of up to 64 tokens.
SMALL = TransformerConfig(vocab_size=512, emb_dim=64, num_heads=4, num_layers=2,
                          qkv_dim=64, mlp_dim=128, max_len=64)

# AlgoPerf's initialisers.
KERNEL_INIT = nn.initializers.xavier_uniform()
BIAS_INIT = nn.initializers.normal(stddev=1e-6)
EMBEDDING_INIT = nn.initializers.normal(stddev=1.0)


def sinusoidal_table(
    max_len: int, width: int, min_scale: float = 1.0, max_scale: float = 1e4
) -> np.ndarray:
  """``(max_len, width)`` fixed position embeddings: sines, then cosines.

  Column ``j < width // 2`` is ``sin(p * f_j)`` and column ``width // 2 + j``
  is ``cos(p * f_j)`` at position ``p``, with frequencies ``f_j`` falling
  geometrically from ``1/min_scale`` to ``1/max_scale``; an odd width leaves
  the last column 0.
  """
  half = width // 2
  log_step = -np.log(max_scale / min_scale) / (half - 1)
  frequencies = min_scale * np.exp(np.arange(half) * log_step)
  angles = np.arange(max_len)[:, None] * frequencies[None, :]
  table = np.zeros((max_len, width), np.float32)
  table[:, :half] = np.sin(angles)
  table[:, half : 2 * half] = np.cos(angles)
  return table


class AddPositionEmbs(nn.Module):
  """Adds the sinusoidal table (no parameters) at each token's position.

  With ``decode=True`` each call after the cache's creation embeds one token
  at the position counted by the ``cache_index`` variable.
  """

  max_len: int
  decode: bool = False

  @nn.compact
  def __call__(
      self, x_BxLxD: jax.Array, positions_BxL: jax.Array | None = None
  ) -> jax.Array:
    table = jnp.asarray(sinusoidal_table(self.max_len, x_BxLxD.shape[-1]))
    length = x_BxLxD.shape[1]
    if self.decode:
      decoding = self.has_variable("cache", "cache_index")
      index = self.variable(
          "cache", "cache_index", lambda: jnp.array(0, dtype=jnp.uint32))
      if decoding:
        position = index.value
        index.value = position + 1
        return x_BxLxD + jax.lax.dynamic_slice_in_dim(table, position, 1)[None]
    if positions_BxL is None:
      return x_BxLxD + table[None, :length]
    return x_BxLxD + jnp.take(table[:length], positions_BxL, axis=0)


def _attention(num_heads: int, qkv_dim: int, decode: bool = False):
  # Dropout on the attention probabilities is off (rate 0); the block drops
  # the attention output instead.
  return nn.MultiHeadDotProductAttention(
      num_heads=num_heads, qkv_features=qkv_dim, kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT, use_bias=False, broadcast_dropout=False,
      dropout_rate=0.0, deterministic=True, decode=decode,
  )


class MlpBlock(nn.Module):
  """Dense -> ReLU -> dropout -> Dense -> dropout, back to the input width."""

  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array, dropout_rate, deterministic: bool) -> jax.Array:
    width = x.shape[-1]
    y = nn.Dense(self.mlp_dim, kernel_init=KERNEL_INIT, bias_init=BIAS_INIT)(x)
    y = Dropout()(nn.relu(y), dropout_rate, deterministic)
    y = nn.Dense(width, kernel_init=KERNEL_INIT, bias_init=BIAS_INIT)(y)
    return Dropout()(y, dropout_rate, deterministic)


class Encoder1DBlock(nn.Module):
  """Pre-LN self-attention and MLP, each in a residual branch with dropout."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x, mask, dropout_rate, deterministic: bool):
    cfg = self.config
    y = nn.LayerNorm()(x)
    y = _attention(cfg.num_heads, cfg.qkv_dim)(y, y, mask=mask)
    x = x + Dropout()(y, dropout_rate, deterministic)
    y = nn.LayerNorm()(x)
    return x + MlpBlock(cfg.mlp_dim)(y, dropout_rate, deterministic)


class EncoderDecoder1DBlock(nn.Module):
  """Pre-LN causal self-attention, cross-attention and MLP, each residual."""

  config: TransformerConfig
  decode: bool = False

  @nn.compact
  def __call__(self, y, encoded, self_mask, cross_mask, dropout_rate,
               deterministic: bool):
    cfg = self.config
    z = nn.LayerNorm()(y)
    z = _attention(cfg.num_heads, cfg.qkv_dim, self.decode)(z, z, mask=self_mask)
    y = y + Dropout()(z, dropout_rate, deterministic)
    z = nn.LayerNorm()(y)
    z = _attention(cfg.num_heads, cfg.qkv_dim)(z, encoded, mask=cross_mask)
    y = y + Dropout()(z, dropout_rate, deterministic)
    z = nn.LayerNorm()(y)
    return y + MlpBlock(cfg.mlp_dim)(z, dropout_rate, deterministic)


class Encoder(nn.Module):
  """Embeds the source, adds positions, runs the blocks, final LayerNorm."""

  config: TransformerConfig
  embed: nn.Module

  @nn.compact
  def __call__(self, inputs_BxL, positions, mask, dropout_rate, deterministic):
    cfg = self.config
    x = self.embed(inputs_BxL.astype(jnp.int32))
    x = AddPositionEmbs(cfg.max_len, name="posembed_input")(x, positions)
    x = Dropout()(x, dropout_rate, deterministic)
    for layer in range(cfg.num_layers):
      x = Encoder1DBlock(cfg, name=f"encoderblock_{layer}")(
          x, mask, dropout_rate, deterministic)
    return nn.LayerNorm(name="encoder_layernorm")(x)


def shift_right(ids_BxL: jax.Array) -> jax.Array:
  """Teacher forcing: the decoder sees 0 and then the targets, one step late."""
  return jnp.pad(ids_BxL, ((0, 0), (1, 0)))[:, :-1]


class Decoder(nn.Module):
  """Embeds shifted targets, runs the blocks, logits via the shared table."""

  config: TransformerConfig
  embed: nn.Module
  decode: bool = False

  @nn.compact
  def __call__(self, encoded, targets_BxL, positions, self_mask, cross_mask,
               dropout_rate, deterministic):
    cfg = self.config
    ids = targets_BxL.astype(jnp.int32)
    if not self.decode:  # decoding feeds the previous token itself
      ids = shift_right(ids)
    y = self.embed(ids)
    y = AddPositionEmbs(cfg.max_len, self.decode, name="posembed_output")(
        y, positions)
    y = Dropout()(y, dropout_rate, deterministic)
    for layer in range(cfg.num_layers):
      y = EncoderDecoder1DBlock(
          cfg, self.decode, name=f"encoderdecoderblock_{layer}")(
              y, encoded, self_mask, cross_mask, dropout_rate, deterministic)
    y = nn.LayerNorm(name="encoderdecoder_layernorm")(y)
    # Output logits through the shared embedding, scaled so that their
    # variance does not grow with the width.
    return self.embed.attend(y) / jnp.sqrt(y.shape[-1])


class Transformer(nn.Module):
  """Sequence-to-sequence Transformer; logits ``(B, L, vocab_size)``.

  Attributes:
    config: the sizes (`TransformerConfig`).
    decode: build the single-token decoding variant with a cache (for
      `workloads.wmt.decode`); the parameters are the same.
  """

  config: TransformerConfig = TransformerConfig()
  decode: bool = False

  def setup(self):
    cfg = self.config
    self.shared_embedding = nn.Embed(
        cfg.vocab_size, cfg.emb_dim, embedding_init=EMBEDDING_INIT)
    self.encoder = Encoder(cfg, self.shared_embedding)
    self.decoder = Decoder(cfg, self.shared_embedding, self.decode)

  def encode(
      self,
      inputs: jax.Array,
      inputs_positions: jax.Array | None = None,
      inputs_segmentation: jax.Array | None = None,
      *,
      train: bool = False,
      dropout_rate: float | jax.Array = DROPOUT_RATE,
  ) -> jax.Array:
    """Encoder states ``(B, L, emb_dim)`` of source ids ``(B, L)``."""
    mask = nn.make_attention_mask(inputs > 0, inputs > 0)
    if inputs_segmentation is not None:
      mask = nn.combine_masks(mask, nn.make_attention_mask(
          inputs_segmentation, inputs_segmentation, jnp.equal))
    return self.encoder(inputs, inputs_positions, mask, dropout_rate, not train)

  def decode_logits(
      self,
      encoded: jax.Array,
      inputs: jax.Array,
      targets: jax.Array,
      targets_positions: jax.Array | None = None,
      inputs_segmentation: jax.Array | None = None,
      targets_segmentation: jax.Array | None = None,
      *,
      train: bool = False,
      dropout_rate: float | jax.Array = DROPOUT_RATE,
  ) -> jax.Array:
    """Logits for ``targets`` (teacher-forced), or for one token when decoding.

    ``inputs`` (the source ids) only supply the cross-attention mask. With
    ``decode=True``, ``targets`` is ``(B, 1)``: the previous token; the cache
    provides the causal context.
    """
    if self.decode:
      self_mask = None
      cross_mask = nn.make_attention_mask(jnp.ones_like(targets) > 0, inputs > 0)
    else:
      self_mask = nn.combine_masks(
          nn.make_attention_mask(targets > 0, targets > 0),
          nn.make_causal_mask(targets))
      cross_mask = nn.make_attention_mask(targets > 0, inputs > 0)
    if inputs_segmentation is not None:
      self_mask = nn.combine_masks(self_mask, nn.make_attention_mask(
          targets_segmentation, targets_segmentation, jnp.equal))
      cross_mask = nn.combine_masks(cross_mask, nn.make_attention_mask(
          targets_segmentation, inputs_segmentation, jnp.equal))
    return self.decoder(encoded, targets, targets_positions, self_mask,
                        cross_mask, dropout_rate, not train)

  def __call__(
      self,
      inputs: jax.Array,
      targets: jax.Array,
      inputs_positions: jax.Array | None = None,
      targets_positions: jax.Array | None = None,
      inputs_segmentation: jax.Array | None = None,
      targets_segmentation: jax.Array | None = None,
      *,
      train: bool = False,
      dropout_rate: float | jax.Array = DROPOUT_RATE,
  ) -> jax.Array:
    """Teacher-forced logits ``(B, L, vocab)`` for a batch's id arrays.

    Args:
      inputs: ``(B, L)`` source ids, 0 = padding.
      targets: ``(B, L)`` target ids, 0 = padding.
      inputs_positions: packed rows only: each token's position in its pair.
      targets_positions: likewise for the targets.
      inputs_segmentation: packed rows only: pair index (from 1; 0 = padding).
      targets_segmentation: likewise for the targets.
      train: apply dropout (needs a ``"dropout"`` rng).
      dropout_rate: one rate for embeddings, residual branches and the MLP
        hidden layer; may be traced.
    """
    kwargs = {"train": train, "dropout_rate": dropout_rate}
    encoded = self.encode(inputs, inputs_positions, inputs_segmentation, **kwargs)
    return self.decode_logits(encoded, inputs, targets, targets_positions,
                              inputs_segmentation, targets_segmentation, **kwargs)


# Batch keys the model reads, as named by the input pipeline (and AlgoPerf).
BATCH_KEYS = ("inputs", "targets", "inputs_position", "targets_position",
              "inputs_segmentation", "targets_segmentation")


def batch_arguments(batch: Mapping[str, Any]) -> dict[str, Any]:
  """The model's call arguments from a batch (packed or padded)."""
  names = ("inputs", "targets", "inputs_positions", "targets_positions",
           "inputs_segmentation", "targets_segmentation")
  return {name: batch.get(key) for name, key in zip(names, BATCH_KEYS, strict=True)}


def init_params(model: Transformer, rng: jax.Array, batch_size: int = 2,
                length: int | None = None) -> Any:
  """Initial parameters (AlgoPerf initialises on a batch of ones)."""
  shape = (batch_size, length or model.config.max_len)
  ones = jnp.ones(shape, jnp.int32)
  return model.init({"params": rng}, ones, ones, train=False)["params"]
