"""The evaluation engine: one pass over a split, streamed, on the whole mesh.

A workload supplies three things (see `spec.Workload`):

* ``eval_batches(split, data_dir, batch_size, shard_index, num_shards)``:
  one pass over its shard of the split, in a fixed order, as host batches of
  at most ``batch_size`` examples;
* ``eval_step(params, model_state, batch, rng, metrics)``, traced once per
  split: an `EvalOutput` of *sums* (added over all batches: summed losses,
  counts, correct predictions) and *per-example* arrays (leading batch axis:
  logits for mAP, decoded ids for WER or BLEU);
* ``finalize_metrics(split, sums, per_example, metrics)``: the totals as
  metrics (mAP, mean SSIM per slice, corpus WER, corpus BLEU).

The engine pads every batch to the full per-process eval batch size, every key
with the workload's pad value (`Workload.batch_pad_values`, 0 unless declared:
speech paddings are 1) and adds a per-example ``valid`` mask (1 real, 0
padding), so a split compiles once. A workload that packs its own fixed-shape
batches (OGBG's graphs) gives ``valid`` itself and is not padded. Sums stay on
the device until the split ends; per-example outputs are copied to the host
with their padding rows dropped, so host memory holds one batch plus what the
metric needs, whatever the split's size. Small splits (up to
``cache_bytes`` of host batches) are read once and kept.

Several processes: each reads its own shard; batches are sharded over the
global mesh, so the jitted sums are already global; per-example outputs are
gathered from every process; processes with fewer batches feed all-padding
ones until every process is done. With one process nothing of this costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg.kit.data import VALID, pad_batch, padding_only
from algoperf_avg.training import sharding

DEFAULT_CACHE_BYTES = 512 * 2**20
METRIC_SETS = ("all", "target")


class EvalOutput(NamedTuple):
  """What a workload's ``eval_step`` returns for one (padded) batch.

  Attributes:
    sums: arrays summed over the batch's valid examples; the engine adds them
      over the split. Padding examples must contribute 0.
    per_example: arrays with the batch's leading axis (one row per example,
      padding included); the engine keeps the valid rows, concatenated over
      the split in order.
  """

  sums: Mapping[str, jax.Array]
  per_example: Mapping[str, jax.Array] | None = None


def _nbytes(batch: Any) -> int:
  return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(batch))


@dataclasses.dataclass
class _Cached:
  batches: list[Any]
  complete: bool


class Evaluator:
  """Evaluates one workload's splits; keeps the jitted step and small splits."""

  def __init__(self, workload: Any, cache_bytes: int = DEFAULT_CACHE_BYTES):
    self.workload = workload
    self.cache_bytes = cache_bytes
    self._cache: dict[tuple[Any, ...], _Cached] = {}
    self._step = jax.jit(self._step_impl, static_argnames="metrics")

  def _step_impl(self, params, model_state, batch, rng, metrics):
    out = self.workload.eval_step(params, model_state, batch, rng, metrics=metrics)
    if not isinstance(out, EvalOutput):
      raise TypeError(f"{type(self.workload).__name__}.eval_step must return an "
                      f"EvalOutput, got {type(out).__name__}")
    per_example = dict(out.per_example or {})
    if per_example:
      per_example[VALID] = batch[VALID]
    return dict(out.sums), per_example

  # ----- host batches ----------------------------------------------------------

  def local_batch_size(self, global_batch_size: int, mesh: Any) -> int:
    """This process's eval batch: its share, rounded up to split over its devices."""
    processes = jax.process_count()
    local_devices = max(1, mesh.devices.size // processes) if mesh is not None else 1
    share = -(-global_batch_size // processes)
    return -(-share // local_devices) * local_devices

  def _fresh(self, split: str, data_dir: str | None, batch_size: int,
             shard_index: int, num_shards: int) -> Iterator[Any]:
    pad_values = dict(self.workload.batch_pad_values)
    for batch in self.workload.eval_batches(split, data_dir, batch_size,
                                            shard_index=shard_index,
                                            num_shards=num_shards):
      yield batch if VALID in batch else pad_batch(batch, batch_size, pad_values)

  def host_batches(self, split: str, data_dir: str | None, batch_size: int,
                   shard_index: int = 0, num_shards: int = 1) -> Iterator[Any]:
    """This shard's padded host batches, from the cache when it holds them."""
    key = (split, data_dir, batch_size, shard_index, num_shards)
    cached = self._cache.get(key)
    if cached is not None and cached.complete:
      yield from cached.batches
      return
    kept: list[Any] | None = [] if self.cache_bytes > 0 else None
    size = 0
    for batch in self._fresh(split, data_dir, batch_size, shard_index, num_shards):
      if kept is not None:
        size += _nbytes(batch)
        if size <= self.cache_bytes:
          kept.append(batch)
        else:
          kept = None  # too big to keep: stream it every time
      yield batch
    if kept is not None:
      self._cache[key] = _Cached(kept, complete=True)

  def _aligned(self, batches: Iterator[Any], template: Any) -> Iterator[Any]:
    """With several processes, as many batches on each (padding-only where short)."""
    if jax.process_count() == 1:
      yield from batches
      return
    from jax.experimental import multihost_utils

    last = template
    while True:
      batch = next(batches, None)
      flags = multihost_utils.process_allgather(np.array(batch is not None))
      if not np.any(flags):
        return
      if batch is None:
        batch = padding_only(last, dict(self.workload.batch_pad_values))
      last = batch
      yield batch

  # ----- one split ----------------------------------------------------------

  def evaluate(self, split: str, params: Any, model_state: Any, rng: jax.Array,
               data_dir: str | None, global_batch_size: int,
               metrics: str = "all") -> dict[str, float]:
    """Metrics of ``split`` (``"eval_train"``, ``"validation"``, ``"test"``)."""
    if metrics not in METRIC_SETS:
      raise ValueError(f"metrics must be one of {METRIC_SETS}, got {metrics!r}")
    mesh = sharding.mesh_of(params)
    batch_size = self.local_batch_size(global_batch_size, mesh)
    shard, shards = jax.process_index(), jax.process_count()
    batches = self.host_batches(split, data_dir, batch_size, shard, shards)
    template = None
    if shards > 1:
      template = next(self.host_batches(split, data_dir, batch_size, 0, shards))
    sums = None
    rows: dict[str, list[np.ndarray]] = {}
    for batch in self._aligned(batches, template):
      device_batch = sharding.shard_batch(batch, mesh) if mesh is not None else batch
      batch_sums, per_example = self._step(params, model_state, device_batch, rng,
                                           metrics=metrics)
      sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
      if per_example:
        host = _to_host(per_example)
        keep = host.pop(VALID) > 0
        for name, values in host.items():
          rows.setdefault(name, []).append(values[keep])
    if sums is None:
      raise ValueError(f"split {split!r} has no examples")
    totals = {k: np.asarray(v) for k, v in jax.device_get(sums).items()}
    per_example_all = {k: np.concatenate(v) for k, v in rows.items()}
    return self.workload.finalize_metrics(split, totals, per_example_all, metrics=metrics)


def _to_host(tree: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
  if jax.process_count() == 1:
    return {k: np.asarray(v) for k, v in jax.device_get(dict(tree)).items()}
  from jax.experimental import multihost_utils

  return {k: np.asarray(v) for k, v in
          multihost_utils.process_allgather(dict(tree), tiled=True).items()}
