"""``algoperf.jax_sharding_utils``: placements on the harness's data-parallel mesh.

AlgoPerf's submissions call these inside their jitted updates (in/out
shardings) and to place their optimizer state; they use the same 1-D
``"batch"`` mesh over every device as the runner (`training.sharding`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from algoperf_avg.training import sharding


def get_replicate_sharding() -> NamedSharding:
  """Every device holds the whole value."""
  return NamedSharding(sharding.make_mesh(), PartitionSpec())


def get_batch_dim_sharding() -> NamedSharding:
  """Split along the leading (batch) axis."""
  return NamedSharding(sharding.make_mesh(), PartitionSpec(sharding.AXIS))


def shard_along_batch_dim(x: Any) -> Any:
  """Place every leaf of ``x`` split along its leading axis."""
  return jax.tree.map(lambda leaf: jax.device_put(leaf, get_batch_dim_sharding()), x)


def replicate(x: Any) -> Any:
  """Place every leaf of ``x`` on every device."""
  return jax.tree.map(lambda leaf: jax.device_put(leaf, get_replicate_sharding()), x)


def display_shard_info(x: jax.Array) -> None:
  """Print where each shard of ``x`` lives."""
  for shard in x.addressable_shards:
    print(f"shard.device: {shard.device}, index: {shard.index}, "
          f"replica_id: {shard.replica_id}.")
