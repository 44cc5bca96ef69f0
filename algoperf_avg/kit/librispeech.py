"""LibriSpeech on disk: the release -> AlgoPerf's prepared arrays -> padded batches.

`prepare` does what AlgoPerf's ``datasets/librispeech_preprocess.py`` and
``librispeech_tokenizer.py`` do, from the release's folders
(``RAW/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` and one
``<utterance>.flac`` per line, read with `soundfile`):

* a 1024-piece unigram SentencePiece model trained on the train-clean-100
  transcripts (its first 10**7 characters), saved as ``spm_model.vocab``;
* per utterance, ``<subset>/<id>_audio.npy`` (int64 PCM) and
  ``<subset>/<id>_targets.npy`` (int32 piece ids with EOS), skipping
  transcripts over 256 characters and audio over 320,000 samples;
* ``<subset>.csv``, the kept ids (pandas' ``to_csv`` layout: ``,id``).

`Split` reads that layout back (``"dev-clean+dev-other"`` joins subsets) and
pads each utterance as AlgoPerf's loader: audio to 320,000 samples and
targets to 256, with paddings 1 on the padded part.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from algoperf_avg import spec
from algoperf_avg.kit import data

AUDIO_MAX_LENGTH = 320_000
TRANSCRIPT_MAX_CHARS = 256
TARGET_MAX_LENGTH = 256
VOCAB_SIZE = 1024
TOKENIZER_FILE = "spm_model.vocab"  # AlgoPerf's name (a SentencePiece model)
DONE_FILE = "prepared.json"
TOKENIZER_SUBSETS = ("train-clean-100",)
SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500",
           "dev-clean", "dev-other", "test-clean")
# The workload's splits as '+'-joined subsets (AlgoPerf's _build_input_queue).
SPLITS = {
    "train": "train-clean-100+train-clean-360+train-other-500",
    "eval_train": "train-clean-100+train-clean-360+train-other-500",
    "validation": "dev-clean+dev-other",
    "test": "test-clean",
}


@dataclasses.dataclass(frozen=True)
class Limits:
  """Lengths an utterance is kept at and padded to."""

  audio: int = AUDIO_MAX_LENGTH
  transcript_chars: int = TRANSCRIPT_MAX_CHARS
  targets: int = TARGET_MAX_LENGTH


# ----- tokenizer -------------------------------------------------------------------


class Tokenizer:
  """A SentencePiece model: text -> ids with EOS appended, ids -> text."""

  def __init__(self, path: str):
    import sentencepiece as spm

    if not os.path.isfile(path):
      raise spec.UsageError(f"no SentencePiece model at {path!r}")
    self.path = path
    self._model = spm.SentencePieceProcessor(model_file=path)

  @property
  def vocab_size(self) -> int:
    return self._model.get_piece_size()

  def tokenize(self, text: str) -> np.ndarray:
    return np.asarray(self._model.encode(text, add_eos=True), np.int32)

  def detokenize(self, ids: Sequence[int]) -> str:
    return self._model.decode([int(i) for i in ids])


def train_tokenizer(transcripts: Sequence[str], path: str, vocab_size: int = VOCAB_SIZE,
                    max_chars: int = 10**7) -> str:
  """A unigram SentencePiece model of ``transcripts`` (AlgoPerf's settings) at ``path``."""
  import sentencepiece as spm

  with tempfile.TemporaryDirectory() as tmp:
    text_path = os.path.join(tmp, "transcripts.txt")
    chars = 0
    with open(text_path, "w", encoding="utf-8") as f:
      for line in transcripts:
        chars += len(line) + 1
        if chars > max_chars:
          break
        f.write(line + "\n")
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        input=text_path, vocab_size=vocab_size, character_coverage=1.0,
        model_prefix=prefix, model_type="unigram", minloglevel=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    shutil.copyfile(prefix + ".model", path + ".tmp")
    os.replace(path + ".tmp", path)
  return path


# ----- the release -> prepared arrays ----------------------------------------------


def _chapters(subset_dir: str) -> Iterator[tuple[str, str, str]]:
  for speaker in sorted(os.listdir(subset_dir)):
    speaker_dir = os.path.join(subset_dir, speaker)
    if not os.path.isdir(speaker_dir):
      continue
    for chapter in sorted(os.listdir(speaker_dir)):
      yield os.path.join(speaker_dir, chapter), speaker, chapter


def read_transcripts(subset_dir: str) -> Iterator[tuple[str, str, str]]:
  """``(utterance id, transcript, flac path)`` of one subset folder, in sorted order."""
  for chapter_dir, speaker, chapter in _chapters(subset_dir):
    path = os.path.join(chapter_dir, f"{speaker}-{chapter}.trans.txt")
    if not os.path.isfile(path):
      continue
    with open(path, encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          continue
        utterance, transcript = line.strip().split(" ", maxsplit=1)
        yield utterance, transcript, os.path.join(chapter_dir, utterance + ".flac")


def read_flac(path: str) -> np.ndarray:
  """Integer PCM samples of a mono flac file, as int64 (AlgoPerf's pydub read)."""
  import soundfile

  samples, _ = soundfile.read(path, dtype="int16", always_2d=False)
  return np.asarray(samples, np.int64)


def prepare_subset(subset_dir: str, out_dir: str, subset: str, tokenizer: Tokenizer,
                   limits: Limits = Limits()) -> dict[str, int]:
  """One subset's arrays and ``<subset>.csv`` under ``out_dir``; returns counts."""
  os.makedirs(os.path.join(out_dir, subset), exist_ok=True)
  kept, skipped = [], 0
  for utterance, transcript, flac in read_transcripts(subset_dir):
    if not os.path.isfile(flac) or len(transcript) > limits.transcript_chars:
      skipped += 1
      continue
    audio = read_flac(flac)
    if audio.shape[0] > limits.audio:
      skipped += 1
      continue
    targets = tokenizer.tokenize(transcript)
    np.save(os.path.join(out_dir, subset, f"{utterance}_audio.npy"), audio)
    np.save(os.path.join(out_dir, subset, f"{utterance}_targets.npy"), targets)
    kept.append(utterance)
  with open(os.path.join(out_dir, f"{subset}.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["", "id"])
    writer.writerows([i, u] for i, u in enumerate(kept))
  return {"kept": len(kept), "skipped": skipped}


def prepare(raw_dir: str, out_dir: str, *, subsets: Sequence[str] = SUBSETS,
            tokenizer_subsets: Sequence[str] = TOKENIZER_SUBSETS,
            vocab_size: int = VOCAB_SIZE, limits: Limits = Limits()) -> str:
  """The prepared dataset of the release in ``raw_dir``, written to ``out_dir``.

  Everything is written under ``out_dir.partial`` and moved into place at the
  end, so an interrupted preparation leaves no half-prepared dataset.

  Raises:
    spec.UsageError: a subset folder is missing from ``raw_dir``.
  """
  missing = [s for s in subsets if not os.path.isdir(os.path.join(raw_dir, s))]
  if missing:
    raise spec.UsageError(
        f"{raw_dir!r} (--raw_dir) lacks the LibriSpeech folder(s) {', '.join(missing)}; "
        "pass the extracted release's LibriSpeech/ folder (from openslr.org/12: "
        f"{', '.join(s + '.tar.gz' for s in subsets)})")
  if is_prepared(out_dir):
    return out_dir
  partial = out_dir.rstrip(os.sep) + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  transcripts = [t for s in tokenizer_subsets
                 for _, t, _ in read_transcripts(os.path.join(raw_dir, s))]
  tokenizer = Tokenizer(train_tokenizer(transcripts, os.path.join(partial, TOKENIZER_FILE),
                                        vocab_size))
  counts = {s: prepare_subset(os.path.join(raw_dir, s), partial, s, tokenizer, limits)
            for s in subsets}
  with open(os.path.join(partial, DONE_FILE), "w") as f:
    json.dump({"subsets": counts, "vocab_size": vocab_size,
               "limits": dataclasses.asdict(limits)}, f, indent=1)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(partial, out_dir)
  return out_dir


def is_prepared(out_dir: str | None) -> bool:
  """Whether ``out_dir`` holds a finished preparation."""
  return bool(out_dir) and os.path.isfile(os.path.join(out_dir, DONE_FILE))


# ----- prepared arrays -> padded examples ------------------------------------------


class Split:
  """The utterances of '+'-joined subsets of a prepared dataset, padded on read."""

  def __init__(self, prepared_dir: str, subsets: str, limits: Limits = Limits()):
    self.dir, self.limits = prepared_dir, limits
    self.ids: list[str] = []
    for subset in subsets.split("+"):
      path = os.path.join(prepared_dir, f"{subset}.csv")
      if not os.path.isfile(path):
        raise spec.UsageError(f"no {path!r}: the dataset is not prepared")
      with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
      self.ids.extend(f"{subset}/{row[1]}" for row in rows)

  def __len__(self) -> int:
    return len(self.ids)

  def example(self, index: int) -> dict[str, Any]:
    """``{"inputs": (audio, paddings), "targets": (ids, paddings)}``, float32 as AlgoPerf."""
    stem = os.path.join(self.dir, self.ids[index])
    audio = np.load(stem + "_audio.npy")
    targets = np.load(stem + "_targets.npy")
    return {"inputs": pad_to(audio, self.limits.audio),
            "targets": pad_to(targets, self.limits.targets)}

  def batch(self, indices: Sequence[int]) -> dict[str, Any]:
    """The examples at ``indices`` stacked."""
    return next(data.stack_examples(map(self.example, indices), len(indices)))


def pad_to(values: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """``values`` zero-padded to ``length`` and its paddings (1 on the padded part)."""
  if values.shape[0] > length:
    raise ValueError(f"{values.shape[0]} values exceed the padded length {length}")
  padded = np.zeros(length, np.float32)
  padded[:values.shape[0]] = values
  paddings = np.ones(length, np.float32)
  paddings[:values.shape[0]] = 0.0
  return padded, paddings


def train_batches(split: Split, batch_size: int, seed: int, *, shard_index: int = 0,
                  num_shards: int = 1, start: int | None = None) -> data.Resumable:
  """Shuffled batches forever: this shard's part of each global batch, resumable.

  The global stream is `data.index_batches` over the split (a permutation
  per epoch, batches across epoch boundaries); its position is the number of
  global batches taken.
  """
  def make(position):
    first = position or 0
    global_size = batch_size * num_shards
    for k, indices in enumerate(data.index_batches(len(split), global_size, seed,
                                                   start_batch=first), start=first + 1):
      lo, hi = data.shard_bounds(global_size, shard_index, num_shards)
      yield split.batch(indices[lo:hi]), k

  return data.Resumable(make, start)


def eval_batches(split: Split, batch_size: int, *, num_examples: int | None = None,
                 shard_index: int = 0, num_shards: int = 1) -> Iterator[dict[str, Any]]:
  """One ordered pass over this shard of the first ``num_examples`` (short last batch)."""
  total = len(split) if num_examples is None else min(num_examples, len(split))
  lo, hi = data.shard_bounds(total, shard_index, num_shards)
  for first in range(lo, hi, batch_size):
    yield split.batch(range(first, min(first + batch_size, hi)))
