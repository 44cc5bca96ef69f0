"""Input helpers every workload shares: seeds, epochs, shards, tfds, batching.

Two kinds of input feed a workload:

* In-memory (generated small variants, small real datasets): `epoch_order`
  gives the training order, a fresh permutation per epoch, as an infinite
  stream that can start at any position in O(1) (resuming at batch k reads
  nothing before it).
* Prepared TFDS datasets (full sizes): `tfds_split` opens one split, or this
  process's even share of it, as a `tf.data.Dataset` for the workload's own
  preprocessing; `tfds_numpy` iterates it as numpy.

`stack_examples` groups per-example dicts into batches. Eval batches may be
short: the evaluation engine pads them (`algoperf_avg.evaluation.engine`).

Small variants whose generated data goes through a real on-disk reader write
it once into the cache: ``build_once(cache_dir(name, config), write)``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from algoperf_avg import spec

# Where generated datasets are kept (``$ALGOPERF_AVG_CACHE``, else ~/.cache/algoperf_avg).
CACHE_ENV = "ALGOPERF_AVG_CACHE"

# Per-example mask the evaluation engine adds to padded batches (1 real, 0 padding).
VALID = "valid"
def seed_from_rng(rng: jax.Array) -> int:
  """A non-negative int32 seed drawn from a JAX key (typed or raw)."""
  return int(jax.random.randint(rng, (), 0, np.iinfo(np.int32).max))


def shard_bounds(num_examples: int, shard_index: int, num_shards: int) -> tuple[int, int]:
  """``[start, stop)`` of shard ``shard_index`` of ``num_shards`` contiguous shards.

  Shard sizes differ by at most one, and the shards cover every example once.
  """
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard {shard_index} of {num_shards} does not exist")
  return (num_examples * shard_index // num_shards,
          num_examples * (shard_index + 1) // num_shards)


def _permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def epoch_order(num_examples: int, seed: int, start: int = 0) -> Iterator[int]:
  """Example indices in training order, forever: one permutation per epoch.

  Epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)``, so
  position ``p`` of the stream depends only on ``(seed, p)``; starting at
  ``start`` computes one permutation, whatever ``start`` is.
  """
  for batch in index_batches(num_examples, 1, seed, start_batch=start):
    yield int(batch[0])


def block_epoch_order(num_examples: int, block_size: int, seed: int,
                      start: int = 0) -> Iterator[int]:
  """`epoch_order` for data made or read in blocks: one block at a time.

  The examples are ``num_examples // block_size`` blocks of consecutive
  indices. Epoch ``e`` visits the blocks in the order
  ``default_rng([seed, e]).permutation(num_blocks)`` and the examples of block
  ``b`` in ``default_rng([seed, e, b]).permutation(block_size)``, so a stream
  needs one block in memory at a time (a generator makes block ``b`` on
  demand), position ``p`` depends only on ``(seed, p)``, and starting at
  ``start`` costs two permutations.
  """
  if block_size < 1 or num_examples < block_size or num_examples % block_size:
    raise ValueError(f"{num_examples} examples do not split into blocks of {block_size}")
  num_blocks = num_examples // block_size
  epoch, offset = divmod(start, num_examples)
  slot, offset = divmod(offset, block_size)
  while True:
    blocks = _permutation(num_blocks, seed, epoch)
    for block in blocks[slot:]:
      inner = np.random.default_rng([seed, epoch, int(block)]).permutation(block_size)
      for i in inner[offset:]:
        yield int(block) * block_size + int(i)
      offset = 0
    epoch, slot = epoch + 1, 0


def index_batches(num_examples: int, batch_size: int, seed: int,
                  start_batch: int = 0) -> Iterator[np.ndarray]:
  """`epoch_order` cut into batches of ``batch_size`` indices, from ``start_batch``.

  Batches run across epoch boundaries (no example is dropped), so batch ``k``
  holds stream positions ``[k * batch_size, (k + 1) * batch_size)``; starting
  at any ``k`` costs one permutation.
  """
  if num_examples < 1:
    raise ValueError("an empty split cannot be repeated")
  epoch, offset = divmod(start_batch * batch_size, num_examples)
  order = _permutation(num_examples, seed, epoch)
  while True:
    parts, need = [], batch_size
    while need:
      part = order[offset:offset + need]
      parts.append(part)
      need -= len(part)
      offset += len(part)
      if offset == num_examples:
        epoch, offset = epoch + 1, 0
        order = _permutation(num_examples, seed, epoch)
    yield np.concatenate(parts)


class Resumable:
  """A training stream that knows where it is and restarts there in O(1).

  ``make(start)`` returns an iterator of ``(batch, position)`` pairs, the
  stream after position ``start`` (None: from the beginning); a position is
  JSON (an example offset, an epoch and a count, ...). A workload returns
  ``Resumable(make, start)`` from ``train_batches(..., start=...)``; the runner
  stores `checkpoint`'s value with each checkpoint and passes it back as
  ``start`` on resume, so a restart at batch k reads nothing before it.
  """

  def __init__(self, make: Callable[[Any], Iterator[tuple[Any, Any]]], start: Any = None):
    self._iterator = make(start)
    self.position = start

  def __iter__(self) -> Resumable:
    return self

  def __next__(self) -> Any:
    batch, self.position = next(self._iterator)
    return batch

  def checkpoint(self, directory: str) -> Any:
    """The JSON state to resume from (``directory`` is for streams with big state)."""
    del directory
    return self.position


class TfCheckpointed:
  """Numpy elements of a `tf.data` pipeline whose iterator state can be saved.

  `save` writes TensorFlow's own iterator checkpoint (shuffle buffers and file
  positions included), so a pipeline restored from it continues exactly where
  it stopped, without reading what came before.
  """

  def __init__(self, dataset: Any, restore_from: str | None = None):
    import tensorflow as tf

    self._tf = tf
    self._iterator = iter(dataset)
    if restore_from:
      tf.train.Checkpoint(iterator=self._iterator).read(restore_from).expect_partial()

  def __iter__(self) -> TfCheckpointed:
    return self

  def __next__(self) -> Any:
    return self._tf.nest.map_structure(lambda t: t.numpy(), next(self._iterator))

  def save(self, path: str) -> str:
    """Write the iterator state under ``path`` (a file prefix); returns the prefix."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return self._tf.train.Checkpoint(iterator=self._iterator).write(path)


def repeat_passes(make_pass: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
  """``make_pass(0)``, ``make_pass(1)``, ... chained forever (one per epoch)."""
  return itertools.chain.from_iterable(map(make_pass, itertools.count()))


def stack_examples(examples: Iterable[Mapping[str, Any]], batch_size: int,
                   drop_remainder: bool = False) -> Iterator[dict[str, Any]]:
  """Per-example dicts (nested dicts/tuples of arrays) stacked into batches.

  The last batch is shorter than ``batch_size`` unless ``drop_remainder``.
  """
  iterator = iter(examples)
  while chunk := list(itertools.islice(iterator, batch_size)):
    if drop_remainder and len(chunk) < batch_size:
      return
    yield jax.tree.map(lambda *leaves: np.stack(leaves), *chunk)


def leading_size(batch: Mapping[str, Any]) -> int:
  """The example count of a batch whose leaves all share their leading axis."""
  sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        "an eval batch whose leaves do not share a leading example axis "
        f"(leading sizes {sorted(s for s in sizes if s is not None)}) must come "
        f"padded to a fixed shape with its own {VALID!r} mask")
  return sizes.pop()


def pad_value_tree(pad_values: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
  """Per-leaf pad values for ``batch``: 0 unless ``pad_values`` names the key.

  A key's value is a scalar for all its leaves or a prefix of its structure
  (``{"inputs": (0, 1)}`` pads ``inputs = (audio, paddings)`` with 0 and 1).
  """
  unknown = set(pad_values) - set(batch)
  if unknown:
    raise ValueError(f"pad values for keys {sorted(unknown)} that the batch lacks")
  tree = {}
  for key, leaf in batch.items():
    value = pad_values.get(key, 0)
    tree[key] = jax.tree.map(lambda v, sub: jax.tree.map(lambda _: v, sub), value, leaf)
  return tree


def pad_batch(batch: Mapping[str, Any], size: int,
              pad_values: Mapping[str, Any] | None = None, *,
              add_valid: bool = True) -> dict[str, Any]:
  """``batch`` padded along its example axis to ``size``.

  Every key is padded with its pad value (`pad_value_tree`), so a ``weights``
  of any shape is 0 on the padding. With ``add_valid``, a per-example
  ``valid`` mask (1 real, 0 padding) is added.

  Raises:
    ValueError: the batch has more than ``size`` examples, its leaves disagree
      on the example count, or it already has a ``valid`` key.
  """
  if add_valid and VALID in batch:
    raise ValueError(f"batch already has a {VALID!r} key")
  n = leading_size(batch)
  if n > size:
    raise ValueError(f"an eval batch of {n} examples exceeds the eval batch size {size}")
  values = pad_value_tree(pad_values or {}, batch)

  def pad(leaf, value):
    leaf = np.asarray(leaf)
    if n == size:
      return leaf
    filler = np.full((size - n, *leaf.shape[1:]), value, leaf.dtype)
    return np.concatenate([leaf, filler])

  padded = dict(jax.tree.map(pad, dict(batch), values))
  if add_valid:
    padded[VALID] = (np.arange(size) < n).astype(np.float32)
  return padded


def padding_only(like: Mapping[str, Any], pad_values: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
  """A batch shaped like ``like`` holding only padding (``valid`` all 0)."""
  values = pad_value_tree(pad_values or {}, {k: v for k, v in like.items() if k != VALID})
  filled = jax.tree.map(lambda leaf, v: np.full(np.shape(leaf), v, np.asarray(leaf).dtype),
                        {k: v for k, v in like.items() if k != VALID}, values)
  filled[VALID] = np.zeros_like(np.asarray(like[VALID]))
  return dict(filled)


def prepare_how_to(workload: str, command: str) -> str:
  """The sentence every "data not prepared" error ends with."""
  return f"prepare it once with: algoperf-avg setup-data {workload} {command}"


def tfds_split(
    name: str,
    data_dir: str,
    split: str,
    *,
    how_to: str,
    shuffle_seed: int | None = None,
    num_examples: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    decoders: Any = None,
) -> Any:
  """One split of a prepared TFDS dataset as a `tf.data.Dataset`.

  Args:
    name: the builder and version, e.g. ``"ogbg_molpcba:0.1.3"``.
    data_dir: the TFDS data directory holding it.
    split: a TFDS split name (``"train"``, ``"validation"``, ``"test[:10]"``).
    how_to: the preparation sentence for errors (`prepare_how_to`).
    shuffle_seed: shuffle the files with this seed (examples are shuffled by
      the caller, after any filtering); None reads in the stored order.
    num_examples: only the split's first ``num_examples`` (all of them when
      the split is smaller), before sharding.
    shard_index: this process's shard of an even split (`tfds.even_splits`).
    num_shards: number of shards (processes reading the split).
    decoders: passed to `builder.as_dataset` (e.g. skip image decoding).

  Raises:
    spec.UsageError: the dataset is not prepared in ``data_dir``.
  """
  import tensorflow as tf  # Lazy: in-memory workloads never need TensorFlow.
  import tensorflow_datasets as tfds

  tf.config.set_visible_devices([], "GPU")  # keep accelerators for JAX
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise spec.UsageError(
        f"no prepared {name} under {data_dir!r} (looked in {builder.data_dir}); "
        f"{how_to}")
  if num_examples is not None:
    available = builder.info.splits[split].num_examples
    split = f"{split}[:{min(num_examples, available)}]"
  if num_shards > 1:
    split = tfds.even_splits(split, num_shards, drop_remainder=False)[shard_index]
  return builder.as_dataset(
      split=split, shuffle_files=shuffle_seed is not None, decoders=decoders,
      read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
  )


def tfds_numpy(dataset: Any) -> Iterator[Any]:
  """Iterate a `tf.data.Dataset` as numpy (nested dicts/tuples of arrays)."""
  import tensorflow_datasets as tfds

  return iter(tfds.as_numpy(dataset))


def cache_dir(name: str, config: Any = None) -> str:
  """The cache folder of a generated dataset: ``<cache>/<name>-<hash of config>``.

  ``<cache>`` is ``$ALGOPERF_AVG_CACHE``, else ``~/.cache/algoperf_avg``.
  ``config`` is JSON-serialisable (a dataclass is turned into a dict), so a
  change of the config gets a fresh folder and never reads stale files;
  without one the folder is ``<cache>/<name>`` (the caller keys ``name``).
  """
  import dataclasses

  root = os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "algoperf_avg")
  if config is None:
    return os.path.join(root, name)
  if dataclasses.is_dataclass(config):
    config = dataclasses.asdict(config)
  digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(root, f"{name}-{digest}")


def build_once(path: str, build: Callable[[str], Any]) -> str:
  """``path``, built the first time by ``build(folder)``; returns ``path``.

  ``build`` writes into a fresh sibling folder that is then renamed to
  ``path`` in one step, so an interrupted build leaves nothing at ``path``
  and processes building at once all end with one complete folder.
  """
  if os.path.isdir(path):
    return path
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=os.path.basename(path) + ".partial-", dir=parent)
  try:
    build(scratch)
    try:
      os.rename(scratch, path)
    except OSError:
      if not os.path.isdir(path):  # not a lost race: a real failure
        raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return path
