"""Vision Transformer (ViT-S/16 by default), as AlgoPerf's JAX ``ViT``.

Patches are embedded by a strided convolution, fixed 2-D sin-cos position
embeddings are added (no class token), a stack of pre-LayerNorm encoder
blocks follows, then a final LayerNorm, global average pooling over tokens,
a tanh "pre-logits" layer and a zero-initialised classification head.
Module names (``conv_patch_extract``, ``Transformer/encoderblock_i/...``,
``pre_logits``, ``head``), initialisers and dropout placement are AlgoPerf's
(which come from big_vision via init2winit), so parameters move between the
two without renaming and dropout draws the same masks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf_avg.kit.layers import Dropout

DROPOUT_RATE = 0.0

# Attention and MLP weights are xavier-uniform, MLP biases almost zero
# (big_vision's choice, kept by AlgoPerf).
_XAVIER = nn.initializers.xavier_uniform()
_MLP_BIAS = nn.initializers.normal(stddev=1e-6)


def posemb_sincos_2d(
    height: int, width: int, dim: int, temperature: float = 10_000.0
) -> np.ndarray:
  """Fixed position embeddings ``(1, height * width, dim)`` (MoCo v3's).

  A quarter of the channels each hold ``sin(x w)``, ``cos(x w)``,
  ``sin(y w)``, ``cos(y w)`` for the token's column ``x`` and row ``y``
  (row-major token order), with frequencies ``w = temperature ** -t`` for
  ``t`` evenly spaced in [0, 1].
  """
  if dim % 4:
    raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
  rows, cols = np.mgrid[:height, :width]
  quarter = dim // 4
  omega = 1.0 / temperature ** (np.arange(quarter) / (quarter - 1))
  y = rows.reshape(-1, 1) * omega
  x = cols.reshape(-1, 1) * omega
  embedding = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return embedding[None].astype(np.float32)


class MlpBlock(nn.Module):
  """Dense -> GELU -> dropout -> Dense, back to the input width."""

  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, dropout_rate: float) -> jax.Array:
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, kernel_init=_XAVIER, bias_init=_MLP_BIAS)(x)
    x = nn.gelu(x)
    x = Dropout()(x, dropout_rate, deterministic=not train)
    return nn.Dense(width, kernel_init=_XAVIER, bias_init=_MLP_BIAS)(x)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

  mlp_dim: int
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, dropout_rate: float) -> jax.Array:
    # The numbered names are AlgoPerf's (its modules are named explicitly).
    y = nn.LayerNorm(name="LayerNorm_0")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=_XAVIER, deterministic=not train,
        name="MultiHeadDotProductAttention_1",
    )(y)
    y = Dropout(name="Dropout_0")(y, dropout_rate, deterministic=not train)
    x = x + y
    y = nn.LayerNorm(name="LayerNorm_2")(x)
    y = MlpBlock(self.mlp_dim, name="MlpBlock_3")(y, train, dropout_rate)
    y = Dropout(name="Dropout_1")(y, dropout_rate, deterministic=not train)
    return x + y


class Encoder(nn.Module):
  """``depth`` encoder blocks followed by a LayerNorm."""

  depth: int
  mlp_dim: int
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, dropout_rate: float) -> jax.Array:
    for layer in range(self.depth):
      x = EncoderBlock(self.mlp_dim, self.num_heads, name=f"encoderblock_{layer}")(
          x, train, dropout_rate
      )
    return nn.LayerNorm(name="encoder_layernorm")(x)


class ViT(nn.Module):
  """Image classifier; the defaults are ViT-S/16 on 1000 classes.

  Attributes:
    num_classes: logits per image.
    patch_size: ``(height, width)`` of the square-strided patches.
    width: token width (384 for ViT-S).
    depth: number of encoder blocks.
    mlp_dim: hidden width of each block's MLP.
    num_heads: attention heads (``width`` must be divisible by it).
  """

  num_classes: int = 1000
  patch_size: tuple[int, int] = (16, 16)
  width: int = 384
  depth: int = 12
  mlp_dim: int = 1536
  num_heads: int = 6

  @nn.compact
  def __call__(
      self, inputs: jax.Array, train: bool, dropout_rate: float = DROPOUT_RATE
  ) -> jax.Array:
    """Logits ``(N, num_classes)`` for images ``inputs`` of shape ``(N, H, W, 3)``.

    ``H`` and ``W`` must be multiples of the patch size. Dropout (after the
    position embeddings, attention, inside and after each MLP) is active only
    when ``train``, with an rng named ``"dropout"``.
    """
    x = nn.Conv(
        self.width, self.patch_size, strides=self.patch_size, padding="VALID",
        name="conv_patch_extract",
    )(inputs)
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c) + jnp.asarray(posemb_sincos_2d(h, w, c), x.dtype)
    x = Dropout(name="Dropout_0")(x, dropout_rate, deterministic=not train)
    x = Encoder(self.depth, self.mlp_dim, self.num_heads, name="Transformer")(
        x, train, dropout_rate
    )
    x = x.mean(axis=1)
    x = nn.tanh(nn.Dense(self.width, name="pre_logits")(x))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)
