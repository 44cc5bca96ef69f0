"""Tiny datasets in each workload's real on-disk format, for the full sizes' tests.

Each writer prepares ``root/<dataset>`` exactly as ``algoperf-avg setup-data``
would (through the real preparation code, fed generated data instead of a
download) and returns what it wrote. `FULL_SIZE` lists, per workload, the
writer and the options under which one full-size train step and eval fit on
a CPU; the contract test (tests/test_workload_contract.py) uses it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any
from unittest import mock

import numpy as np

OGBG_SPLIT_SIZES = {"train": 30, "validation": 23, "test": 9}


def _ogbg_example(molecules, index: int, graph_id: int) -> dict:
  example = molecules.example(index)
  labels = np.full(128, np.nan, np.float32)
  labels[: molecules.labels.shape[1]] = example["labels"]
  labels[-1] = graph_id  # identifies the graph in batches
  return dict(example, labels=labels)


def write_ogbg(root: str) -> dict[str, list[dict]]:
  """A prepared ogbg_molpcba:0.1.3 (real TFRecords) of generated molecules.

  Runs `OgbgWorkload.setup_data` (tfds's own build) with the download replaced
  by generated molecules; returns the examples per split.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.datasets.ogbg_molpcba import (
      ogbg_molpcba_dataset_builder as builder_module,
  )

  from workloads.ogbg import synthetic
  from workloads.ogbg.workload import OgbgWorkload

  molecules = synthetic.generate(
      sum(OGBG_SPLIT_SIZES.values()), synthetic.Config(), np.random.default_rng(7))
  examples, start = {}, 0
  for split, size in OGBG_SPLIT_SIZES.items():
    examples[split] = [_ogbg_example(molecules, start + i, i) for i in range(size)]
    start += size

  def split_generators(self, dl_manager):
    del self, dl_manager
    return {split: enumerate(values) for split, values in examples.items()}

  prepare = tfds.core.DatasetBuilder.download_and_prepare

  def offline(self, *args, **kwargs):  # the real build, with no GCS look-up
    kwargs["download_config"] = tfds.download.DownloadConfig(try_download_gcs=False)
    return prepare(self, *args, **kwargs)

  with mock.patch.object(builder_module.Builder, "_split_generators", split_generators), \
       mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", offline):
    path = OgbgWorkload.setup_data(root)
  assert path == os.path.join(root, "ogbg", "ogbg_molpcba", "0.1.3")
  return examples


LIBRISPEECH_SUBSET_SIZES = {"train-clean-100": 5, "train-clean-360": 2, "train-other-500": 2,
                            "dev-clean": 3, "dev-other": 2, "test-clean": 3}


def write_librispeech(root: str) -> dict[str, list[str]]:
  """A prepared LibriSpeech of synthesised flac files in the release layout.

  Runs ``setup_data`` (the real preparation, 1024-piece tokenizer) on a raw
  release under ``root/raw``: a few spoken utterances per subset, and in
  train-clean-100 extra transcript lines without audio (skipped, as the real
  preparation skips them) so the tokenizer has text enough for 1024 pieces.
  Returns the transcripts per workload split.
  """
  from algoperf_avg.kit import librispeech, speech_synthetic
  from workloads.librispeech_conformer.workload import LibriSpeechConformerWorkload

  raw = os.path.join(root, "raw")
  written = speech_synthetic.write_release(raw, speech_synthetic.Config(seed=5),
                                           LIBRISPEECH_SUBSET_SIZES)
  rng = np.random.default_rng(0)
  letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
  folder = os.path.join(raw, "train-clean-100", "77", "7")
  os.makedirs(folder)
  with open(os.path.join(folder, "77-7.trans.txt"), "w") as f:
    for i in range(4_000):
      words = ("".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(8))
      f.write(f"77-7-{i:04d} {' '.join(words)}\n")
  path = LibriSpeechConformerWorkload.setup_data(root, raw_dir=raw)
  assert path == os.path.join(root, "librispeech")
  splits = {}
  for split, subsets in librispeech.SPLITS.items():
    if split != "eval_train":
      splits[split] = [t for s in subsets.split("+") for t in written[s]]
  return splits


@dataclasses.dataclass(frozen=True)
class FullSize:
  """How the contract test runs a workload's full size on a CPU."""

  write: Callable[[str], Any]  # writes root/<dataset>
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int | None = None  # training batch (None: the workload's)
  slow: bool = False  # over a minute for the contract checks: run with -m slow


FULL_SIZE: dict[str, FullSize] = {
    "ogbg": FullSize(write_ogbg, {"eval_batch_size": 16}, batch_size=16),
    "librispeech_conformer": FullSize(write_librispeech, {"eval_batch_size": 2},
                                      batch_size=2, slow=True),
}
