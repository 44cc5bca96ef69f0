"""ImageNet input shared by the imagenet_vit and imagenet_resnet workloads.

Data root layout (one TFDS data directory per dataset)::

  <data_root>/imagenet/      imagenet2012/5.1.0/...  (train, validation)
  <data_root>/imagenet_v2/   imagenet_v2/matched-frequency/3.0.0/...  (test)

`setup_data` builds the first from the user's ILSVRC 2012 archives with the
real TFDS builder; `setup_imagenet_v2` downloads the second. The reading
side opens any prepared TFDS dataset with ImageNet's features (JPEG bytes
``image``, integer ``label``), so the generated small variant
(`algoperf_avg.kit.imagenet_synthetic`) flows through the same code.

Batches are dicts of numpy arrays::

  inputs   (B, size, size, 3) float32  normalised pixels      pad 0
  targets  (B,) int32 labels, or (B, classes) float32 with mixup   pad 0
  weights  (B,) float32, 1 for every real example          pad 0

Training batches are full (``drop_remainder``); eval batches keep the
split's order and the last one may be short (the caller pads it, with
`PAD_VALUES`). TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from algoperf_avg import spec

TFDS_NAME = "imagenet2012:5.1.0"
V2_TFDS_NAME = "imagenet_v2/matched-frequency:3.0.0"
DATA_FOLDER = "imagenet"
V2_DATA_FOLDER = "imagenet_v2"
MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
NUM_CLASSES = 1000
NUM_TRAIN_EXAMPLES = 1_281_167
NUM_VALIDATION_EXAMPLES = 50_000
NUM_TEST_EXAMPLES = 10_000  # ImageNet-v2 matched-frequency
# Workload split -> split of its dataset ("test" is ImageNet-v2's only split).
TFDS_SPLITS = {"train": "train", "eval_train": "train", "validation": "validation",
               "test": "test"}
PAD_VALUES = {"inputs": 0.0, "targets": 0, "weights": 0.0}
# AlgoPerf shuffles training examples in a buffer of 16 global batches.
SHUFFLE_BUFFER_BATCHES = 16

# ImageNet's per-channel mean and standard deviation, on 0-255 pixels.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What is done to every image; the defaults are AlgoPerf's ResNet-50 ones.

  Attributes:
    image_size: side of the square model input (224).
    resize_size: eval crops ``image_size / resize_size`` of the shorter side.
    area_range: training crop area, as fractions of the image area.
    aspect_ratio_range: training crop width / height.
    randaugment: apply RandAugment to training images (AlgoPerf's ViT).
    randaugment_layers: operations per image.
    randaugment_magnitude: their shared magnitude (of 10).
    randaugment_translate: translation at magnitude 10, in pixels (AlgoPerf's
      100 at 224 px).
    randaugment_cutout: Cutout's half side at magnitude 10 (40 at 224 px).
    mixup_alpha: mix training batches with Beta(alpha, alpha) weights (0.2
      for AlgoPerf's ViT); None: no mixup, integer targets.
    num_classes: width of the one-hot targets that mixup produces.
    mean_rgb: subtracted from the 0-255 pixels.
    stddev_rgb: then divided by.
  """

  image_size: int = 224
  resize_size: int = 256
  area_range: tuple[float, float] = (0.08, 1.0)
  aspect_ratio_range: tuple[float, float] = (0.75, 4.0 / 3.0)
  randaugment: bool = False
  randaugment_layers: int = 2
  randaugment_magnitude: int = 10
  randaugment_translate: float = 100.0
  randaugment_cutout: float = 40.0
  mixup_alpha: float | None = None
  num_classes: int = NUM_CLASSES
  mean_rgb: tuple[float, float, float] = MEAN_RGB
  stddev_rgb: tuple[float, float, float] = STDDEV_RGB

  def scaled(self, image_size: int, resize_size: int, num_classes: int) -> Preprocessing:
    """The same augmentation for smaller images: pixel amounts scale with the size."""
    factor = image_size / self.image_size
    return dataclasses.replace(
        self, image_size=image_size, resize_size=resize_size, num_classes=num_classes,
        randaugment_translate=self.randaugment_translate * factor,
        randaugment_cutout=self.randaugment_cutout * factor,
    )


RESNET_PREPROCESSING = Preprocessing()
VIT_PREPROCESSING = Preprocessing(randaugment=True, mixup_alpha=0.2)


def how_to_prepare(workload: str = "imagenet") -> str:
  """The sentence that every "data not prepared" error ends with."""
  return (
      f"prepare it once with: algoperf-avg setup-data {workload} --manual_dir=DIR, "
      f"DIR holding {' and '.join(MANUAL_FILES)} from image-net.org; it builds "
      f"<data_root>/{DATA_FOLDER} and downloads ImageNet-v2 (the test split) to "
      f"<data_root>/{V2_DATA_FOLDER}"
  )


def tensorflow_modules() -> tuple[Any, Any]:
  """``(tensorflow, tensorflow_datasets)``, imported now, with TF kept off GPUs."""
  import tensorflow as tf  # Lazy: importing this module must stay cheap.
  import tensorflow_datasets as tfds

  try:
    tf.config.set_visible_devices([], "GPU")  # keep accelerators for JAX
  except RuntimeError:  # TensorFlow already initialised its devices
    pass
  return tf, tfds


def open_builder(data_dir: str | os.PathLike | None, name: str = TFDS_NAME) -> Any:
  """The prepared TFDS builder ``name`` in ``data_dir`` (a ``<data_root>/...`` folder).

  Raises:
    spec.UsageError: no ``data_dir``, or the dataset is not prepared there.
  """
  if not data_dir:
    raise spec.UsageError(f"ImageNet reads the TFDS dataset {name}; pass its data "
                          f"dir; {how_to_prepare()}")
  _, tfds = tensorflow_modules()
  if not os.path.isdir(data_dir):
    raise spec.UsageError(f"no folder {str(data_dir)!r} for {name}; {how_to_prepare()}")
  builder = tfds.builder(name, data_dir=os.fspath(data_dir))
  if not builder.is_prepared():
    raise spec.UsageError(f"no prepared {name} under {str(data_dir)!r} (looked in "
                          f"{builder.data_dir}); {how_to_prepare()}")
  return builder


def open_directory(dataset_dir: str | os.PathLike) -> Any:
  """A read-only builder for a prepared TFDS dataset folder (``.../name/config/version``)."""
  _, tfds = tensorflow_modules()
  return tfds.builder_from_directory(os.fspath(dataset_dir))


def check_data(data_dir: str | os.PathLike | None, v2_dir: str | os.PathLike | None = None
               ) -> None:
  """Raises `spec.UsageError` unless ImageNet (and ImageNet-v2, if asked) is prepared."""
  builder = open_builder(data_dir)
  missing = {"train", "validation"} - set(builder.info.splits)
  if missing:
    raise spec.UsageError(f"{TFDS_NAME} under {str(data_dir)!r} lacks the splits "
                          f"{sorted(missing)}; {how_to_prepare()}")
  if v2_dir is not None:
    open_builder(v2_dir, V2_TFDS_NAME)


def setup_data(data_dir: str | os.PathLike, manual_dir: str | os.PathLike) -> None:
  """Builds ``imagenet2012:5.1.0`` in ``data_dir`` from the archives in ``manual_dir``.

  ``manual_dir`` holds ILSVRC2012_img_train.tar (one tar per class inside)
  and ILSVRC2012_img_val.tar, as downloaded from image-net.org; TFDS's own
  builder reads them (fixing the few CMYK and PNG images) and writes
  TFRecords, which takes hours and about 150 GB for the full archives.

  Raises:
    spec.UsageError: an archive is missing.
  """
  missing = [f for f in MANUAL_FILES if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing:
    raise spec.UsageError(f"the manual dir {str(manual_dir)!r} lacks {missing}; "
                          "download them from https://image-net.org/download-images")
  _, tfds = tensorflow_modules()
  os.makedirs(data_dir, exist_ok=True)
  builder = tfds.builder(TFDS_NAME, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))


def setup_imagenet_v2(data_dir: str | os.PathLike) -> None:
  """Downloads and prepares ImageNet-v2 matched-frequency (1.2 GB) in ``data_dir``."""
  _, tfds = tensorflow_modules()
  os.makedirs(data_dir, exist_ok=True)
  tfds.builder(V2_TFDS_NAME, data_dir=os.fspath(data_dir)).download_and_prepare()


def raw_split(
    builder: Any,
    split: str,
    *,
    shuffle_seed: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    num_examples: int | None = None,
) -> Any:
  """``{"image": JPEG bytes, "label": int64}`` examples of one split, undecoded.

  Args:
    builder: a prepared TFDS builder with ImageNet's features.
    split: a TFDS split name of that builder.
    shuffle_seed: shuffle the record files with this seed; None keeps the
      stored order (eval).
    shard_index: which of ``num_shards`` even parts of the split to read
      (one per host), before ``num_examples`` is applied.
    num_shards: number of parts.
    num_examples: read only the first ``num_examples`` of the (part of the)
      split; None: all.
  """
  _, tfds = tensorflow_modules()
  if split not in builder.info.splits:
    raise spec.UsageError(f"{builder.info.full_name} has no split {split!r} "
                          f"(has {sorted(builder.info.splits)})")
  if num_shards > 1:
    split = tfds.even_splits(split, num_shards, drop_remainder=False)[shard_index]
  dataset = builder.as_dataset(
      split=split, shuffle_files=shuffle_seed is not None,
      decoders={"image": tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
  )
  dataset = dataset.map(lambda e: {"image": e["image"], "label": e["label"]})
  return dataset if num_examples is None else dataset.take(num_examples)


def _finish(dataset: Any) -> Any:
  tf, _ = tensorflow_modules()
  options = tf.data.Options()
  options.deterministic = True  # the same seed gives the same stream
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def train_dataset(
    raw: Any, batch_size: int, seed: int, config: Preprocessing, *, start_batch: int = 0
) -> Any:
  """Endless shuffled, augmented training batches from `raw_split` examples.

  Each epoch reads the split's files in a seeded order through a shuffle
  buffer of `SHUFFLE_BUFFER_BATCHES` batches, reshuffled every epoch. Example ``i`` of the stream is
  augmented with a seed folded from ``(seed, i)``, batch ``k`` mixed (with
  mixup) with one from ``(seed, k)``, so ``start_batch=k`` resumes the same
  stream at batch ``k`` (skipped examples are read but not decoded).
  """
  tf, _ = tensorflow_modules()
  from algoperf_avg.kit import imagenet_preprocess as preprocess

  example_seed = tf.constant([seed, 1], tf.int64)
  mixup_seed = tf.constant([seed, 2], tf.int64)

  def augment(index, example):
    image_seed = tf.random.experimental.stateless_fold_in(example_seed, index)
    return {
        "inputs": preprocess.preprocess_for_train(example["image"], image_seed, config),
        "targets": tf.cast(example["label"], tf.int32),
        "weights": tf.ones([], tf.float32),
    }

  def mix(index, batch):
    batch_seed = tf.random.experimental.stateless_fold_in(mixup_seed, index)
    inputs, targets = preprocess.mixup(
        batch["inputs"], batch["targets"], batch_seed, config.mixup_alpha,
        config.num_classes)
    return dict(batch, inputs=inputs, targets=targets)

  # Shuffle, then repeat: every epoch reads each example exactly once
  # (AlgoPerf repeats first, which lets epochs overlap by a buffer's worth).
  dataset = raw.shuffle(SHUFFLE_BUFFER_BATCHES * batch_size, seed=seed,
                        reshuffle_each_iteration=True).repeat()
  dataset = dataset.enumerate().skip(start_batch * batch_size)
  dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if config.mixup_alpha is not None:
    dataset = dataset.enumerate(start=start_batch).map(
        mix, num_parallel_calls=tf.data.AUTOTUNE)
  return _finish(dataset)


def eval_dataset(raw: Any, batch_size: int, config: Preprocessing) -> Any:
  """Centre-cropped batches of `raw_split` examples, in order; the last may be short."""
  tf, _ = tensorflow_modules()
  from algoperf_avg.kit import imagenet_preprocess as preprocess

  def view(example):
    return {
        "inputs": preprocess.preprocess_for_eval(example["image"], config),
        "targets": tf.cast(example["label"], tf.int32),
        "weights": tf.ones([], tf.float32),
    }

  dataset = raw.map(view, num_parallel_calls=tf.data.AUTOTUNE)
  return _finish(dataset.batch(batch_size))


def numpy_batches(dataset: Any) -> Iterator[dict[str, Any]]:
  """Iterates a batched `tf.data.Dataset` as dicts of numpy arrays."""
  _, tfds = tensorflow_modules()
  return iter(tfds.as_numpy(dataset))


def train_batches(
    builder: Any, batch_size: int, seed: int, config: Preprocessing, *,
    shard_index: int = 0, num_shards: int = 1, start_batch: int = 0,
) -> Iterator[dict[str, Any]]:
  """This host's endless training batches of ``batch_size`` from ``builder``'s train split."""
  raw = raw_split(builder, "train", shuffle_seed=seed, shard_index=shard_index,
                  num_shards=num_shards)
  return numpy_batches(train_dataset(raw, batch_size, seed, config,
                                     start_batch=start_batch))


def eval_batches(
    builder: Any, split: str, batch_size: int, config: Preprocessing, *,
    num_examples: int | None = None, shard_index: int = 0, num_shards: int = 1,
) -> Iterator[dict[str, Any]]:
  """One pass over a split, in stored order, with eval preprocessing.

  Args:
    builder: the dataset holding the split (ImageNet-v2's for "test").
    split: "eval_train" (the first ``num_examples`` of the train split),
      "validation" or "test".
    batch_size: examples per batch (the last may be short).
    config: the preprocessing (only its eval part is used).
    num_examples: examples of the split to read; None: all.
    shard_index: this host's part of the split.
    num_shards: number of hosts.
  """
  if split not in ("eval_train", "validation", "test"):
    raise spec.UsageError(f"unknown eval split {split!r}; choose eval_train, "
                          "validation or test")
  raw = raw_split(builder, TFDS_SPLITS[split], shard_index=shard_index,
                  num_shards=num_shards, num_examples=num_examples)
  return numpy_batches(eval_dataset(raw, batch_size, config))
