"""Criteo 1TB click logs -> AlgoPerf batches, streamed from the prepared shards.

A line of the click logs holds 40 tab-separated fields: the click label
(0/1), 13 integer ("dense") features and 26 categorical ones (8 hex digits);
any may be empty. The parsing is AlgoPerf's (itself MLPerf's DLRM reader):

* dense: empty or ``-1`` -> 0, then ``log(relu(x) + 1)``;
* categorical: empty -> ``"00000000"``; column ``i``'s string with ``str(i)``
  appended is hashed into ``CATEGORICAL_HASH_BUCKETS[i]`` buckets
  (`tf.strings.to_hash_bucket_fast`), so the same value in two columns gets
  two ids. The model takes these ids modulo its table size: the second stage
  of the hashing, into one table shared by all columns;
* one float32 ``inputs`` row per line, the 13 dense values then the 26 bucket
  ids as float32. Ids above 2**24 lose their last bits in that cast; AlgoPerf
  does the same, so its model sees the same rows.

Splits (`setup_data` prepares the layout, `workloads.criteo1tb.prepare`):
days 0-22 are ``train``; day 23's 5M-line shards 00-18 are ``test`` and 19-35
``validation``. Training reads the files of this process's share in a fresh
seeded permutation per epoch, each file from first to last line, and batches
run across files and epochs (AlgoPerf shuffles files only: the data is too
large to shuffle lines). Position ``p`` of that stream depends only on
``(seed, p)`` and starting there costs one permutation and skipping (reading
past) less than one shard's lines. Eval splits are read in file order;
``eval_train`` is the first examples of the training files in the order of a
fixed seed.

Batches are AlgoPerf's: ``inputs`` ``(B, 39)`` float32, ``targets`` ``(B,)``
float32 (0/1) and ``weights`` ``(B,)`` float32 (ones); padding rows are 0 in
every key (`PAD_VALUES`).

TensorFlow (tf.data) does the reading and parsing; it is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from algoperf_avg import spec
from workloads.criteo1tb import prepare

NUM_DENSE_FEATURES = 13
NUM_CATEGORICAL_FEATURES = 26
# Buckets of the first hashing stage, per categorical column: the raw
# vocabulary sizes of the Criteo 1TB columns, as AlgoPerf uses them.
CATEGORICAL_HASH_BUCKETS = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951,
    2953546, 403346, 10, 2208, 11938, 155, 4, 976, 14, 39979771,
    25641295, 39664984, 585935, 12972, 108, 36,
)
MISSING_CATEGORICAL = "00000000"
TRAIN_DAYS = range(23)
EVAL_DAY = 23
NUM_EVAL_DAY_SHARDS = 36
TEST_SHARDS = range(0, 19)
VALIDATION_SHARDS = range(19, 36)
SPLITS = ("train", "eval_train", "validation", "test")
EVAL_TRAIN_SEED = 0
# What every batch key is padded with (padding rows also get weight 0).
PAD_VALUES = {"inputs": 0.0, "targets": 0.0, "weights": 0.0}

Batch = dict[str, np.ndarray]


class ShardFile(NamedTuple):
  """One prepared file (a shard of a day) and its line count."""

  path: str
  num_lines: int


def data_problem(data_dir: str) -> str | None:
  """What is missing in the prepared folder ``data_dir`` (None when ready).

  Cheap: reads the manifest and compares file sizes, never file contents.
  """
  if not os.path.isdir(data_dir):
    return f"no folder {data_dir!r}; {prepare.HOW_TO}"
  manifest = prepare.read_manifest(data_dir)
  if manifest is None:
    return f"no {prepare.MANIFEST_NAME} in {data_dir!r}; {prepare.HOW_TO}"
  shards = manifest["shards"]
  days = {prepare.parse_shard_name(name)[0] for name in shards}
  missing = sorted(set(range(prepare.NUM_DAYS)) - days)
  if missing:
    return f"days {missing} are not prepared in {data_dir!r}; {prepare.HOW_TO}"
  eval_shards = [n for n in shards if prepare.parse_shard_name(n)[0] == EVAL_DAY]
  if len(eval_shards) != NUM_EVAL_DAY_SHARDS:
    return (f"day {EVAL_DAY} has {len(eval_shards)} shards in {data_dir!r}, not "
            f"{NUM_EVAL_DAY_SHARDS} (the validation/test split needs them); "
            f"{prepare.HOW_TO}")
  for name, info in shards.items():
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path) or os.path.getsize(path) != info["bytes"]:
      return (f"{path} is missing or changed since it was prepared; "
              f"{prepare.HOW_TO}")
  return None


def check_data(data_dir: str | None) -> None:
  """Raises `spec.UsageError` unless ``data_dir`` holds the prepared shards."""
  if not data_dir:
    raise spec.UsageError(
        f"criteo1tb reads the Criteo 1TB click logs: pass the data dir; "
        f"{prepare.HOW_TO}")
  problem = data_problem(data_dir)
  if problem:
    raise spec.UsageError(f"criteo1tb: {problem}")


def split_files(data_dir: str, split: str) -> list[ShardFile]:
  """The files of ``split`` in their fixed order (day, then shard index).

  ``eval_train`` has the training files. Raises `spec.UsageError` when the
  data is not prepared.
  """
  if split not in SPLITS:
    raise spec.UsageError(f"unknown criteo1tb split {split!r}; choose from {SPLITS}")
  check_data(data_dir)
  shards = prepare.read_manifest(data_dir)["shards"]
  if split in ("train", "eval_train"):
    wanted = lambda day, index: day in TRAIN_DAYS  # noqa: E731
  else:
    indices = VALIDATION_SHARDS if split == "validation" else TEST_SHARDS
    wanted = lambda day, index: day == EVAL_DAY and index in indices  # noqa: E731
  keys = sorted(
      (prepare.parse_shard_name(name), name) for name in shards
      if wanted(*prepare.parse_shard_name(name))
  )
  return [ShardFile(os.path.join(data_dir, name), shards[name]["lines"])
          for _, name in keys]


def num_examples(data_dir: str, split: str) -> int:
  """Lines in ``split`` (from the manifest)."""
  return sum(shard.num_lines for shard in split_files(data_dir, split))


def parse_lines(lines: Any) -> dict[str, Any]:
  """A batch of TSV lines (a string tensor) -> AlgoPerf's batch as tensors.

  Returns ``inputs`` ``(B, 39)`` float32, ``targets`` ``(B,)`` float32 and
  ``weights`` ``(B,)`` float32 ones. Usable inside `tf.data` (graph mode).
  """
  import tensorflow as tf

  defaults = ([[0.0]] * (1 + NUM_DENSE_FEATURES)
              + [[MISSING_CATEGORICAL]] * NUM_CATEGORICAL_FEATURES)
  fields = tf.io.decode_csv(lines, defaults, field_delim="\t", na_value="-1")
  targets = tf.reshape(fields[0], (-1,))
  dense = [tf.math.log(tf.nn.relu(f) + 1) for f in fields[1 : 1 + NUM_DENSE_FEATURES]]
  buckets = [
      tf.strings.to_hash_bucket_fast(field + str(i), CATEGORICAL_HASH_BUCKETS[i])
      for i, field in enumerate(fields[1 + NUM_DENSE_FEATURES :])
  ]
  inputs = tf.concat(
      [tf.stack(dense, axis=1), tf.cast(tf.stack(buckets, axis=1), tf.float32)],
      axis=1)
  return {"inputs": inputs, "targets": targets, "weights": tf.ones_like(targets)}


def parse_tsv(lines: Sequence[str | bytes]) -> Batch:
  """`parse_lines` on a list of lines, as numpy (eager; for tests and tools)."""
  import tensorflow as tf

  return {k: v.numpy() for k, v in parse_lines(tf.constant(list(lines))).items()}


def _lines_dataset(segments: Any) -> Any:
  """tf.data lines of ``(path, skip, take)`` segments, one after the other."""
  import tensorflow as tf

  return segments.flat_map(
      lambda path, skip, take: tf.data.TextLineDataset(path).skip(skip).take(take))


def _to_batches(lines: Any, batch_size: int, drop_remainder: bool) -> Iterator[Batch]:
  import tensorflow as tf

  dataset = lines.batch(batch_size, drop_remainder=drop_remainder)
  dataset = dataset.map(parse_lines, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _hide_accelerators_from_tf() -> None:
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")  # keep accelerators for JAX
  except RuntimeError:  # TensorFlow already started (by this or other code)
    pass


def _epoch_order(num_files: int, seed: Any, epoch: Any) -> Any:
  """TF ops: file indices of ``epoch`` (a stateless permutation)."""
  import tensorflow as tf

  return tf.random.experimental.index_shuffle(
      tf.range(num_files, dtype=tf.int64),
      seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]),
      max_index=tf.constant(num_files - 1, tf.int64))


def file_order(num_files: int, seed: int, epoch: int) -> np.ndarray:
  """The order in which ``epoch`` of a seeded stream reads its ``num_files`` files.

  A stateless permutation of ``(seed, epoch)``
  (`tf.random.experimental.index_shuffle`), so the training stream can compute
  any epoch's order inside tf.data, without Python.
  """
  _hide_accelerators_from_tf()
  return _epoch_order(num_files, seed, epoch).numpy()


def process_files(shards: Sequence[ShardFile], shard_index: int,
                  num_shards: int) -> list[ShardFile]:
  """The training files process ``shard_index`` of ``num_shards`` reads."""
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard {shard_index} of {num_shards} does not exist")
  # Checked for every process alike, so that all of them fail, not one.
  if any(not sum(s.num_lines for s in shards[i::num_shards])
         for i in range(num_shards)):
    raise spec.UsageError(
        f"criteo1tb: {len(shards)} training files cannot be split over "
        f"{num_shards} processes")
  return list(shards[shard_index::num_shards])


def training_segments(
    shards: Sequence[ShardFile], seed: int, start: int = 0
) -> Any:
  """tf.data ``(path, skip, take)`` of the training stream from ``start``, forever.

  Epoch ``e`` reads ``shards`` whole, in the order `file_order` ``(seed, e)``.
  Only the epoch holding ``start`` is laid out in Python (skipping the files
  before ``start`` and part of one file); later epochs are computed by
  tf.data, so the stream needs no Python generator.
  """
  import tensorflow as tf

  counts = [s.num_lines for s in shards]
  epoch, offset = divmod(start, sum(counts))
  first = []
  for j in file_order(len(shards), seed, epoch):
    if offset >= counts[j]:
      offset -= counts[j]
      continue
    first.append((shards[j].path, offset, counts[j] - offset))
    offset = 0
  paths_table = tf.constant([s.path for s in shards])
  counts_table = tf.constant(counts, tf.int64)

  def epoch_segments(later_epoch):
    order = tf.data.Dataset.from_tensor_slices(
        _epoch_order(len(shards), seed, later_epoch))
    return order.map(lambda j: (paths_table[j], tf.constant(0, tf.int64),
                                counts_table[j]))

  paths, skips, takes = zip(*first, strict=True)
  head = tf.data.Dataset.from_tensor_slices(
      (list(paths), np.array(skips, np.int64), np.array(takes, np.int64)))
  return head.concatenate(tf.data.Dataset.counter(epoch + 1).flat_map(epoch_segments))


def eval_segments(
    shards: Sequence[ShardFile], start: int, stop: int
) -> list[tuple[str, int, int]]:
  """``(path, skip, take)`` covering lines ``[start, stop)`` of ``shards`` in order."""
  segments, first = [], 0
  for path, lines in shards:
    lo, hi = max(start, first), min(stop, first + lines)
    if lo < hi:
      segments.append((path, lo - first, hi - lo))
    first += lines
  return segments


def train_batches(
    data_dir: str,
    batch_size: int,
    seed: int,
    *,
    start_batch: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[Batch]:
  """This process's training batches of ``batch_size`` lines, forever.

  Process ``shard_index`` of ``num_shards`` reads every ``num_shards``-th
  training file; batch ``k`` is lines ``[k * batch_size, (k + 1) *
  batch_size)`` of its stream (`training_segments`), so resuming at
  ``start_batch`` reads nothing before it but part of one file.
  """

  _hide_accelerators_from_tf()
  shards = process_files(split_files(data_dir, "train"), shard_index, num_shards)
  segments = training_segments(shards, seed, start_batch * batch_size)
  return _to_batches(_lines_dataset(segments), batch_size, drop_remainder=True)


def eval_batches(
    data_dir: str,
    split: str,
    batch_size: int,
    *,
    num_examples: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[Batch]:
  """One pass over ``split`` (its first ``num_examples`` lines), in a fixed order.

  The lines are cut into ``num_shards`` contiguous parts differing by at most
  one line; this process reads part ``shard_index`` in batches of
  ``batch_size``, the last one shorter (the evaluation engine pads it).
  ``eval_train`` reads the training files in the order of `EVAL_TRAIN_SEED`.
  """
  import tensorflow as tf

  _hide_accelerators_from_tf()
  shards = split_files(data_dir, split)
  if split == "eval_train":
    shards = [shards[j] for j in file_order(len(shards), EVAL_TRAIN_SEED, 0)]
  total = sum(s.num_lines for s in shards)
  if num_examples is not None:
    total = min(total, num_examples)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard {shard_index} of {num_shards} does not exist")
  start = total * shard_index // num_shards
  stop = total * (shard_index + 1) // num_shards
  segments = eval_segments(shards, start, stop)
  if not segments:
    return iter(())
  paths, skips, takes = zip(*segments, strict=True)
  dataset = tf.data.Dataset.from_tensor_slices(
      (list(paths), np.array(skips, np.int64), np.array(takes, np.int64)))
  return _to_batches(_lines_dataset(dataset), batch_size, drop_remainder=False)


def read_split(data_dir: str, split: str, *, num_examples: int | None = None,
               batch_size: int = 65_536) -> Batch:
  """A whole (small) split as one batch of numpy arrays, in `eval_batches` order."""
  batches = list(eval_batches(data_dir, split, batch_size, num_examples=num_examples))
  if not batches:
    return {k: np.zeros((0, NUM_DENSE_FEATURES + NUM_CATEGORICAL_FEATURES)
                        if k == "inputs" else (0,), np.float32) for k in PAD_VALUES}
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
