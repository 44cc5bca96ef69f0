"""What the two ImageNet workloads share: sizes, data, loss and evaluation.

`ImagenetWorkload` is the half of ``imagenet_vit`` and ``imagenet_resnet``
that does not depend on the model: AlgoPerf's ImageNet splits (ImageNet 2012
train and validation, ImageNet-v2 matched-frequency as the test split), its
preprocessing (`algoperf_avg.kit.imagenet`), softmax cross-entropy, top-1
accuracy summed over a whole split, and AlgoPerf's ``eval_train`` size (the
validation size rounded up to whole eval batches). A subclass adds the model
(``init_model_fn``, ``model_fn``) and states its configs and
``preprocessing`` (RandAugment and mixup for ViT).

The ``small`` sizes read the generated shapes-and-textures images
(`algoperf_avg.kit.imagenet_synthetic`), written once into the cache folder
(`kit.data.cache_dir`) and then read, cropped, augmented and normalised by exactly the
code that reads ImageNet, at 32 px.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import jax
import numpy as np

from algoperf_avg import spec
from algoperf_avg.evaluation import engine
from algoperf_avg.kit import config, data, imagenet, losses
from algoperf_avg.kit import imagenet_synthetic as synthetic

TRAIN_STATE_NAME = "imagenet_train"  # prefix of the saved tf.data iterator state


@dataclasses.dataclass(frozen=True)
class ImagenetConfig(config.SizeConfig):
  """The image and class fields of one ImageNet size.

  Attributes:
    image_size: side of the model's square input.
    resize_size: the eval crop is ``image_size / resize_size`` of the shorter side.
    num_classes: logits per image.
    synthetic: the generated dataset of a small size (None: ImageNet).
    augmentation: `imagenet.Preprocessing` fields this size sets otherwise,
      as ``(name, value)`` pairs (milder crops for tiny images).
  """

  image_size: int = 224
  resize_size: int = 256
  num_classes: int = imagenet.NUM_CLASSES
  synthetic: synthetic.SyntheticConfig | None = None
  augmentation: tuple[tuple[str, Any], ...] = ()


def eval_train_size(num_validation: int, eval_batch_size: int) -> int:
  """AlgoPerf's ``num_eval_train_examples``: validation size rounded up to whole batches."""
  return math.ceil(num_validation / eval_batch_size) * eval_batch_size


def full_config(eval_batch_size: int, train_batch_size: int,
                reference_hparams: Mapping[str, Any]) -> ImagenetConfig:
  """AlgoPerf's ImageNet size with the workload's batch sizes and hyperparameters."""
  return ImagenetConfig(
      num_train_examples=imagenet.NUM_TRAIN_EXAMPLES,
      num_eval_train_examples=eval_train_size(imagenet.NUM_VALIDATION_EXAMPLES,
                                              eval_batch_size),
      num_validation_examples=imagenet.NUM_VALIDATION_EXAMPLES,
      num_test_examples=imagenet.NUM_TEST_EXAMPLES,
      eval_batch_size=eval_batch_size, train_batch_size=train_batch_size,
      reference_hparams=reference_hparams,
  )


# The generated images of both small ImageNet variants (one dataset in the
# cache). Every object takes its class's hue (the generator's default tints
# half of them): the small models then learn the classes by mid-budget, the
# regime the calibration rule asks for (results/calibration/README.md).
SMALL_DATA = synthetic.SyntheticConfig(class_colour_rate=1.0)


def small_config(dataset: synthetic.SyntheticConfig, eval_batch_size: int,
                 train_batch_size: int, reference_hparams: Mapping[str, Any],
                 image_size: int = 32, resize_size: int = 36,
                 augmentation: Mapping[str, Any] | None = None) -> ImagenetConfig:
  """A size on the generated ``dataset`` (all of its validation and test splits).

  ``augmentation`` changes fields of the workload's `imagenet.Preprocessing`
  (after scaling it to ``image_size``).
  """
  return ImagenetConfig(
      num_train_examples=dataset.num_train,
      num_eval_train_examples=min(dataset.num_train, dataset.num_validation),
      num_validation_examples=dataset.num_validation,
      num_test_examples=dataset.num_test,
      eval_batch_size=eval_batch_size, train_batch_size=train_batch_size,
      reference_hparams=reference_hparams,
      image_size=image_size, resize_size=resize_size,
      num_classes=dataset.num_classes, synthetic=dataset,
      augmentation=tuple(sorted((augmentation or {}).items())),
  )


OPTIONS: Mapping[str, config.Option] = {
    "imagenet_v2_dir": config.Option(
        None, "TFDS data dir holding imagenet_v2/matched-frequency:3.0.0, the test "
        "split (default: <data_dir>/imagenet_v2)"),
}


@functools.lru_cache(maxsize=4)
def _synthetic_builder(root: str, dataset: synthetic.SyntheticConfig) -> Any:
  return synthetic.prepare(root, dataset)


class TrainStream(data.TfCheckpointed):
  """Training batches whose position is TensorFlow's iterator checkpoint.

  The state holds the shuffle buffer and file positions, so a resumed run
  continues with the very next batch without reading what came before.
  """

  def checkpoint(self, directory: str) -> dict[str, str]:
    return {"tf": self.save(os.path.join(directory, TRAIN_STATE_NAME))}


class ImagenetWorkload(spec.Workload):
  """Data, loss and evaluation of the ImageNet workloads (see the module docstring)."""

  sizes = ("full", "small")
  loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
  dataset = imagenet.DATA_FOLDER
  options = OPTIONS
  batch_pad_values = imagenet.PAD_VALUES
  # AlgoPerf's preprocessing of the full size; small sizes scale it.
  preprocessing: ClassVar[imagenet.Preprocessing] = imagenet.RESNET_PREPROCESSING

  @property
  def input_config(self) -> imagenet.Preprocessing:
    """This size's preprocessing (pixel amounts scaled to its image size)."""
    c, full = self.config, self.preprocessing
    scaled = full
    if (c.image_size, c.resize_size, c.num_classes) != (
        full.image_size, full.resize_size, full.num_classes):
      scaled = full.scaled(c.image_size, c.resize_size, c.num_classes)
    return dataclasses.replace(scaled, **dict(c.augmentation))

  # ----- data ------------------------------------------------------------------

  def _v2_dir(self, data_dir: str | None) -> str | None:
    given = self.option_values["imagenet_v2_dir"]
    if given:
      return given
    return os.path.join(data_dir, imagenet.V2_DATA_FOLDER) if data_dir else None

  def _builder(self, split: str, data_dir: str | None) -> Any:
    """The prepared TFDS dataset holding ``split`` (ImageNet-v2's for "test")."""
    if self.config.synthetic is not None:
      return _synthetic_builder(data.cache_dir("imagenet"), self.config.synthetic)
    if split == "test":
      return imagenet.open_builder(self._v2_dir(data_dir), imagenet.V2_TFDS_NAME)
    return imagenet.open_builder(self.dataset_dir(data_dir))

  def data_problem(self, dataset_dir: str) -> str | None:
    """Looks for both datasets' ``dataset_info.json`` (no TensorFlow import)."""
    v2_dir = self._v2_dir(os.path.dirname(dataset_dir))
    wanted = [(dataset_dir, imagenet.TFDS_NAME),
              (v2_dir, imagenet.V2_TFDS_NAME)]
    for folder, name in wanted:
      path = os.path.join(folder, *name.replace(":", "/").split("/"))
      if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        return f"no prepared {name} in {folder}; " + imagenet.how_to_prepare()
    return None

  @classmethod
  def setup_data(cls, data_dir: str, manual_dir: str | None = None, **kwargs: Any) -> str:
    """Builds ``DATA/imagenet`` from the ILSVRC 2012 archives and downloads ImageNet-v2."""
    if kwargs:
      raise spec.UsageError(f"setup-data {cls.name} takes only --manual_dir, got "
                            f"{sorted(kwargs)}")
    if not manual_dir:
      raise spec.UsageError(f"setup-data {cls.name} needs --manual_dir=DIR; "
                            + imagenet.how_to_prepare())
    folder = os.path.join(data_dir, imagenet.DATA_FOLDER)
    imagenet.setup_data(folder, manual_dir)
    imagenet.setup_imagenet_v2(os.path.join(data_dir, imagenet.V2_DATA_FOLDER))
    return folder

  def train_batches(
      self,
      data_rng: jax.Array,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
      start: Any = None,
  ) -> Iterator[spec.Batch]:
    """Shuffled, augmented batches of this process's part of the train split, forever.

    Resumable in O(1): the position is TensorFlow's iterator checkpoint
    (`TrainStream`).
    """
    seed = data.seed_from_rng(jax.random.fold_in(data_rng, shard_index))
    raw = imagenet.raw_split(self._builder("train", data_dir), "train",
                             shuffle_seed=seed, shard_index=shard_index,
                             num_shards=num_shards)
    dataset = imagenet.train_dataset(raw, batch_size, seed, self.input_config)
    return TrainStream(dataset, start["tf"] if start else None)

  def example_batch(self, batch_size: int, data_dir: str | None = None) -> spec.Batch:
    """A training batch of the right shapes and dtypes, made without reading data."""
    del data_dir
    c, mixup = self.config, self.input_config.mixup_alpha is not None
    return {
        "inputs": np.zeros((batch_size, c.image_size, c.image_size, 3), np.float32),
        "targets": (np.zeros((batch_size, c.num_classes), np.float32) if mixup
                    else np.zeros((batch_size,), np.int32)),
        "weights": np.ones((batch_size,), np.float32),
    }

  def eval_batches(
      self,
      split: str,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
  ) -> Iterator[spec.Batch]:
    """One ordered pass over this shard of ``split``, centre-cropped.

    ``eval_train`` is the first `num_eval_train_examples` of the train split
    (each shard reading its share of them).
    """
    if split not in ("eval_train", "validation", "test"):
      raise spec.UsageError(f"unknown eval split {split!r}; choose eval_train, "
                            "validation or test")
    num_examples = None
    if split == "eval_train":
      start, stop = data.shard_bounds(self.num_eval_train_examples, shard_index,
                                      num_shards)
      num_examples = stop - start
    return imagenet.eval_batches(
        self._builder(split, data_dir), split, batch_size, self.input_config,
        num_examples=num_examples, shard_index=shard_index, num_shards=num_shards)

  # ----- loss and evaluation ------------------------------------------------------

  def loss_fn(
      self,
      label_batch: jax.Array,
      logits_batch: jax.Array,
      mask_batch: jax.Array | None = None,
      label_smoothing: float = 0.0,
  ) -> dict[str, jax.Array]:
    """Softmax cross-entropy against integer or one-hot (mixup) labels, as AlgoPerf's."""
    return losses.softmax_cross_entropy(label_batch, logits_batch, mask_batch,
                                        label_smoothing)

  def eval_step(
      self,
      params: spec.Params,
      model_state: spec.ModelState,
      batch: spec.Batch,
      rng: jax.Array,
      metrics: str = "all",
  ) -> engine.EvalOutput:
    """Summed loss, example count and correct top-1 predictions of a padded batch."""
    del metrics  # the loss and accuracy come from the same logits
    logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL,
                              rng, update_batch_norm=False)
    weights = batch["weights"]
    loss = self.loss_fn(batch["targets"], logits, weights)
    correct = (logits.argmax(-1) == batch["targets"]) * weights
    return engine.EvalOutput(sums={"loss": loss["summed"], "num_examples": weights.sum(),
                                   "correct": correct.sum()})

  def finalize_metrics(
      self,
      split: str,
      sums: Mapping[str, np.ndarray],
      per_example: Mapping[str, np.ndarray],
      metrics: str = "all",
  ) -> dict[str, float]:
    """Top-1 accuracy and mean loss over the whole split."""
    del split, per_example, metrics
    count = max(float(sums["num_examples"]), 1.0)
    return {"accuracy": float(sums["correct"]) / count,
            "loss": float(sums["loss"]) / count}
