"""Generated colour images with planted classes, for the small ImageNet variants.

Each image (36-48 px per side, not square) shows one large object on a
cluttered background. Its class is set by the object's **shape** (disk,
square, triangle, ring, cross) and **texture** (solid or striped), which
gives 10 classes; its **colour** is a weaker cue (half of the objects take
their class's hue, the rest a random one) and its **position**, size and
rotation are random. Clutter: a two-colour gradient background with pixel
noise and up to two smaller solid shapes of random kind and colour. Then 10%
of the labels are replaced by uniformly drawn ones, so no model exceeds about
91% accuracy and the validation curve is noisy. The test split plays
ImageNet-v2: the same classes with two more distractors and objects 20%
smaller, so it is harder.

Images are stored as JPEG bytes in a TFDS dataset with ImageNet's features
(``image``, ``label``, ``file_name``), so they are read, cropped, augmented
and normalised by exactly the code that reads ImageNet
(`algoperf_avg.kit.imagenet`). Everything is deterministic given the
config's seed; 20k images take a few seconds to write.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

SHAPES = ("disk", "square", "triangle", "ring", "cross")
TEXTURES = ("solid", "striped")
DATASET_NAME = "imagenet_synthetic"
VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes, difficulty and seed of the generated dataset."""

  num_classes: int = 10
  num_train: int = 16_384
  num_validation: int = 2_048
  num_test: int = 2_048
  min_side: int = 36
  max_side: int = 48
  label_noise: float = 0.1
  class_colour_rate: float = 0.5
  max_distractors: int = 2
  test_extra_distractors: int = 2
  test_object_scale: float = 0.8
  jpeg_quality: int = 90
  seed: int = 0

  def __post_init__(self):
    if not 2 <= self.num_classes <= len(SHAPES) * len(TEXTURES):
      raise ValueError(f"num_classes must be in [2, {len(SHAPES) * len(TEXTURES)}]")

  @property
  def name(self) -> str:
    """A TFDS config name that changes whenever any field does."""
    digest = hashlib.sha256(repr(self).encode()).hexdigest()[:10]
    return f"c{self.num_classes}_s{self.seed}_{digest}"

  def split_sizes(self) -> dict[str, int]:
    return {"train": self.num_train, "validation": self.num_validation,
            "test": self.num_test}


def _shape_mask(kind: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
  """Pixels of a shape of ``radius`` centred at the origin of ``(dy, dx)``."""
  if kind == "disk":
    return dy**2 + dx**2 <= radius**2
  if kind == "ring":
    distance = np.sqrt(dy**2 + dx**2)
    return (distance <= radius) & (distance >= 0.55 * radius)
  if kind == "square":
    side = 0.8 * radius
    return (np.abs(dy) <= side) & (np.abs(dx) <= side)
  if kind == "cross":
    arm = 0.3 * radius
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | (
        (np.abs(dy) <= arm) & (np.abs(dx) <= radius))
  if kind == "triangle":
    # Equilateral, vertex up: inside three half-planes at distance r/2 from the centre.
    normals = [(-1.0, 0.0), (0.5, np.sqrt(3) / 2), (0.5, -np.sqrt(3) / 2)]
    return np.all([ny * dy + nx * dx <= 0.5 * radius for ny, nx in normals], axis=0)
  raise ValueError(f"unknown shape {kind!r}")


def _rgb(hue: float, rng: np.random.Generator) -> np.ndarray:
  saturation, value = rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
  return 255 * np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def render(label: int, height: int, width: int, num_distractors: int,
           config: SyntheticConfig, rng: np.random.Generator,
           object_scale: float = 1.0) -> np.ndarray:
  """One ``(height, width, 3)`` uint8 image of class ``label`` (before label noise).

  The object's radius is ``object_scale`` times 22-34% of the shorter side.
  """
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  side = min(height, width)
  # Background: a gradient between two random colours, plus pixel noise.
  angle = rng.uniform(0, 2 * np.pi)
  ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
  start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  image = start + ramp[..., None] * (end - start)

  def paint(kind, radius, colour, striped):
    cy = rng.uniform(radius * 0.8, height - radius * 0.8)
    cx = rng.uniform(radius * 0.8, width - radius * 0.8)
    turn = rng.uniform(0, 2 * np.pi)
    dy = np.cos(turn) * (yy - cy) - np.sin(turn) * (xx - cx)
    dx = np.sin(turn) * (yy - cy) + np.cos(turn) * (xx - cx)
    mask = _shape_mask(kind, dy, dx, radius)
    image[mask] = colour
    if striped:
      period = rng.uniform(5.0, 7.0)
      phase = rng.uniform(0, 2 * np.pi)
      direction = rng.uniform(0, np.pi)
      wave = np.sin(2 * np.pi * (np.cos(direction) * dy + np.sin(direction) * dx)
                    / period + phase)
      image[mask & (wave > 0)] = 0.3 * colour

  for _ in range(num_distractors):
    paint(SHAPES[rng.integers(len(SHAPES))], rng.uniform(0.08, 0.14) * side,
          _rgb(rng.uniform(), rng), striped=False)
  shape, texture = label % len(SHAPES), label // len(SHAPES)
  hue = label / config.num_classes
  if rng.uniform() < config.class_colour_rate:
    hue += rng.normal(0, 0.03)
  else:
    hue = rng.uniform()
  paint(SHAPES[shape], object_scale * rng.uniform(0.22, 0.34) * side, _rgb(hue, rng),
        striped=TEXTURES[texture] == "striped")
  image += rng.normal(0, 10, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  from PIL import Image  # Pillow comes with the test extras (scikit-image)

  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def examples(config: SyntheticConfig, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
  """``(key, {"image": JPEG bytes, "label", "file_name"})`` for one split, in order."""
  size = config.split_sizes()[split]
  split_id = ("train", "validation", "test").index(split)
  rng = np.random.default_rng([config.seed, split_id])
  true_labels = rng.integers(0, config.num_classes, size)
  noisy = rng.uniform(size=size) < config.label_noise
  labels = np.where(noisy, rng.integers(0, config.num_classes, size), true_labels)
  extra = config.test_extra_distractors if split == "test" else 0
  scale = config.test_object_scale if split == "test" else 1.0
  for index in range(size):
    height, width = rng.integers(config.min_side, config.max_side + 1, 2)
    distractors = int(rng.integers(0, config.max_distractors + 1)) + extra
    image = render(int(true_labels[index]), int(height), int(width), distractors,
                   config, rng, scale)
    name = f"{split}_{index:06d}.JPEG"
    yield name, {"image": _encode_jpeg(image, config.jpeg_quality),
                 "label": int(labels[index]), "file_name": name}


def _builder(config: SyntheticConfig, data_dir: str) -> Any:
  import tensorflow_datasets as tfds

  class ImagenetSynthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The generated images, in ImageNet's TFDS features."""

    VERSION = tfds.core.Version(VERSION)

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(encoding_format="jpeg"),
              "label": tfds.features.ClassLabel(num_classes=config.num_classes),
              "file_name": tfds.features.Text(),
          }),
          supervised_keys=("image", "label"),
          description=f"algoperf_avg generated images: {config!r}",
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: examples(config, split) for split in config.split_sizes()}

    def _generate_examples(self):  # unused: _split_generators returns generators
      raise NotImplementedError

  ImagenetSynthetic.name = DATASET_NAME
  return ImagenetSynthetic(
      data_dir=data_dir, config=tfds.core.BuilderConfig(name=config.name))


def dataset_dir(data_dir: str | os.PathLike, config: SyntheticConfig) -> str:
  """Where `prepare` writes ``config``'s dataset under ``data_dir``."""
  return os.path.join(os.fspath(data_dir), DATASET_NAME, config.name, VERSION)


def prepare(data_dir: str | os.PathLike, config: SyntheticConfig = SyntheticConfig()
            ) -> Any:
  """Writes the dataset for ``config`` under ``data_dir`` (once) and opens it.

  A dataset already written for the same config is reused, so this is cheap
  after the first call.

  Returns:
    A prepared TFDS builder with splits "train", "validation", "test", for
    `algoperf_avg.kit.imagenet.train_batches` and ``eval_batches``.
  """
  from algoperf_avg.kit import imagenet

  imagenet.tensorflow_modules()  # keeps TensorFlow off the accelerators
  import tensorflow_datasets as tfds

  path = dataset_dir(data_dir, config)
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    builder = _builder(config, os.fspath(data_dir))
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
    except FileExistsError:
      # TFDS writes into a temporary folder and renames it; when several
      # processes prepare at once (`calibrate_small.py --jobs=2`), all but the
      # first find the folder there. Theirs is the same dataset.
      if not os.path.exists(os.path.join(path, "dataset_info.json")):
        raise
  return imagenet.open_directory(path)


def _add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_ilsvrc_archives(
    manual_dir: str | os.PathLike,
    train: Mapping[str, Sequence[bytes]],
    validation: Sequence[bytes],
) -> None:
  """ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, laid out as image-net.org's.

  For tests and benchmarks of the real TFDS ``imagenet2012`` builder (the
  reader then runs exactly as on the real archives).

  Args:
    manual_dir: folder to write the two archives to.
    train: JPEG bytes per synset (e.g. ``"n01440764"``); each synset becomes
      a ``<synset>.tar`` of ``<synset>_<k>.JPEG`` inside the train archive.
    validation: JPEG bytes of ``ILSVRC2012_val_00000001.JPEG``, ... . TFDS
      labels them with the first entries of its own validation label list
      (the real archive's labels, in file-name order).
  """
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
    for synset, images in train.items():
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as class_tar:
        for k, jpeg in enumerate(images):
          _add_to_tar(class_tar, f"{synset}_{k + 1}.JPEG", jpeg)
      _add_to_tar(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as val:
    for k, jpeg in enumerate(validation):
      _add_to_tar(val, f"ILSVRC2012_val_{k + 1:08d}.JPEG", jpeg)
