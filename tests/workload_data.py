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


WMT_SPLIT_SIZES = {"train": 120, "validation": 5, "test": 3}
WMT_VOCAB_SIZE = 160


def write_wmt(root: str) -> dict[str, list[tuple[str, str]]]:
  """Prepared wmt17/wmt14 de-en (real TFDS files) of generated pairs, and a tokenizer.

  The datasets are written as ``download_and_prepare`` writes them; then the
  preparation `WmtWorkload.setup_data` runs (`input_pipeline.setup_data`)
  finds them prepared and trains the tokenizer, as after a download, with a
  vocabulary this small corpus can fill (the ``vocab_size`` option).
  """
  from workloads.wmt import input_pipeline, synthetic

  rng = np.random.default_rng(11)
  lexicon = synthetic.make_lexicon(0)
  pairs = {split: synthetic.generate(size, lexicon, rng)
           for split, size in WMT_SPLIT_SIZES.items()}
  folder = os.path.join(root, "wmt")
  synthetic.write_tfds(folder, input_pipeline.TRAIN_DATASET, {"train": pairs["train"]})
  synthetic.write_tfds(folder, input_pipeline.EVAL_DATASET,
                       {"validation": pairs["validation"], "test": pairs["test"]})
  input_pipeline.setup_data(folder, vocab_size=WMT_VOCAB_SIZE)
  return pairs


@dataclasses.dataclass(frozen=True)
class FullSize:
  """How the contract test runs a workload's full size on a CPU."""

  write: Callable[[str], Any]  # writes root/<dataset>
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int | None = None  # training batch (None: the workload's)
  slow: bool = False  # over a minute for the contract checks: run with -m slow


FULL_SIZE: dict[str, FullSize] = {
    "ogbg": FullSize(write_ogbg, {"eval_batch_size": 16}, batch_size=16),
    # The 6+6-layer model with a 160-piece vocabulary (100M parameters);
    # each eval decodes 255 tokens with beam 4: minutes on a CPU.
    "wmt": FullSize(write_wmt, {"eval_batch_size": 4, "vocab_size": WMT_VOCAB_SIZE},
                    batch_size=2, slow=True),
}
