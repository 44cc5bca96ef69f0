"""RandAugment (Cubuk et al., 2020) on uint8 images, as AlgoPerf's ViT uses it.

Each of ``num_layers`` rounds picks one of 16 operations uniformly and
applies it at the shared ``magnitude`` (out of 10). The operations and their
strengths at magnitude ``m`` (``f = m / 10``) follow AlgoPerf's TensorFlow
port of the TPU AutoAugment code:

* AutoContrast, Equalize, Invert (no strength);
* Rotate by ``30 f`` degrees, ShearX/ShearY by ``0.3 f``, TranslateX/
  TranslateY by ``f * translate_pixels`` (100 at 224 px), each with a random
  sign; uncovered pixels become grey 128; nearest-neighbour sampling;
* Color, Contrast, Brightness, Sharpness with factor ``1.8 f + 0.1``
  (factor 1 is the identity, above 1 extrapolates, clipped to [0, 255]);
* Posterize to ``int(4 f)`` bits; Solarize above ``int(256 f)``;
  SolarizeAdd ``int(110 f)`` below 128; Cutout of a grey square of side
  ``2 int(f * cutout_pixels)`` (40 at 224 px) around a random pixel.

Two quirks of that code are kept so that training sees the same images:
Solarize's threshold is a uint8, so 256 (magnitude 10) wraps to 0 and
Solarize inverts every pixel; Contrast blends towards a grey of value
``pixels / 256`` (the histogram's total over its bins, not the mean
intensity). Unlike AlgoPerf, the random signs and Cutout's position come from
the stateless seed too, so an example's augmentation is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

OPERATIONS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
    "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)
MAX_LEVEL = 10.0
FILL_VALUE = 128  # grey for pixels that geometric operations uncover


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: float) -> tf.Tensor:
  """``image1 + factor * (image2 - image1)``, clipped and truncated to uint8."""
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  mixed = image1 + factor * (image2 - image1)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel's [min, max] to [0, 255] (channels with min == max stay)."""
  lo = tf.cast(tf.reduce_min(image, axis=(0, 1)), tf.float32)
  hi = tf.cast(tf.reduce_max(image, axis=(0, 1)), tf.float32)
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  # x * scale - lo * scale, not (x - lo) * scale: the same float rounding as PIL's port.
  stretched = tf.cast(image, tf.float32) * scale - lo * scale
  stretched = tf.cast(tf.clip_by_value(stretched, 0.0, 255.0), tf.uint8)
  return tf.where(hi > lo, stretched, image)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(values, minlength=256, maxlength=256)
  # PIL's step ignores the pixels of the brightest value present.
  brightest = tf.gather(histogram, tf.reduce_max(values))
  step = (tf.reduce_sum(histogram) - brightest) // 255
  safe_step = tf.maximum(step, 1)
  lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.cast(tf.where(step > 0, tf.gather(lut, values), values), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Histogram equalisation of each channel (PIL's ``ImageOps.equalize``)."""
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the ``bits`` most significant bits of every value."""
  shift = 8 - bits
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
  """Inverts values at or above ``threshold`` (taken modulo 256, see module doc)."""
  return tf.where(image < tf.constant(threshold % 256, tf.uint8), image, 255 - image)


def solarize_add(image: tf.Tensor, addition: int, threshold: int = 128) -> tf.Tensor:
  """Adds ``addition`` (clipped) to values below ``threshold``."""
  added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
  return tf.where(image < threshold, added, image)


def _grey(image: tf.Tensor) -> tf.Tensor:
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def color(image: tf.Tensor, factor: float) -> tf.Tensor:
  """Saturation: blends from the greyscale image."""
  return blend(_grey(image), image, factor)


def contrast(image: tf.Tensor, factor: float) -> tf.Tensor:
  """Contrast: blends from a flat grey of value ``pixels / 256`` (see module doc)."""
  pixels = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
  grey = tf.cast(tf.clip_by_value(pixels / 256.0, 0.0, 255.0), tf.uint8)
  return blend(tf.fill(tf.shape(image), grey), image, factor)


def brightness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """Brightness: blends from black."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """Sharpness: blends from PIL's SMOOTH filter (borders left unfiltered)."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(
      tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], padding="VALID")[0]
  smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
  interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  smooth = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(smooth, image, factor)


def transform(image: tf.Tensor, matrix: list) -> tf.Tensor:
  """Projective transform: output pixel (x, y) samples input ``M (x, y, 1)``.

  ``matrix`` is ``[a0, a1, a2, b0, b1, b2, c0, c1]`` as in
  `tf.raw_ops.ImageProjectiveTransformV3`; nearest-neighbour sampling, grey
  outside the image.
  """
  transforms = tf.cast(tf.stack(matrix)[None], tf.float32)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transforms, output_shape=tf.shape(image)[:2],
      fill_value=float(FILL_VALUE), interpolation="NEAREST", fill_mode="CONSTANT",
  )[0]


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  """Rotation about the image centre, counter-clockwise for positive degrees."""
  radians = degrees * (math.pi / 180.0)
  height = tf.cast(tf.shape(image)[0] - 1, tf.float32)
  width = tf.cast(tf.shape(image)[1] - 1, tf.float32)
  cos, sin = tf.cos(radians), tf.sin(radians)
  # Output pixel p samples input R (p - c) + c, c the centre.
  x_offset = (width - (cos * width - sin * height)) / 2.0
  y_offset = (height - (sin * width + cos * height)) / 2.0
  return transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
  return transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
  return transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  """Moves the content ``pixels`` to the left (right if negative)."""
  return transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: tf.Tensor) -> tf.Tensor:
  """Moves the content ``pixels`` up (down if negative)."""
  return transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def cutout(image: tf.Tensor, half_side: int, seed: tf.Tensor) -> tf.Tensor:
  """Greys rows and columns ``[c - half_side, c + half_side)`` around a random pixel ``c``."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  row = tf.random.stateless_uniform([], row_seed, maxval=height, dtype=tf.int32)
  col = tf.random.stateless_uniform([], col_seed, maxval=width, dtype=tf.int32)
  rows = tf.range(height)
  cols = tf.range(width)
  rows = (rows >= row - half_side) & (rows < row + half_side)
  cols = (cols >= col - half_side) & (cols < col + half_side)
  inside = (rows[:, None] & cols[None, :])[:, :, None]
  return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


def _branches(
    image: tf.Tensor, magnitude: float, sign: tf.Tensor, seed: tf.Tensor,
    translate_pixels: float, cutout_pixels: float,
) -> list[Callable[[], tf.Tensor]]:
  """The 16 operations at ``magnitude``, in `OPERATIONS` order, as thunks."""
  f = magnitude / MAX_LEVEL
  enhance = f * 1.8 + 0.1
  ops = {
      "AutoContrast": lambda: autocontrast(image),
      "Equalize": lambda: equalize(image),
      "Invert": lambda: invert(image),
      "Rotate": lambda: rotate(image, sign * f * 30.0),
      "Posterize": lambda: posterize(image, int(f * 4)),
      "Solarize": lambda: solarize(image, int(f * 256)),
      "Color": lambda: color(image, enhance),
      "Contrast": lambda: contrast(image, enhance),
      "Brightness": lambda: brightness(image, enhance),
      "Sharpness": lambda: sharpness(image, enhance),
      "ShearX": lambda: shear_x(image, sign * f * 0.3),
      "ShearY": lambda: shear_y(image, sign * f * 0.3),
      "TranslateX": lambda: translate_x(image, sign * f * translate_pixels),
      "TranslateY": lambda: translate_y(image, sign * f * translate_pixels),
      "Cutout": lambda: cutout(image, int(f * cutout_pixels), seed),
      "SolarizeAdd": lambda: solarize_add(image, int(f * 110)),
  }
  return [ops[name] for name in OPERATIONS]


def randaugment(
    image: tf.Tensor,
    num_layers: int,
    magnitude: float,
    seed: tf.Tensor,
    translate_pixels: float = 100.0,
    cutout_pixels: float = 40.0,
) -> tf.Tensor:
  """``num_layers`` uniformly chosen operations at ``magnitude`` on a uint8 image.

  Args:
    image: ``(height, width, 3)`` uint8.
    num_layers: operations applied one after another (2 in AlgoPerf).
    magnitude: their strength, 0-10 (10 in AlgoPerf).
    seed: ``(2,)`` integer stateless seed.
    translate_pixels: the translation at magnitude 10 (AlgoPerf: 100 px on
      224 px images; scale it with the image size).
    cutout_pixels: Cutout's half side at magnitude 10 (AlgoPerf: 40 px).

  Returns:
    The augmented uint8 image, same shape.
  """
  for layer in range(num_layers):
    layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
    op_seed, sign_seed, cutout_seed = tf.unstack(
        tf.random.experimental.stateless_split(layer_seed, 3))
    op = tf.random.stateless_uniform([], op_seed, maxval=len(OPERATIONS), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, 1.0, -1.0)
    image = tf.switch_case(op, _branches(
        image, magnitude, sign, cutout_seed, translate_pixels, cutout_pixels))
  return image
