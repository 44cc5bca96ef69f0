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


FASTMRI_VOLUMES = {"train": (3, 2), "val": (102, 1)}  # (files, slices per file)


def write_fastmri(root: str) -> dict[str, list[tuple[str, int]]]:
  """Knee single-coil h5 files of generated phantoms, prepared by `setup_data`.

  The files go to a download folder (``root/downloads``), as a user's
  extracted archives; `FastMRIWorkload.setup_data` links and indexes them.
  102 validation files: AlgoPerf's first 100 are validation, 2 are test.
  Returns the (file, slice) pairs per split.
  """
  from workloads.fastmri import input_pipeline, synthetic
  from workloads.fastmri.workload import FastMRIWorkload

  manual = os.path.join(root, "downloads")
  files = {}
  for split_id, (folder, key) in enumerate(((input_pipeline.TRAIN_DIR, "train"),
                                            (input_pipeline.VAL_DIR, "val"))):
    count, slices = FASTMRI_VOLUMES[key]
    config = synthetic.Config(image_size=32, kspace_rows=40, kspace_cols=(36, 38),
                              slices_per_volume=slices)
    os.makedirs(os.path.join(manual, folder))
    files[key] = []
    for i in range(count):
      rng = np.random.default_rng([split_id, i])
      kspace, target = synthetic.simulate(rng, config, int(rng.choice(config.kspace_cols)))
      name = f"file{1_001_000 + 1000 * split_id + i}.h5"
      synthetic.write_volume(os.path.join(manual, folder, name), kspace, target, rng)
      files[key] += [(name, s) for s in range(slices)]
  path = FastMRIWorkload.setup_data(root, manual_dir=manual)
  assert path == os.path.join(root, "fastmri")
  return {"train": files["train"], "validation": files["val"][:100],
          "test": files["val"][100:]}


@dataclasses.dataclass(frozen=True)
class FullSize:
  """How the contract test runs a workload's full size on a CPU."""

  write: Callable[[str], Any]  # writes root/<dataset>
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int | None = None  # training batch (None: the workload's)
  slow: bool = False  # over a minute for the contract checks: run with -m slow


FULL_SIZE: dict[str, FullSize] = {
    "fastmri": FullSize(write_fastmri, {"eval_batch_size": 16}, batch_size=2, slow=True),
    "ogbg": FullSize(write_ogbg, {"eval_batch_size": 16}, batch_size=16),
}
