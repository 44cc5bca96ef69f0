"""U-Net for fastMRI knee single-coil reconstruction, as in AlgoPerf.

The architecture follows AlgoPerf's JAX ``UNet`` (from init2winit, after the
fastMRI reference U-Net) exactly: conv blocks of two 3x3 convolutions without
bias, each followed by instance norm (no affine parameters), LeakyReLU 0.2 and
channel-wise dropout; 2x2 average pooling down, 2x2 stride-2 transposed
convolutions up, skip connections by concatenation, and a final 1x1
convolution (the only one with a bias). Modules are created in AlgoPerf's
order, so the parameter tree has the same names (``ConvBlock_0`` ...
``ConvBlock_8``, ``TransposeConvBlock_0`` ... ``TransposeConvBlock_3``,
``Conv_0``) and the default (lecun-normal) initialisation draws the same
weights from the same key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from algoperf_avg.kit.layers import Dropout

DROPOUT_RATE = 0.0
NEGATIVE_SLOPE = 0.2
INSTANCE_NORM_EPSILON = 1e-5


def instance_norm(x: jax.Array, epsilon: float = INSTANCE_NORM_EPSILON) -> jax.Array:
  """Normalises each channel of each image over its spatial axes (1, 2).

  Computed in at least float32, with the variance as ``E[x^2] - E[x]^2``
  (clamped at 0 against round-off), as AlgoPerf does; PyTorch's
  ``InstanceNorm2d`` without affine parameters computes the same.
  """
  x = jnp.asarray(x, jnp.promote_types(jnp.float32, x.dtype))
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  mean_of_squares = jnp.mean(jnp.square(x), axis=(1, 2), keepdims=True)
  variance = jnp.maximum(0.0, mean_of_squares - jnp.square(mean))
  return (x - mean) / jnp.sqrt(variance + epsilon)


def _leaky_relu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, negative_slope=NEGATIVE_SLOPE)


class ConvBlock(nn.Module):
  """Two rounds of 3x3 conv -> instance norm -> LeakyReLU -> channel dropout.

  Attributes:
    out_channels: channels of both convolutions.
  """

  out_channels: int

  @nn.compact
  def __call__(
      self, x: jax.Array, train: bool, dropout_rate: float | jax.Array
  ) -> jax.Array:
    """``(N, H, W, C_in)`` -> ``(N, H, W, out_channels)``."""
    for i in range(2):
      x = nn.Conv(self.out_channels, kernel_size=(3, 3), use_bias=False)(x)
      x = _leaky_relu(instance_norm(x))
      x = Dropout(broadcast_dims=(1, 2), name=f"Dropout_{i}")(
          x, dropout_rate, deterministic=not train
      )
    return x


class TransposeConvBlock(nn.Module):
  """2x2 stride-2 transposed conv -> instance norm -> LeakyReLU (doubles H, W).

  Attributes:
    out_channels: channels of the transposed convolution.
  """

  out_channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``(N, H, W, C_in)`` -> ``(N, 2H, 2W, out_channels)``."""
    x = nn.ConvTranspose(
        self.out_channels, kernel_size=(2, 2), strides=(2, 2), use_bias=False
    )(x)
    return _leaky_relu(instance_norm(x))


class UNet(nn.Module):
  """U-Net mapping a zero-filled magnitude image to its reconstruction.

  Level ``i`` of the encoder has ``num_channels * 2**i`` channels, the
  bottleneck ``num_channels * 2**num_pool_layers``; the decoder mirrors the
  encoder. The full AlgoPerf model (32 channels, 4 pooling layers) has
  7,756,097 parameters.

  Attributes:
    num_channels: channels of the first conv block.
    num_pool_layers: number of down-sampling (and up-sampling) steps.
    out_channels: channels of the output before the final squeeze (1).
  """

  num_channels: int = 32
  num_pool_layers: int = 4
  out_channels: int = 1

  @nn.compact
  def __call__(
      self,
      inputs: jax.Array,
      train: bool,
      dropout_rate: float | jax.Array = DROPOUT_RATE,
  ) -> jax.Array:
    """Reconstructions ``(N, H, W)`` of normalised input images ``(N, H, W)``.

    Args:
      inputs: the batch's ``"inputs"``, zero-filled images normalised by their
        own mean and standard deviation.
      train: apply dropout (needs a ``"dropout"`` rng when the rate is not 0).
      dropout_rate: channel-dropout rate of every conv block.
    """
    x = inputs[..., None]
    skips = []
    channels = self.num_channels
    for _ in range(self.num_pool_layers):
      x = ConvBlock(channels)(x, train, dropout_rate)
      skips.append(x)
      x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
      channels *= 2
    x = ConvBlock(channels)(x, train, dropout_rate)

    for _ in range(self.num_pool_layers):
      channels //= 2
      skip = skips.pop()
      x = TransposeConvBlock(channels)(x)
      # Odd sizes lose a row or column when pooled: reflect-pad it back on the
      # bottom/right so the skip connection lines up.
      pad_bottom = skip.shape[1] - x.shape[1]
      pad_right = skip.shape[2] - x.shape[2]
      if pad_bottom or pad_right:
        x = jnp.pad(
            x, ((0, 0), (0, pad_bottom), (0, pad_right), (0, 0)), mode="reflect"
        )
      x = jnp.concatenate([x, skip], axis=-1)
      x = ConvBlock(channels)(x, train, dropout_rate)

    x = nn.Conv(self.out_channels, kernel_size=(1, 1))(x)
    return x.squeeze(-1)
