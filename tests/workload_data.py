"""Tiny datasets in each workload's real on-disk format, for the full sizes' tests.

Each writer prepares ``root/<dataset>`` exactly as ``algoperf-avg setup-data``
would (through the real preparation code, fed generated data instead of a
download) and returns what it wrote. `FULL_SIZE` lists, per workload, the
writer and the options under which one full-size train step and eval fit on
a CPU; the contract test (tests/test_workload_contract.py) uses it.
"""

from __future__ import annotations

import dataclasses
import gzip
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


CRITEO_TRAIN_LINES_PER_DAY = 2
CRITEO_LINES_PER_SHARD = 2  # AlgoPerf's is 5,000,000; the split rules count shards


def write_criteo1tb(root: str) -> dict[str, list[bytes]]:
  """Prepared Criteo 1TB shards of generated click logs, from raw day files.

  Writes the 24 raw day files as downloaded (odd days gzipped) with lines
  from the small variant's generator and runs the real preparation
  (`prepare.setup_data`, which `algoperf-avg setup-data criteo1tb` calls) at
  shards of `CRITEO_LINES_PER_SHARD` lines, so day 23 has its 36 shards.
  Returns the lines per split.
  """
  from workloads.criteo1tb import input_pipeline, prepare, synthetic

  config = synthetic.Config(train_lines_per_day=CRITEO_TRAIN_LINES_PER_DAY,
                            lines_per_shard=CRITEO_LINES_PER_SHARD)
  planted, sample = synthetic.generate(config, config.num_lines, np.random.default_rng(7))
  lines = synthetic.format_lines(planted, sample)
  raw = os.path.join(root, "raw_criteo")
  os.makedirs(raw)
  start = 0
  for day in range(prepare.NUM_DAYS):
    size = (config.eval_day_lines if day == input_pipeline.EVAL_DAY
            else config.train_lines_per_day)
    opener = gzip.open if day % 2 else open
    with opener(os.path.join(raw, f"day_{day}" + (".gz" if day % 2 else "")), "wb") as f:
      f.writelines(lines[start:start + size])
    start += size
  prepare.setup_data(os.path.join(root, "criteo1tb"), raw,
                     lines_per_shard=CRITEO_LINES_PER_SHARD)
  train = len(input_pipeline.TRAIN_DAYS) * config.train_lines_per_day
  test = train + len(input_pipeline.TEST_SHARDS) * config.lines_per_shard
  return {"train": lines[:train], "test": lines[train:test], "validation": lines[test:]}


@dataclasses.dataclass(frozen=True)
class FullSize:
  """How the contract test runs a workload's full size on a CPU."""

  write: Callable[[str], Any]  # writes root/<dataset>
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int | None = None  # training batch (None: the workload's)
  slow: bool = False  # over a minute for the contract checks: run with -m slow


FULL_SIZE: dict[str, FullSize] = {
    "ogbg": FullSize(write_ogbg, {"eval_batch_size": 16}, batch_size=16),
    # The full architecture with a 1,024-row table (2.4M parameters).
    "criteo1tb": FullSize(write_criteo1tb, {"eval_batch_size": 16, "vocab_size": 1024},
                          batch_size=8),
}
