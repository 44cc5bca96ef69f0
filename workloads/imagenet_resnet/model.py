"""ResNet-50 v1.5 with batch norm, as AlgoPerf's JAX ``ResNet50``.

"v1.5": a bottleneck block downsamples with its 3x3 convolution (not the
first 1x1). The last batch norm of every block starts with scale 0, so each
block starts as the identity on its shortcut; batch norm uses momentum 0.9
and epsilon 1e-5; the head is initialised from N(0, 0.01^2). Module names
(``Conv_init``, ``BatchNorm_init``, ``BottleneckResNetBlock_i/Conv_j``,
``.../Conv_proj``, ``.../BatchNorm_proj``, ``Dense_0``) are AlgoPerf's (from
the Flax ImageNet example), so parameters and batch statistics move between
the two without renaming.

Batch statistics live in the ``"batch_stats"`` collection: apply the model
with ``mutable=["batch_stats"]`` when ``update_batch_norm`` is true.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class BottleneckResNetBlock(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 (4x wider) convolutions plus a shortcut.

  The shortcut is a strided 1x1 convolution with batch norm whenever the
  block changes the shape or strides, the identity otherwise.
  """

  filters: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  act: Callable[[jax.Array], jax.Array]
  strides: tuple[int, int] = (1, 1)
  bn_init_scale: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.act(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.act(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.constant(self.bn_init_scale))(y)
    shortcut = x
    if x.shape != y.shape or self.strides != (1, 1):
      shortcut = self.conv(self.filters * 4, (1, 1), self.strides, name="Conv_proj")(x)
      shortcut = self.norm(name="BatchNorm_proj")(shortcut)
    return self.act(shortcut + y)


class ResNet(nn.Module):
  """Image classifier; the defaults are ResNet-50 on 1000 classes.

  Attributes:
    num_classes: logits per image.
    stage_sizes: bottleneck blocks per stage; every stage after the first
      halves the resolution in its first block and doubles the width.
    num_filters: bottleneck width of the first stage (outputs are 4x).
    act: the nonlinearity.
    bn_init_scale: initial scale of each block's last batch norm.
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  num_filters: int = 64
  act: Callable[[jax.Array], jax.Array] = nn.relu
  bn_init_scale: float = 0.0

  @nn.compact
  def __call__(
      self,
      inputs: jax.Array,
      update_batch_norm: bool = True,
      use_running_average_bn: bool | None = None,
  ) -> jax.Array:
    """Logits ``(N, num_classes)`` for images ``inputs`` of shape ``(N, H, W, 3)``.

    Args:
      inputs: normalised images.
      update_batch_norm: training mode: normalise with this batch's
        statistics and update the running averages (needs
        ``mutable=["batch_stats"]``).
      use_running_average_bn: normalise with the running averages; defaults
        to ``not update_batch_norm`` (AlgoPerf's argument, which also allows
        updating the statistics while normalising with the stored ones).
    """
    if use_running_average_bn is None:
      use_running_average_bn = not update_batch_norm
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=use_running_average_bn,
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
    )
    x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
             name="Conv_init")(inputs)
    x = self.act(norm(name="BatchNorm_init")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = BottleneckResNetBlock(
            self.num_filters * 2**stage,
            conv=conv, norm=norm, act=self.act,
            strides=(2, 2) if stage > 0 and block == 0 else (1, 1),
            bn_init_scale=self.bn_init_scale,
        )(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01))(x)
