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
# Each full-size eval decodes all of eval_train (the whole tiny train split) with
# the 100M-parameter model; 24 pairs still fill the 160-piece tokenizer.
WMT_SPLIT_SIZES = {"train": 24, "validation": 5, "test": 3}
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
    "fastmri": FullSize(write_fastmri, {"eval_batch_size": 16}, batch_size=2, slow=True),
    "ogbg": FullSize(write_ogbg, {"eval_batch_size": 16}, batch_size=16),
    # ViT-S/16 at 224 px: one step compiles for about a minute on a CPU.
    "imagenet_vit": FullSize(write_imagenet, {"eval_batch_size": 4}, batch_size=2,
                             slow=True),
    # ResNet-50 at 224 px, on the same tiny ImageNet as the ViT.
    "imagenet_resnet": FullSize(write_imagenet, {"eval_batch_size": 4}, batch_size=2,
                                slow=True),
    "librispeech_conformer": FullSize(write_librispeech, {"eval_batch_size": 2},
                                      batch_size=2, slow=True),
    # The same tiny prepared LibriSpeech as the Conformer's.
    "librispeech_deepspeech": FullSize(write_librispeech, {"eval_batch_size": 2},
                                       batch_size=2, slow=True),
    # The 6+6-layer model with a 160-piece vocabulary (100M parameters);
    # AlgoPerf's 255 decoded tokens (beam 4) took over 30 minutes per eval of
    # the tiny splits on 2 CPU cores: the checks decode 8.
    "wmt": FullSize(write_wmt, {"eval_batch_size": 4, "vocab_size": WMT_VOCAB_SIZE,
                                "decode_length": 8},
                    batch_size=2, slow=True),
    # The full architecture with a 1,024-row table (2.4M parameters).
    "criteo1tb": FullSize(write_criteo1tb, {"eval_batch_size": 16, "vocab_size": 1024},
                          batch_size=8),
}
