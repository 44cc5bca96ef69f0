"""Data parallelism over every device, on one host or several.

One mesh axis, ``"batch"``. Parameters, model state and optimizer state
(averaging buffers included) are replicated; each batch is split along its
leading axis (every leaf: a leaf that does not split is an error, never
silently replicated). `jax.jit` propagates these shardings through the submission's
train step, so submissions need no sharding code of their own.

On CPU, XLA uses one device by default and leaves the second core idle on
small models; `cpu_device_flags` asks XLA for several host devices instead
(the CLI sets it before JAX starts; see benchmarks/cpu_devices.py for the
measurement behind the default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from algoperf_avg.kit import data

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
  # CPU processes exchange through gloo (no effect on GPU/TPU collectives).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
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


def place(tree: Any, mesh: Mesh, specs: Any = None) -> Any:
  """Place ``tree`` on ``mesh`` by ``specs`` (a matching tree of `PartitionSpec`).

  ``specs=None`` replicates every leaf (the default placement of params); a
  workload may shard a large leaf, e.g. an embedding table's rows over the
  data axis (``PartitionSpec("batch", None)``).
  """
  if specs is None:
    return replicate(tree, mesh)

  def put(leaf, spec):
    spec = PartitionSpec() if spec is None else spec
    return jax.device_put(leaf, NamedSharding(mesh, spec))

  return jax.tree.map(put, tree, specs, is_leaf=lambda x: x is None)


def sharded_shapes(params: Any) -> dict[tuple[int, ...], Any]:
  """Shape -> sharding of the params that are not replicated (e.g. a row-sharded table)."""
  return {tuple(p.shape): p.sharding for p in jax.tree.leaves(params)
          if isinstance(getattr(p, "sharding", None), NamedSharding)
          and not p.sharding.is_fully_replicated}


def place_state(tree: Any, mesh: Mesh, params: Any = None) -> Any:
  """Keep each leaf's sharding where it is on ``mesh``; replicate the rest.

  Optimizer states are built from placed params, so most leaves already have
  their intended layout (sharded averaging buffers among them); scalars and
  host values get replicated. A leaf shaped like a sharded param (its
  moments) takes that param's sharding, which XLA does not carry over to a
  ``zeros_like``.
  """
  follow = sharded_shapes(params) if params is not None else {}

  def put(leaf):
    sharding = getattr(leaf, "sharding", None)
    shape = tuple(getattr(leaf, "shape", ()))
    if shape in follow and getattr(sharding, "memory_kind", None) != "pinned_host":
      return jax.device_put(leaf, follow[shape])
    if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
      return leaf
    if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float, np.ndarray)):
      return leaf  # e.g. a function kept in the state: not an array
    kind = getattr(sharding, "memory_kind", None)
    return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec(), memory_kind=kind))

  return jax.tree.map(put, tree)


def _split_sharding(path: Any, leaf: Any, mesh: Mesh) -> NamedSharding:
  shape = np.shape(leaf)
  devices = mesh.devices.size
  if not shape or (shape[0] * jax.process_count()) % devices:
    where = jax.tree_util.keystr(path)
    raise ValueError(
        f"batch leaf {where} of shape {shape} does not split over {devices} "
        "devices along its leading axis: every leaf of a batch needs a leading "
        "batch axis whose (global) size is a multiple of the device count")
  return NamedSharding(mesh, PartitionSpec(AXIS))


# Keys whose 0 marks padding examples; a batch needs one to be padded safely.
MASK_KEYS = ("weights", "valid")


def shard_batch(batch: Any, mesh: Mesh, pad_values: Mapping[str, Any] | None = None
                ) -> Any:
  """Turn a host batch into global arrays split along the leading axis.

  With several processes, ``batch`` is this process's part of the global
  batch (each host feeds its own shard). A dict batch whose leaves all share
  an example axis is padded to a multiple of the local device count with
  ``pad_values`` (`kit.data.pad_batch`; 0 by default, so its ``weights``,
  whatever their shape, are 0 on the padding).

  Raises:
    ValueError: a leaf does not split over the devices, or a short batch has
      no ``weights`` / ``valid`` key that would mark its padding.
  """
  local_devices = mesh.devices.size // jax.process_count()
  if local_devices > 1 and isinstance(batch, Mapping):
    size = _example_count(batch)
    if size is not None and size % local_devices:
      if not any(key in batch for key in MASK_KEYS):
        raise ValueError(
            f"a batch of {size} examples does not split over {local_devices} "
            f"devices and has no {' or '.join(MASK_KEYS)} key to mask padding; "
            "use a batch size that is a multiple of the device count")
      batch = data.pad_batch(batch, -(-size // local_devices) * local_devices,
                             pad_values, add_valid=False)

  def put(path, leaf):
    leaf = np.asarray(leaf)
    sharding = _split_sharding(path, leaf, mesh)
    if jax.process_count() == 1:
      return jax.device_put(leaf, sharding)
    return jax.make_array_from_process_local_data(sharding, leaf)

  return jax.tree_util.tree_map_with_path(put, batch)


def _example_count(batch: Mapping[str, Any]) -> int | None:
  sizes = {np.shape(leaf)[:1] for leaf in jax.tree.leaves(batch)}
  return sizes.pop()[0] if len(sizes) == 1 and sizes != {()} else None


def mesh_of(tree: Any) -> Mesh | None:
  """The multi-device mesh ``tree``'s arrays live on, or None (one device, numpy)."""
  for leaf in jax.tree.leaves(tree):
    mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
    if isinstance(mesh, Mesh) and mesh.devices.size > 1:
      return mesh
  return None


def sharded_iterator(batches: Iterator[Any], mesh: Mesh,
                     pad_values: Mapping[str, Any] | None = None) -> Iterator[Any]:
  """`shard_batch` applied lazily to every batch of an input queue."""
  for batch in batches:
    yield shard_batch(batch, mesh, pad_values)
