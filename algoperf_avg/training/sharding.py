"""Data parallelism over every device, on one host or several.

One mesh axis, ``"batch"``. Parameters, model state and optimizer state
(averaging buffers included) are replicated; each batch is split along its
leading axis. `jax.jit` propagates these shardings through the submission's
train step, so submissions need no sharding code of their own.

On CPU, XLA uses one device by default and leaves the second core idle on
small models; `cpu_device_flags` asks XLA for several host devices instead
(the CLI sets it before JAX starts; see benchmarks/cpu_devices.py for the
measurement behind the default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"
# Host devices per CPU process: one per core. On 2 cores, OGBG-small ran 1.79x
# faster on 2 devices than on 1, and slower on 4 or 8 (benchmarks/cpu_devices.py,
# results/benchmarks/cpu_devices.txt).
DEFAULT_CPU_DEVICES = os.cpu_count() or 1


def cpu_device_flags(num_devices: int | None = None) -> None:
  """Ask XLA for ``num_devices`` CPU devices; must run before JAX starts.

  Respects a count already given in ``XLA_FLAGS`` or ``ALGOPERF_CPU_DEVICES``.
  Harmless on GPU hosts (it only shapes the host platform).
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" in flags:
    return
  count = num_devices or int(os.environ.get("ALGOPERF_CPU_DEVICES", DEFAULT_CPU_DEVICES))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
  """Start multi-host JAX when asked (flags or the cluster's environment).

  With no arguments and no ``JAX_COORDINATOR_ADDRESS`` this is a no-op, so
  single-host runs need nothing.
  """
  if coordinator_address is None and "JAX_COORDINATOR_ADDRESS" not in os.environ:
    return
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
  )


def is_logging_process() -> bool:
  """Only process 0 writes logs and checkpoints."""
  return jax.process_index() == 0


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
  devices = devices if devices is not None else jax.devices()
  return Mesh(np.asarray(devices), (AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Place every leaf of ``tree`` on all devices of ``mesh``.

  Each leaf keeps its memory kind, so averaging buffers offloaded to host
  memory (``pinned_host``) stay there.
  """

  def put(leaf):
    kind = getattr(getattr(leaf, "sharding", None), "memory_kind", None)
    return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec(), memory_kind=kind))

  return jax.tree.map(put, tree)


def _leaf_sharding(leaf: Any, mesh: Mesh) -> NamedSharding:
  # Leaves whose global leading axis does not split evenly (e.g. a padded
  # graph's node array) are replicated; jit then partitions the computation.
  shape = np.shape(leaf)
  if shape and (shape[0] * jax.process_count()) % mesh.devices.size == 0:
    return NamedSharding(mesh, PartitionSpec(AXIS))
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Turn a host batch into global arrays split along the leading axis.

  With several processes, ``batch`` is this process's part of the global
  batch (each host feeds its own shard). A dict batch whose leaves all have
  the example axis first is padded (weight 0) to a multiple of the local
  device count, so a short last batch still splits evenly.
  """
  local_devices = mesh.devices.size // jax.process_count()
  if _examples_first(batch) and local_devices > 1:
    batch = pad_batch(batch, local_devices)

  def put(leaf):
    leaf = np.asarray(leaf)
    sharding = _leaf_sharding(leaf, mesh)
    if jax.process_count() == 1:
      return jax.device_put(leaf, sharding)
    return jax.make_array_from_process_local_data(sharding, leaf)

  return jax.tree.map(put, batch)


def _examples_first(batch: Any) -> bool:
  if not isinstance(batch, dict) or "targets" not in batch:
    return False
  size = len(batch["targets"])
  return all(np.shape(leaf)[:1] == (size,) for leaf in jax.tree.leaves(batch))


def pad_batch(batch: dict[str, Any], multiple: int) -> dict[str, Any]:
  """Pad a short batch to a multiple of ``multiple`` examples, weight 0.

  For batches whose leaves all share the example axis (not graph batches,
  which their workloads pad to fixed budgets themselves).
  """
  size = len(batch["targets"])
  pad = (-size) % multiple
  if not pad:
    return batch

  def pad_leaf(leaf):
    leaf = np.asarray(leaf)
    return np.concatenate([leaf, np.zeros((pad, *leaf.shape[1:]), leaf.dtype)])

  padded = jax.tree.map(pad_leaf, batch)
  if batch.get("weights") is None:
    padded["weights"] = pad_leaf(np.ones(size, np.float32))
  return padded


def shard_like(batch: Any, params: Any) -> Any:
  """Split ``batch`` over the mesh that ``params`` live on (for eval loops).

  Evaluating replicated params on an unsharded batch would repeat the whole
  computation on every device; this splits the batch instead. Params that
  are not on a multi-device mesh leave the batch as it is.
  """
  leaves = jax.tree.leaves(params)
  mesh = getattr(getattr(leaves[0], "sharding", None), "mesh", None) if leaves else None
  if mesh is None or mesh.devices.size == 1:
    return batch
  return shard_batch(batch, mesh)


def sharded_iterator(batches: Iterator[Any], mesh: Mesh) -> Iterator[Any]:
  """`shard_batch` applied lazily to every batch of an input queue."""
  for batch in batches:
    yield shard_batch(batch, mesh)
