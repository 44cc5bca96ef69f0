"""AlgoPerf's ImageNet preprocessing as TensorFlow ops on JPEG bytes.

Training: a random crop covering 8-100% of the image area with aspect ratio
in [3/4, 4/3] (``tf.image.stateless_sample_distorted_bounding_box``, 10
attempts, falling back to the central crop when no attempt fits), decoded
straight from the JPEG (``decode_and_crop_jpeg``), bicubic-resized to the
output size and randomly flipped left-right; for ViT, RandAugment on the
clipped uint8 image. Evaluation: the central square of side
``image_size / resize_size`` (224/256) of the shorter side, bicubic-resized.
Both end with per-channel normalisation of 0-255 pixels. Mixup acts on whole
batches (`mixup`).

Every random choice is stateless, drawn from a per-example seed, so the same
(seed, example position) always gives the same image. This module imports
TensorFlow; import it only where TensorFlow is wanted.
"""

from __future__ import annotations

import tensorflow as tf

from algoperf_avg.kit import imagenet_randaugment
from algoperf_avg.kit.imagenet import Preprocessing


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bicubic resize to ``size`` x ``size`` (float32, may leave [0, 255])."""
  return tf.image.resize(image, [size, size], method=tf.image.ResizeMethod.BICUBIC)


def center_crop_window(shape: tf.Tensor, image_size: int, resize_size: int) -> tf.Tensor:
  """``[top, left, side, side]`` of the central eval crop of an image ``shape``.

  The side is ``image_size / resize_size`` of the shorter side (rounded
  down); an odd leftover pixel goes above/left of the crop.
  """
  height, width = shape[0], shape[1]
  shorter = tf.cast(tf.minimum(height, width), tf.float32)
  side = tf.cast(shorter * (image_size / resize_size), tf.int32)
  return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def decode_and_center_crop(jpeg: tf.Tensor, image_size: int, resize_size: int) -> tf.Tensor:
  """The eval view: central crop of a JPEG, resized to ``image_size``."""
  window = center_crop_window(tf.io.extract_jpeg_shape(jpeg), image_size, resize_size)
  image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
  return resize(image, image_size)


def decode_and_random_crop(
    jpeg: tf.Tensor, seed: tf.Tensor, config: Preprocessing
) -> tf.Tensor:
  """A random crop of a JPEG (Inception-style), resized to the input size.

  As in AlgoPerf: the crop must cover at least 10% of the (whole-image)
  bounding box; when none of 10 attempts fits, the sampler returns the whole
  image, and then the eval crop is used instead. ``seed`` is ``(2,)`` int.
  """
  shape = tf.io.extract_jpeg_shape(jpeg)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=config.aspect_ratio_range,
      area_range=config.area_range, max_attempts=10,
      use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  # AlgoPerf compares the crop's (h, w, 3) with the JPEG's (h, w, channels),
  # so a one-channel JPEG never falls back to the central crop.
  whole_image = tf.reduce_all(tf.equal(tf.stack([size[0], size[1], 3]), shape))
  return tf.cond(
      whole_image,
      lambda: decode_and_center_crop(jpeg, config.image_size, config.resize_size),
      lambda: resize(tf.io.decode_and_crop_jpeg(jpeg, window, channels=3),
                     config.image_size),
  )


def normalize(image: tf.Tensor, config: Preprocessing) -> tf.Tensor:
  """``(pixels - mean) / std`` per channel, float32."""
  image = tf.cast(image, tf.float32)
  return (image - tf.constant(config.mean_rgb)) / tf.constant(config.stddev_rgb)


def preprocess_for_train(
    jpeg: tf.Tensor, seed: tf.Tensor, config: Preprocessing
) -> tf.Tensor:
  """A training view ``(size, size, 3)`` float32 of a JPEG; ``seed`` is ``(2,)`` int."""
  crop_seed, flip_seed, augment_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  image = decode_and_random_crop(jpeg, crop_seed, config)
  image = tf.reshape(image, [config.image_size, config.image_size, 3])
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  if config.randaugment:
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    image = imagenet_randaugment.randaugment(
        image, config.randaugment_layers, config.randaugment_magnitude, augment_seed,
        translate_pixels=config.randaugment_translate,
        cutout_pixels=config.randaugment_cutout)
  return normalize(image, config)


def preprocess_for_eval(jpeg: tf.Tensor, config: Preprocessing) -> tf.Tensor:
  """The eval view ``(size, size, 3)`` float32 of a JPEG (deterministic)."""
  image = decode_and_center_crop(jpeg, config.image_size, config.resize_size)
  image = tf.reshape(image, [config.image_size, config.image_size, 3])
  return normalize(image, config)


def mixup(
    inputs: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, alpha: float,
    num_classes: int,
) -> tuple[tf.Tensor, tf.Tensor]:
  """Mixup (Zhang et al., 2018) of a batch with itself rolled by one.

  One weight ``lam ~ Beta(alpha, alpha)`` (a ratio of two Gamma draws) for
  the whole batch, as in AlgoPerf and big_vision: example ``i`` becomes
  ``lam * x_i + (1 - lam) * x_{i-1}`` and its one-hot target likewise.

  Returns:
    The mixed inputs and ``(batch, num_classes)`` float32 soft targets.
  """
  seed_a = tf.random.experimental.stateless_fold_in(seed, 0)
  seed_b = tf.random.experimental.stateless_fold_in(seed_a, 0)
  gamma_a = tf.random.stateless_gamma([1], seed_a, alpha)
  gamma_b = tf.random.stateless_gamma([1], seed_b, alpha)
  lam = tf.squeeze(gamma_a / (gamma_a + gamma_b))
  targets = tf.one_hot(labels, num_classes)
  inputs = lam * inputs + (1.0 - lam) * tf.roll(inputs, 1, axis=0)
  targets = lam * targets + (1.0 - lam) * tf.roll(targets, 1, axis=0)
  return inputs, targets
