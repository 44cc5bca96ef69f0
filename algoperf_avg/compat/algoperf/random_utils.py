"""``algoperf.random_utils`` for JAX: keys, splits and fold-ins.

AlgoPerf's JAX path calls `jax.random` on raw ``uint32`` keys; the harness
hands submissions typed keys (`jax.random.key`). Both kinds work here, and a
raw key from `PRNGKey` equals the typed key of the same seed bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax


def PRNGKey(seed: int) -> jax.Array:  # noqa: N802  (AlgoPerf's name)
  """A raw key, as AlgoPerf's ``PRNGKey``."""
  return jax.random.PRNGKey(seed)


def split(seed: Any, num: int = 2) -> jax.Array:
  return jax.random.split(seed, num)


def fold_in(seed: Any, data: Any) -> jax.Array:
  return jax.random.fold_in(seed, data)
