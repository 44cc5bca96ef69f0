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
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
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


def check_data(data_dir: str | os.PathLike | None, workload: str = "wmt") -> None:
  """Raises `spec.UsageError` unless ``data_dir`` holds prepared WMT data."""
  how_to = how_to_prepare(workload)
  if not data_dir:
    raise spec.UsageError(f"workload {workload} reads its data from a data dir; "
                          f"pass --data_dir; {how_to}")
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise spec.UsageError(f"no data dir {data_dir!r} for workload {workload}; {how_to}")
  import tensorflow_datasets as tfds  # Lazy: TensorFlow is slow to import.

  for name in (TRAIN_DATASET, EVAL_DATASET):
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise spec.UsageError(
          f"no prepared {name} under {data_dir!r} (looked in {builder.data_dir}); "
          f"{how_to}")
  if not os.path.isfile(os.path.join(data_dir, VOCAB_FILENAME)):
    raise spec.UsageError(
        f"no tokenizer {VOCAB_FILENAME!r} in {data_dir!r}; {how_to}")


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


def _open_split(data_dir: str, split: str, *, num_examples: int | None,
                shard_index: int, num_shards: int) -> Any:
  """The TFDS dataset of ``split`` (or this shard of it), in stored order."""
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
) -> Iterator[tuple[str, str]]:
  """``(german, english)`` strings of a split, in stored order.

  Args:
    data_dir: the WMT data folder (see the module docstring).
    split: "train", "eval_train" (the train split), "validation" or "test".
    num_examples: read only the first ``num_examples`` of the split.
    shard_index: this host's shard (`tfds.even_splits`) ...
    num_shards: ... of this many.

  Raises:
    spec.UsageError: unknown split or unprepared dataset.
  """
  import tensorflow_datasets as tfds

  dataset = _open_split(os.fspath(data_dir), split, num_examples=num_examples,
                        shard_index=shard_index, num_shards=num_shards)
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
  iterator = iter(pairs)
  while chunk := list(itertools.islice(iterator, _READ_CHUNK)):
    sources = tokenizer.encode([s for s, _ in chunk], add_eos=True)
    targets = tokenizer.encode([t for _, t in chunk], add_eos=True)
    for source, target in zip(sources, targets, strict=True):
      if max(len(source), len(target)) <= max_length:
        yield np.asarray(source, np.int32), np.asarray(target, np.int32)


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
) -> Iterator[Batch]:
  """Packed training batches of this host's shard, forever.

  Epoch ``e`` reads the train split in stored order and shuffles it with the
  seed ``(seed, e)``; packing runs across epoch boundaries, as AlgoPerf's
  ``shuffle -> repeat -> pack -> batch``.
  """
  def epoch(index: int) -> Iterator[Pair]:
    pairs = read_pairs(data_dir, "train", shard_index=shard_index,
                       num_shards=num_shards)
    return shuffle(tokenize_pairs(pairs, tokenizer, max_length),
                   shuffle_buffer_size, (seed, index))

  stream = itertools.chain.from_iterable(map(epoch, itertools.count()))
  return stack_rows(pack_pairs(stream, max_length), batch_size, drop_remainder=True)


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
