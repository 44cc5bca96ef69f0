"""Flax layers several workloads share."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


class Dropout(nn.Module):
  """Inverted dropout whose ``rate`` is an argument and may be traced.

  `flax.linen.Dropout` branches on ``rate == 0`` in Python; like AlgoPerf's
  ``jax_utils.Dropout`` this one does not, so a rate passed as an array does
  not force a recompile (a Python ``0`` still skips the mask, which changes
  nothing since a keep probability of 1 keeps everything). As a submodule
  named ``Dropout_i`` it draws the same masks as AlgoPerf's models.

  Attributes:
    broadcast_dims: axes that share one draw (``(1, 2)`` on ``(N, H, W, C)``
      drops whole channels, PyTorch's ``Dropout2d``; fastMRI's U-Net).
  """

  broadcast_dims: Sequence[int] = ()

  @nn.compact
  def __call__(
      self, x: jax.Array, rate: float | jax.Array, deterministic: bool
  ) -> jax.Array:
    if deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return x
    keep_prob = 1.0 - rate
    shape = [1 if axis in self.broadcast_dims else n for axis, n in enumerate(x.shape)]
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
    return jnp.where(jnp.broadcast_to(mask, x.shape), x / keep_prob, jnp.zeros_like(x))
