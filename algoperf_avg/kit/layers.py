"""Flax layers several workloads share."""

from __future__ import annotations

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
  """

  @nn.compact
  def __call__(
      self, x: jax.Array, rate: float | jax.Array, deterministic: bool
  ) -> jax.Array:
    if deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return x
    keep_prob = 1.0 - rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, x.shape)
    return jnp.where(mask, x / keep_prob, jnp.zeros_like(x))
