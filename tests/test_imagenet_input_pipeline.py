"""End-to-end tests of the ImageNet input: the real TFDS builders on generated archives."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from algoperf_avg import spec
from algoperf_avg.kit import imagenet
from tests import workload_data

TRAIN_PER_CLASS = workload_data.IMAGENET_TRAIN_PER_CLASS
COLOURS = workload_data.IMAGENET_COLOURS
PREPROCESSING = imagenet.Preprocessing(image_size=32, resize_size=36)


@pytest.fixture(scope="module")
def imagenet_dirs(tmp_path_factory):
  """Prepared imagenet2012:5.1.0 and imagenet_v2 (real builders, generated images)."""
  import tensorflow_datasets as tfds

  root = tmp_path_factory.mktemp("data")
  labels = workload_data.write_imagenet_manual_dir(str(root / "manual"))
  imagenet.setup_data(root / "imagenet", root / "manual")
  # ImageNet-v2's builder downloads a tar of class_id/k.jpeg folders; hand it one.
  download = workload_data.imagenet_v2_download(str(root / "v2_download"))
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         return_value=download):
    imagenet.setup_imagenet_v2(root / "imagenet_v2")
  return root, labels


def _colours(batch) -> np.ndarray:
  """Mean 0-255 colour of each image of a batch."""
  pixels = batch["inputs"] * np.array(imagenet.STDDEV_RGB) + np.array(imagenet.MEAN_RGB)
  return pixels.mean((1, 2))


def test_validation_is_read_in_order_with_labels(imagenet_dirs):
  root, labels = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet")
  assert builder.info.splits["train"].num_examples == 3 * TRAIN_PER_CLASS
  imagenet.check_data(root / "imagenet", root / "imagenet_v2")
  batches = list(imagenet.eval_batches(builder, "validation", 2, PREPROCESSING))
  assert [len(b["targets"]) for b in batches] == [2, 2, 1]
  batch = batches[0]
  assert batch["inputs"].shape == (2, 32, 32, 3) and batch["inputs"].dtype == np.float32
  assert batch["targets"].dtype == np.int32 and batch["weights"].dtype == np.float32
  targets = np.concatenate([b["targets"] for b in batches])
  # Stored (shuffled) order, the same on every pass; labels from TFDS's list.
  assert sorted(targets) == sorted(labels["validation"])
  again = np.concatenate([b["targets"] for b in imagenet.eval_batches(
      builder, "validation", 3, PREPROCESSING)])
  np.testing.assert_array_equal(again, targets)
  for b in batches:
    expected = np.array([COLOURS[t % 3] for t in b["targets"]])
    np.testing.assert_allclose(_colours(b), expected, atol=3)
  np.testing.assert_array_equal(np.concatenate([b["weights"] for b in batches]), 1)


def test_eval_train_reads_the_first_examples_and_shards_partition(imagenet_dirs):
  root, _ = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet")

  def targets(**kwargs):
    return [int(t) for b in imagenet.eval_batches(builder, **kwargs) for t in b["targets"]]

  every = targets(split="eval_train", batch_size=5, config=PREPROCESSING)
  assert sorted(every) == sorted(list(range(3)) * TRAIN_PER_CLASS)
  assert targets(split="eval_train", batch_size=5, config=PREPROCESSING,
                 num_examples=7) == every[:7]
  shards = [targets(split="validation", batch_size=4, config=PREPROCESSING,
                    shard_index=i, num_shards=2) for i in range(2)]
  assert [len(s) for s in shards] == [3, 2]
  assert shards[0] + shards[1] == targets(split="validation", batch_size=4,
                                          config=PREPROCESSING)


def test_test_split_is_imagenet_v2(imagenet_dirs):
  root, _ = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet_v2", imagenet.V2_TFDS_NAME)
  batches = list(imagenet.eval_batches(builder, "test", 4, PREPROCESSING))
  targets = np.concatenate([b["targets"] for b in batches])
  assert sorted(targets) == [0, 0, 1, 1, 2, 2]
  for b in batches:
    np.testing.assert_allclose(_colours(b), [COLOURS[t] for t in b["targets"]], atol=3)


def test_training_stream_is_seeded_repeated_and_resumable(imagenet_dirs):
  root, _ = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet")

  def stream(seed, config=PREPROCESSING, start_batch=0, count=4):
    batches = imagenet.train_batches(builder, 5, seed, config, start_batch=start_batch)
    return [next(batches) for _ in range(count)]

  first = stream(0)
  assert all(b["inputs"].shape == (5, 32, 32, 3) for b in first)
  labels = np.concatenate([b["targets"] for b in first])
  # 20 examples from a 12-example split: every example once, then a second epoch.
  assert sorted(labels[:12]) == sorted(list(range(3)) * TRAIN_PER_CLASS)
  again = stream(0)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  other = stream(1)
  assert not np.array_equal(np.concatenate([b["targets"] for b in other]), labels)
  resumed = stream(0, start_batch=2, count=2)
  for a, b in zip(first[2:], resumed, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
  # Random crops of flat colours keep the colour (flips and crops don't change it).
  expected = np.array([COLOURS[t] for t in first[0]["targets"]])
  np.testing.assert_allclose(_colours(first[0]), expected, atol=4)


def test_vit_training_stream_mixes_batches(imagenet_dirs):
  root, _ = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet")
  config = imagenet.VIT_PREPROCESSING.scaled(32, 36, num_classes=1000)
  batch = next(imagenet.train_batches(builder, 6, 0, config))
  targets = batch["targets"]
  assert targets.shape == (6, 1000) and targets.dtype == np.float32
  np.testing.assert_allclose(targets.sum(1), 1, rtol=1e-6)
  assert np.all(targets[:, 3:] == 0)  # only labels 0-2 exist
  assert batch["inputs"].shape == (6, 32, 32, 3)


def test_missing_or_unprepared_data_is_a_usage_error(tmp_path):
  with pytest.raises(spec.UsageError, match="setup-data imagenet"):
    imagenet.open_builder(None)
  with pytest.raises(spec.UsageError, match="no folder"):
    imagenet.open_builder(tmp_path / "absent")
  with pytest.raises(spec.UsageError, match="no prepared imagenet2012"):
    imagenet.check_data(tmp_path)
  with pytest.raises(spec.UsageError, match="ILSVRC2012_img_train.tar"):
    imagenet.setup_data(tmp_path / "imagenet", tmp_path)


def test_unknown_split_is_a_usage_error(imagenet_dirs):
  root, _ = imagenet_dirs
  builder = imagenet.open_builder(root / "imagenet")
  with pytest.raises(spec.UsageError, match="unknown eval split"):
    imagenet.eval_batches(builder, "train", 4, PREPROCESSING)
  v2 = imagenet.open_builder(root / "imagenet_v2", imagenet.V2_TFDS_NAME)
  with pytest.raises(spec.UsageError, match="no split 'validation'"):
    imagenet.eval_batches(v2, "validation", 4, PREPROCESSING)
