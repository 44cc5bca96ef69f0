"""WMT de->en from prepared TFDS datasets -> AlgoPerf's token batches.

Data folder (AlgoPerf's layout, ``<data_root>/wmt``)::

  wmt17_translate/de-en/1.0.0/   train (5,906,184 pairs)
  wmt14_translate/de-en/1.0.0/   validation (3,000), test (3,003)
  wmt_sentencepiece_model        32k unigram SentencePiece model

`setup_data` prepares it: both TFDS datasets, then the tokenizer trained on
the first 1e7 characters of wmt17 train. As in AlgoPerf, each pair is
tokenized with EOS (id 2) appended, pairs with more than 256 tokens on
either side are dropped (on every split), and then:

* training: shuffled through a 1024-pair buffer (files in stored order),
  repeated epoch after epoch, packed into rows of 256 tokens with
  ``*_segmentation`` (pair index from 1, 0 = padding) and ``*_position``
  ids, and batched;
* evaluation: one pass in stored order, each side padded with 0 to 256.

Batches are dicts of ``(B, 256)`` arrays: ``inputs``, ``targets`` (int32)
and ``weights`` (float32, 1 where the target is a real token); training
batches add ``inputs_position``, ``targets_position``,
``inputs_segmentation`` and ``targets_segmentation`` (int32). Every key pads
with 0 (`PAD_VALUES`).

Tokenization runs in Python with the ``sentencepiece`` package (the same
model and ids as AlgoPerf's tensorflow_text op); TensorFlow only reads the
TFDS files and is imported lazily.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from algoperf_avg import spec
from workloads.wmt.decode import PAD_ID

TRAIN_DATASET = "wmt17_translate/de-en:1.0.0"
EVAL_DATASET = "wmt14_translate/de-en:1.0.0"
SPLITS = {
    "train": (TRAIN_DATASET, "train"),
    "eval_train": (TRAIN_DATASET, "train"),
    "validation": (EVAL_DATASET, "validation"),
    "test": (EVAL_DATASET, "test"),
}
VOCAB_FILENAME = "wmt_sentencepiece_model"
VOCAB_SIZE = 32_000
TOKENIZER_MAX_CHARS = 10**7
MAX_LENGTH = 256
SHUFFLE_BUFFER_SIZE = 1024
_READ_CHUNK = 1024  # pairs read and tokenized together

TRAIN_KEYS = ("inputs", "targets", "inputs_position", "targets_position",
              "inputs_segmentation", "targets_segmentation", "weights")
PAD_VALUES = {key: 0 for key in TRAIN_KEYS}

Batch = dict[str, np.ndarray]
Pair = tuple[np.ndarray, np.ndarray]


def how_to_prepare(workload: str = "wmt") -> str:
  """The sentence every "data not prepared" error ends with."""
  return (f"prepare it once with: algoperf-avg setup-data {workload} "
          f"--data_dir DATA_ROOT (it writes DATA_ROOT/{workload})")


def data_problem(data_dir: str | os.PathLike) -> str | None:
  """What is missing in a WMT data folder (None when prepared); cheap, reads nothing.

  Looks for both TFDS datasets' ``dataset_info.json`` and the tokenizer.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    return f"no data folder {data_dir!r}"
  for name in (TRAIN_DATASET, EVAL_DATASET):
    folder = os.path.join(data_dir, *name.replace(":", "/").split("/"))
    if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
      return f"no prepared {name} under {data_dir!r} (looked in {folder})"
  if not os.path.isfile(os.path.join(data_dir, VOCAB_FILENAME)):
    return f"no tokenizer {VOCAB_FILENAME!r} in {data_dir!r}"
  return None


def check_data(data_dir: str | os.PathLike | None, workload: str = "wmt") -> None:
  """Raises `spec.UsageError` unless ``data_dir`` holds prepared WMT data."""
  how_to = how_to_prepare(workload)
  if not data_dir:
    raise spec.UsageError(f"workload {workload} reads its data from a data dir; "
                          f"pass --data_dir; {how_to}")
  problem = data_problem(data_dir)
  if problem:
    raise spec.UsageError(f"{problem}; {how_to}")


def setup_data(data_dir: str | os.PathLike, *, vocab_size: int = VOCAB_SIZE,
               max_chars: int = TOKENIZER_MAX_CHARS) -> None:
  """Downloads and prepares both TFDS datasets, then trains the tokenizer.

  Steps already done (a prepared dataset, an existing tokenizer) are skipped,
  so an interrupted setup can be rerun. Downloading needs the internet and
  some 2 GB of disk.
  """
  data_dir = os.fspath(data_dir)
  os.makedirs(data_dir, exist_ok=True)
  import tensorflow_datasets as tfds

  for name in (TRAIN_DATASET, EVAL_DATASET):
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
  if not os.path.isfile(os.path.join(data_dir, VOCAB_FILENAME)):
    train_tokenizer(data_dir, vocab_size=vocab_size, max_chars=max_chars)


def _even_shard(num_examples: int, shard_index: int, num_shards: int) -> tuple[int, int]:
  """``[start, stop)`` of `tfds.even_splits`'s shard (the first ones one longer)."""
  base, extra = divmod(num_examples, num_shards)
  start = shard_index * base + min(shard_index, extra)
  return start, start + base + (shard_index < extra)


def _open_split(data_dir: str, split: str, *, num_examples: int | None,
                shard_index: int, num_shards: int, skip: int = 0) -> Any:
  """The TFDS dataset of ``split`` (or this shard of it), in stored order.

  ``skip`` starts that many pairs into it, reading nothing before them.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds

  tf.config.set_visible_devices([], "GPU")  # keep accelerators for JAX
  if split not in SPLITS:
    raise spec.UsageError(f"unknown split {split!r}; choose from {list(SPLITS)}")
  name, tfds_split = SPLITS[split]
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise spec.UsageError(
        f"no prepared {name} under {data_dir!r} (looked in {builder.data_dir}); "
        f"{how_to_prepare()}")
  total = builder.info.splits[tfds_split].num_examples
  if num_examples is not None:  # all of a shorter split
    num_examples = min(total, num_examples)
  if skip:
    total = total if num_examples is None else num_examples
    start, stop = _even_shard(total, shard_index, num_shards)
    tfds_split = f"{tfds_split}[{min(start + skip, stop)}:{stop}]"
  else:
    if num_examples is not None:
      tfds_split = f"{tfds_split}[:{num_examples}]"
    if num_shards > 1:
      tfds_split = tfds.even_splits(tfds_split, num_shards)[shard_index]
  dataset = builder.as_dataset(split=tfds_split, shuffle_files=False)
  source, target = builder.info.supervised_keys  # ("de", "en")
  return dataset.map(lambda x: (x[source], x[target]))


def read_pairs(
    data_dir: str | os.PathLike,
    split: str,
    *,
    num_examples: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    skip: int = 0,
) -> Iterator[tuple[str, str]]:
  """``(german, english)`` strings of a split, in stored order.

  Args:
    data_dir: the WMT data folder (see the module docstring).
    split: "train", "eval_train" (the train split), "validation" or "test".
    num_examples: read only the first ``num_examples`` of the split.
    shard_index: this host's shard (`tfds.even_splits`) ...
    num_shards: ... of this many.
    skip: start this many pairs into the (shard of the) split, in O(1).

  Raises:
    spec.UsageError: unknown split or unprepared dataset.
  """
  import tensorflow_datasets as tfds

  dataset = _open_split(os.fspath(data_dir), split, num_examples=num_examples,
                        shard_index=shard_index, num_shards=num_shards, skip=skip)
  for sources, targets in tfds.as_numpy(dataset.batch(_READ_CHUNK)):
    for source, target in zip(sources, targets, strict=True):
      yield source.decode("utf-8"), target.decode("utf-8")


def write_tokenizer_corpus(pairs: Iterable[tuple[str, str]], path: str,
                           max_chars: int = TOKENIZER_MAX_CHARS) -> int:
  """Writes source and target lines of whole pairs until ``max_chars``.

  As AlgoPerf: each pair adds its source line then its target line, and
  characters are counted as UTF-8 bytes with the newline; the first pair
  that reaches ``max_chars`` is the last written. Returns the count.
  """
  count = 0
  with open(path, "wb") as corpus:
    for pair in pairs:
      if count >= max_chars:
        break
      for text in pair:
        line = text.encode("utf-8") + b"\n"
        corpus.write(line)
        count += len(line)
  return count


def train_tokenizer(
    data_dir: str | os.PathLike,
    *,
    vocab_size: int = VOCAB_SIZE,
    max_chars: int = TOKENIZER_MAX_CHARS,
    split: str = "train",
) -> str:
  """Trains AlgoPerf's unigram SentencePiece model on the start of ``split``.

  Full character coverage, SentencePiece's default ids (0 unknown, 1 BOS,
  2 EOS; 0 doubles as padding, as in AlgoPerf). The model is written to
  ``data_dir/wmt_sentencepiece_model`` atomically; returns that path.
  """
  import sentencepiece as spm

  data_dir = os.fspath(data_dir)
  path = os.path.join(data_dir, VOCAB_FILENAME)
  with tempfile.TemporaryDirectory() as scratch:
    corpus = os.path.join(scratch, "corpus.txt")
    write_tokenizer_corpus(read_pairs(data_dir, split), corpus, max_chars)
    prefix = os.path.join(scratch, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus, vocab_size=vocab_size, character_coverage=1.0,
        model_prefix=prefix, model_type="unigram", minloglevel=2)
    partial = path + ".partial"
    with open(prefix + ".model", "rb") as src, open(partial, "wb") as dst:
      dst.write(src.read())
    os.replace(partial, path)
  return path


def load_tokenizer(data_dir: str | os.PathLike) -> Any:
  """The ``sentencepiece.SentencePieceProcessor`` of a prepared data folder."""
  import sentencepiece as spm

  path = os.path.join(os.fspath(data_dir), VOCAB_FILENAME)
  if not os.path.isfile(path):
    raise spec.UsageError(f"no tokenizer at {path!r}; {how_to_prepare()}")
  return spm.SentencePieceProcessor(model_file=path)


def tokenize_pairs(
    pairs: Iterable[tuple[str, str]],
    tokenizer: Any,
    max_length: int = MAX_LENGTH,
) -> Iterator[Pair]:
  """Token ids (int32, EOS appended) of each pair, dropping over-long ones.

  A pair is dropped when either side has more than ``max_length`` tokens
  (EOS included), as AlgoPerf filters every split.
  """
  return (pair for pair in _tokenize_or_none(pairs, tokenizer, max_length)
          if pair is not None)


def shuffle(items: Iterable[Any], buffer_size: int, seed: int | Sequence[int]
            ) -> Iterator[Any]:
  """`tf.data.Dataset.shuffle` semantics with a numpy generator.

  Each output is drawn uniformly from a buffer of the next ``buffer_size``
  items, and replaced by the next input; the buffer drains at the end.
  """
  rng = np.random.default_rng(seed)
  buffer: list[Any] = []
  for item in items:
    if len(buffer) < buffer_size:
      buffer.append(item)
      continue
    index = int(rng.integers(buffer_size))
    yield buffer[index]
    buffer[index] = item
  while buffer:
    index = int(rng.integers(len(buffer)))
    buffer[index], buffer[-1] = buffer[-1], buffer[index]
    yield buffer.pop()


def _packed_row(group: list[Pair], max_length: int) -> Batch:
  row = {}
  for side, key in enumerate(("inputs", "targets")):
    ids = np.zeros(max_length, np.int32)
    positions = np.zeros(max_length, np.int32)
    parts = [pair[side] for pair in group]
    joined = np.concatenate(parts)
    ids[: joined.size] = joined
    positions[: joined.size] = np.concatenate([np.arange(p.size) for p in parts])
    # Pair index counted at each position 0, zeroed on padding (and, as in
    # AlgoPerf, on any token id 0).
    segments = np.cumsum(positions == 0).astype(np.int32) * (ids != PAD_ID)
    row[key], row[key + "_position"] = ids, positions
    row[key + "_segmentation"] = segments
  return row


def pack_pairs(pairs: Iterable[Pair], max_length: int = MAX_LENGTH) -> Iterator[Batch]:
  """Packs pairs into rows of ``max_length`` tokens, AlgoPerf's way.

  The stream is cut into chunks of ``max_length`` pairs (AlgoPerf batches
  that many before packing); inside a chunk, pairs are appended to the open
  row while both sides still fit, else the row is closed and a new one
  opened; each chunk's last row is closed with it. Each side of a pair is
  first cut to its leading ``count(id != 0)`` ids, as AlgoPerf strips its
  zero padding (this only matters for pairs containing id 0, SentencePiece's
  unknown token).

  Yields:
    Rows ``{"inputs", "targets", "*_position", "*_segmentation"}``, each
    ``(max_length,)`` int32.
  """
  iterator = iter(pairs)
  while chunk := list(itertools.islice(iterator, max_length)):
    group: list[Pair] = []
    used = [0, 0]
    for pair in chunk:
      pair = tuple(side[: np.count_nonzero(side)][:max_length] for side in pair)
      if group and any(u + side.size > max_length
                       for u, side in zip(used, pair, strict=True)):
        yield _packed_row(group, max_length)
        group, used = [], [0, 0]
      group.append(pair)
      used = [u + side.size for u, side in zip(used, pair, strict=True)]
    yield _packed_row(group, max_length)


def pad_pair(pair: Pair, max_length: int = MAX_LENGTH) -> Batch:
  """One evaluation example: both sides padded with 0 to ``max_length``."""
  row = {}
  for key, ids in zip(("inputs", "targets"), pair, strict=True):
    padded = np.zeros(max_length, np.int32)
    padded[: ids.size] = ids
    row[key] = padded
  return row


def stack_rows(rows: Iterable[Batch], batch_size: int, *, drop_remainder: bool,
               pad_to_full: bool = False) -> Iterator[Batch]:
  """Stacks rows into batches and adds ``weights = (targets > 0)``.

  The last batch is dropped if short and ``drop_remainder``, else kept short
  or, with ``pad_to_full``, completed with `PAD_VALUES` rows (weight 0).
  """
  iterator = iter(rows)
  while chunk := list(itertools.islice(iterator, batch_size)):
    if len(chunk) < batch_size and drop_remainder:
      return
    batch = {key: np.stack([row[key] for row in chunk]) for key in chunk[0]}
    if pad_to_full and len(chunk) < batch_size:
      batch = {key: np.concatenate([value, np.full(
          (batch_size - len(chunk),) + value.shape[1:], PAD_VALUES[key], value.dtype)])
               for key, value in batch.items()}
    batch["weights"] = (batch["targets"] > 0).astype(np.float32)
    yield batch


def num_pairs(data_dir: str | os.PathLike, split: str, *, shard_index: int = 0,
              num_shards: int = 1) -> int:
  """Pairs stored in this shard of ``split`` (before the length filter)."""
  import tensorflow_datasets as tfds

  name, tfds_split = SPLITS[split]
  builder = tfds.builder(name, data_dir=os.fspath(data_dir))
  start, stop = _even_shard(builder.info.splits[tfds_split].num_examples,
                            shard_index, num_shards)
  return stop - start


class TrainStream:
  """Packed training batches of this host's shard, forever, resumable in O(1).

  Epoch ``e`` reads the train split in stored order and shuffles it (as
  `shuffle`, seed ``(seed, e)``); packing (`pack_pairs`) and batching run
  across epoch boundaries, as AlgoPerf's ``shuffle -> repeat -> pack ->
  batch``. Pairs are taken from the shuffle ``max_length`` at a time (one
  packing chunk), so between batches the whole position is: the epoch, the
  pairs read from it, the shuffle's generator and buffer, and the packed rows
  not yet batched. `checkpoint` writes that to a file; a stream started from
  it reads the split from the saved offset (a TFDS slice) and continues with
  the very next batch.
  """

  def __init__(
      self,
      data_dir: str | os.PathLike,
      tokenizer: Any,
      batch_size: int,
      seed: int,
      *,
      max_length: int = MAX_LENGTH,
      shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
      shard_index: int = 0,
      num_shards: int = 1,
      start: Mapping[str, Any] | None = None,
  ):
    self._data_dir = os.fspath(data_dir)
    self._tokenizer = tokenizer
    self._batch_size, self._seed = batch_size, seed
    self._max_length, self._buffer_size = max_length, shuffle_buffer_size
    self._shard = (shard_index, num_shards)
    self._size = num_pairs(data_dir, "train", shard_index=shard_index,
                           num_shards=num_shards)
    if self._size == 0:
      raise spec.UsageError(f"the train split in {self._data_dir!r} has no pairs "
                            f"for shard {shard_index} of {num_shards}")
    self._buffer: list[Pair] = []
    self._rows: list[Batch] = []
    if start is None:
      self._epoch, self._read, self._draining = 0, 0, False
      self._rng = np.random.default_rng((seed, 0))
    else:
      self._restore(start)
    self._source = self._open()

  # ----- the shuffled pair stream ------------------------------------------------

  def _open(self) -> Iterator[Pair | None]:
    """Tokenized pairs (None: too long) from ``self._read`` of this epoch."""
    if self._read >= self._size:
      return iter(())
    pairs = read_pairs(self._data_dir, "train", shard_index=self._shard[0],
                       num_shards=self._shard[1], skip=self._read)
    return _tokenize_or_none(pairs, self._tokenizer, self._max_length)

  def _next_pair(self) -> Pair:
    while True:
      if not self._draining:
        pair = next(self._source, _END)
        if pair is _END:
          self._draining = True
          continue
        self._read += 1
        if pair is None:
          continue
        if len(self._buffer) < self._buffer_size:
          self._buffer.append(pair)
          continue
        index = int(self._rng.integers(self._buffer_size))
        out, self._buffer[index] = self._buffer[index], pair
        return out
      if self._buffer:
        index = int(self._rng.integers(len(self._buffer)))
        self._buffer[index], self._buffer[-1] = self._buffer[-1], self._buffer[index]
        return self._buffer.pop()
      if self._read == 0:
        raise spec.UsageError(f"no train pair in {self._data_dir!r} is at most "
                              f"{self._max_length} tokens long")
      self._epoch, self._read, self._draining = self._epoch + 1, 0, False
      self._rng = np.random.default_rng((self._seed, self._epoch))
      self._source = self._open()

  # ----- batches -------------------------------------------------------------------

  def __iter__(self) -> TrainStream:
    return self

  def __next__(self) -> Batch:
    while len(self._rows) < self._batch_size:
      chunk = [self._next_pair() for _ in range(self._max_length)]
      self._rows.extend(pack_pairs(chunk, self._max_length))
    rows, self._rows = self._rows[: self._batch_size], self._rows[self._batch_size :]
    return next(stack_rows(rows, self._batch_size, drop_remainder=True))

  # ----- position ------------------------------------------------------------------

  def checkpoint(self, directory: str) -> dict[str, Any]:
    """Writes the position to ``directory/wmt_train_<shard>.npz``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"wmt_train_{self._shard[0]}.npz")
    meta = {"epoch": self._epoch, "read": self._read, "draining": self._draining,
            "rng": self._rng.bit_generator.state, "seed": self._seed,
            "batch_size": self._batch_size, "max_length": self._max_length}
    sides = {}
    for side in range(2):
      parts = [pair[side] for pair in self._buffer]
      sides[f"buffer_{side}"] = np.concatenate(parts) if parts else np.zeros(0, np.int32)
      sides[f"lengths_{side}"] = np.array([p.size for p in parts], np.int64)
    rows = {f"row_{key}": np.stack([r[key] for r in self._rows]) if self._rows else
            np.zeros((0, self._max_length), np.int32)
            for key in TRAIN_KEYS if key != "weights"}
    partial = path + ".partial.npz"
    np.savez(partial, meta=np.array(json.dumps(meta)), **sides, **rows)
    os.replace(partial, path)
    return {"file": path}

  def _restore(self, start: Mapping[str, Any]) -> None:
    with np.load(start["file"]) as saved:
      meta = json.loads(str(saved["meta"]))
      if (meta["seed"], meta["max_length"]) != (self._seed, self._max_length):
        raise ValueError(f"the input state {start['file']} is of another stream")
      self._epoch, self._read, self._draining = (
          meta["epoch"], meta["read"], meta["draining"])
      self._rng = np.random.default_rng()
      self._rng.bit_generator.state = meta["rng"]
      sides = [np.split(saved[f"buffer_{side}"], np.cumsum(saved[f"lengths_{side}"])[:-1])
               if saved[f"lengths_{side}"].size else [] for side in range(2)]
      self._buffer = [(a.astype(np.int32), b.astype(np.int32))
                      for a, b in zip(*sides, strict=True)]
      keys = [key for key in TRAIN_KEYS if key != "weights"]
      count = saved[f"row_{keys[0]}"].shape[0]
      self._rows = [{key: saved[f"row_{key}"][i] for key in keys} for i in range(count)]


_END = object()


def _tokenize_or_none(pairs: Iterable[tuple[str, str]], tokenizer: Any,
                      max_length: int) -> Iterator[Pair | None]:
  """`tokenize_pairs`, but one item per input pair: None where it is dropped."""
  iterator = iter(pairs)
  while chunk := list(itertools.islice(iterator, _READ_CHUNK)):
    sources = tokenizer.encode([s for s, _ in chunk], add_eos=True)
    targets = tokenizer.encode([t for _, t in chunk], add_eos=True)
    for source, target in zip(sources, targets, strict=True):
      if max(len(source), len(target)) <= max_length:
        yield np.asarray(source, np.int32), np.asarray(target, np.int32)
      else:
        yield None


def train_batches(
    data_dir: str | os.PathLike,
    tokenizer: Any,
    batch_size: int,
    seed: int,
    *,
    max_length: int = MAX_LENGTH,
    shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
    shard_index: int = 0,
    num_shards: int = 1,
    start: Mapping[str, Any] | None = None,
) -> TrainStream:
  """Packed training batches of this host's shard, forever (a `TrainStream`)."""
  return TrainStream(data_dir, tokenizer, batch_size, seed, max_length=max_length,
                     shuffle_buffer_size=shuffle_buffer_size, shard_index=shard_index,
                     num_shards=num_shards, start=start)


def eval_batches(
    data_dir: str | os.PathLike,
    tokenizer: Any,
    split: str,
    batch_size: int,
    *,
    num_examples: int | None = None,
    max_length: int = MAX_LENGTH,
    pad_to_full: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[Batch]:
  """One pass over a split in stored order, as padded ``(B, max_length)`` rows.

  ``num_examples`` reads only the first pairs of the split (``eval_train``:
  the start of train), counted before the length filter. The last batch is
  short unless ``pad_to_full``.
  """
  pairs = read_pairs(data_dir, split, num_examples=num_examples,
                     shard_index=shard_index, num_shards=num_shards)
  rows = (pad_pair(pair, max_length)
          for pair in tokenize_pairs(pairs, tokenizer, max_length))
  return stack_rows(rows, batch_size, drop_remainder=False, pad_to_full=pad_to_full)
