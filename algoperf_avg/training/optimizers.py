"""Optimizers shared by the submissions: AlgoPerf's NadamW and its clipping.

Written as optax transformations so that averaging (``algoperf_avg.averaging``)
can be chained after them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByNadamState(NamedTuple):
  """First and second moments and the step count of NadamW."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
  """Nesterov-Adam scaling with bias correction, as in AlgoPerf's baseline.

  The Nesterov numerator is ``b1 * m_t + (1 - b1) * g_t`` divided by
  ``1 - b1**t``; the denominator is ``sqrt(v_t / (1 - b2**t)) + eps``.

  References:
    Dozat, "Incorporating Nesterov Momentum into Adam", 2016.
  """

  def init_fn(params):
    zeros = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)
    return ScaleByNadamState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update_fn(updates, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    correction1 = 1 - b1 ** count.astype(jnp.float32)
    correction2 = 1 - b2 ** count.astype(jnp.float32)
    new_updates = jax.tree.map(
        lambda m, v, g: ((b1 * m + (1 - b1) * g) / correction1)
        / (jnp.sqrt(v / correction2) + eps),
        mu, nu, updates,
    )
    return new_updates, ScaleByNadamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def nadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """AlgoPerf's NadamW: Nadam scaling, decoupled weight decay, then -lr.

  Weight decay is added after the Adam scaling and the sum is multiplied by
  the (scheduled) learning rate, so the decay is scaled by the learning rate.

  Example:
    >>> import optax, jax.numpy as jnp
    >>> tx = nadamw(1e-3, weight_decay=0.1)
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
    Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023.
  """
  return optax.chain(
      scale_by_nadam(b1, b2, eps),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


def clip_by_global_norm_algoperf(
    max_norm: float, eps: float = 1e-6
) -> optax.GradientTransformation:
  """Scale gradients by ``min(1, max_norm / (||g|| + eps))`` (AlgoPerf's rule)."""

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    factor = jnp.clip(max_norm / (norm + eps), 0.0, 1.0)
    return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
