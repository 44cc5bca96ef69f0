"""Tiny datasets in each workload's real on-disk format, for the full sizes' tests.

Each writer prepares ``root/<dataset>`` exactly as ``algoperf-avg setup-data``
would (through the real preparation code, fed generated data instead of a
download) and returns what it wrote. `FULL_SIZE` lists, per workload, the
writer and the options under which one full-size train step and eval fit on
a CPU; the contract test (tests/test_workload_contract.py) uses it.
"""

from __future__ import annotations

import dataclasses
import io
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


IMAGENET_SYNSETS = ("n01440764", "n01443537", "n01484850")  # ImageNet's labels 0, 1, 2
IMAGENET_TRAIN_PER_CLASS = 4
IMAGENET_NUM_VALIDATION = 5
IMAGENET_V2_PER_CLASS = 2
# Each class's images are one flat colour, so every crop keeps it.
IMAGENET_COLOURS = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200)}


def jpeg(colour, height: int, width: int) -> bytes:
  """A flat-colour JPEG."""
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), colour, np.uint8)).save(
      buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _imagenet_validation_labels(count: int) -> list[int]:
  """ImageNet's labels of the first validation images, from TFDS's own lists."""
  import tensorflow_datasets as tfds

  folder = tfds.core.tfds_path("datasets/imagenet2012")
  names = (folder / "labels.txt").read_text().split()
  synsets = (folder / "validation_labels.txt").read_text().split()[:count]
  return [names.index(s) for s in synsets]


def write_imagenet_manual_dir(path: str) -> dict[str, list[int]]:
  """Tiny ILSVRC2012 train and val archives; returns the labels per split."""
  from algoperf_avg.kit import imagenet_synthetic

  train = {synset: [jpeg(IMAGENET_COLOURS[label], 40 + 8 * i, 64 - 6 * i)
                    for i in range(IMAGENET_TRAIN_PER_CLASS)]
           for label, synset in enumerate(IMAGENET_SYNSETS)}
  labels = _imagenet_validation_labels(IMAGENET_NUM_VALIDATION)
  imagenet_synthetic.write_ilsvrc_archives(
      path, train, [jpeg(IMAGENET_COLOURS[label % 3], 50, 70) for label in labels])
  return {"train": [label for label in range(3) for _ in range(IMAGENET_TRAIN_PER_CLASS)],
          "validation": labels}


def imagenet_v2_download(path: str) -> str:
  """What ImageNet-v2's builder downloads (class_id/k.jpeg folders), extracted."""
  folder = os.path.join(path, "imagenetv2-matched-frequency-format-val")
  for label in range(3):
    os.makedirs(os.path.join(folder, str(label)))
    for k in range(IMAGENET_V2_PER_CLASS):
      with open(os.path.join(folder, str(label), f"{k}.jpeg"), "wb") as f:
        f.write(jpeg(IMAGENET_COLOURS[label], 45, 45))
  return path


def write_imagenet(root: str) -> dict[str, list[int]]:
  """Prepared imagenet2012:5.1.0 and imagenet_v2 under ``root`` (real builders).

  Runs the workload's ``setup_data`` on generated ILSVRC archives, with the
  ImageNet-v2 download replaced by generated images; returns the labels per
  split.
  """
  import tensorflow_datasets as tfds

  from algoperf_avg.kit.imagenet_workload import ImagenetWorkload

  labels = write_imagenet_manual_dir(os.path.join(root, "manual"))
  download = imagenet_v2_download(os.path.join(root, "v2_download"))
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         return_value=download):
    path = ImagenetWorkload.setup_data(root, manual_dir=os.path.join(root, "manual"))
  assert path == os.path.join(root, "imagenet")
  labels["test"] = [label for label in range(3) for _ in range(IMAGENET_V2_PER_CLASS)]
  return labels
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
    # ViT-S/16 at 224 px: one step compiles for about a minute on a CPU.
    "imagenet_vit": FullSize(write_imagenet, {"eval_batch_size": 4}, batch_size=2,
                             slow=True),
}
