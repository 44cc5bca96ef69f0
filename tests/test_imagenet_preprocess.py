"""Tests of the ImageNet crops, normalisation, mixup and RandAugment operations."""

from __future__ import annotations

import io

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from PIL import Image, ImageOps  # noqa: E402

from algoperf_avg.kit import imagenet  # noqa: E402
from algoperf_avg.kit import imagenet_preprocess as preprocess  # noqa: E402
from algoperf_avg.kit import imagenet_randaugment as ra  # noqa: E402


def _image(height=24, width=20, seed=0, low=0, high=256) -> np.ndarray:
  return np.random.default_rng(seed).integers(low, high, (height, width, 3)).astype(np.uint8)


def _jpeg(image: np.ndarray) -> tf.Tensor:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=95)
  return tf.constant(buffer.getvalue())


# ----- crops and normalisation --------------------------------------------------


@pytest.mark.parametrize(("shape", "window"), [
    ((500, 375), [86, 24, 328, 328]),  # side int(375 * 224 / 256) = 328
    ((256, 256), [16, 16, 224, 224]),
    ((37, 45), [3, 7, 32, 32]),
])
def test_center_crop_window(shape, window):
  got = preprocess.center_crop_window(tf.constant([*shape, 3]), 224, 256)
  np.testing.assert_array_equal(got, window)


def test_eval_view_is_the_central_crop_resized_and_normalised():
  image = np.zeros((64, 48, 3), np.uint8)
  image[:, :, 0] = 250  # red everywhere ...
  image[:8] = 0  # ... but black in rows the 42-pixel crop leaves out
  config = imagenet.Preprocessing(image_size=21, resize_size=24)
  view = preprocess.preprocess_for_eval(_jpeg(image), config).numpy()
  assert view.shape == (21, 21, 3)
  pixels = view * np.array(imagenet.STDDEV_RGB) + np.array(imagenet.MEAN_RGB)
  np.testing.assert_allclose(pixels.mean((0, 1)), [250, 0, 0], atol=3)


def test_training_views_are_seeded_and_vary():
  image = _image(60, 80)
  jpeg = _jpeg(image)
  config = imagenet.Preprocessing(image_size=32, resize_size=36)
  view = lambda s: preprocess.preprocess_for_train(  # noqa: E731
      jpeg, tf.constant(s, tf.int64), config).numpy()
  a = view([1, 2])
  assert a.shape == (32, 32, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, view([1, 2]))
  assert not np.allclose(a, view([1, 3]))


def test_random_crops_cover_the_configured_area_range():
  # A crop of a horizontal ramp shows which columns it kept.
  width = 200
  image = np.broadcast_to(np.linspace(0, 255, width)[None, :, None], (200, width, 3))
  jpeg = _jpeg(image.astype(np.uint8))
  config = imagenet.Preprocessing(image_size=16, resize_size=18, area_range=(0.3, 0.4),
                                  aspect_ratio_range=(1.0, 1.0))
  spans = []
  for s in range(20):
    crop = preprocess.decode_and_random_crop(jpeg, tf.constant([s, 0], tf.int64), config)
    row = crop.numpy()[8, :, 0]
    spans.append((row.max() - row.min()) / 255 * 16 / 15)
  # Square crops of 30-40% of the area span sqrt(0.3)-sqrt(0.4) of the width.
  assert 0.5 < min(spans) and max(spans) < 0.68


def test_mixup_mixes_with_the_previous_example():
  rng = np.random.default_rng(0)
  inputs = tf.constant(rng.normal(size=(4, 2, 2, 3)).astype(np.float32))
  labels = tf.constant([0, 1, 2, 1])
  mixed, targets = preprocess.mixup(inputs, labels, tf.constant([5, 6], tf.int64), 0.2, 3)
  lam = float(targets[0, 0])  # example 0 mixes with example 3 (label 1)
  assert 0 <= lam <= 1
  np.testing.assert_allclose(targets, [
      [lam, 1 - lam, 0], [1 - lam, lam, 0], [0, 1 - lam, lam], [0, lam, 1 - lam]],
      atol=1e-6)
  x = inputs.numpy()
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * np.roll(x, 1, 0), atol=1e-6)


def test_scaled_preprocessing_scales_pixel_amounts():
  small = imagenet.VIT_PREPROCESSING.scaled(32, 36, num_classes=10)
  assert small.randaugment and small.mixup_alpha == 0.2
  assert small.randaugment_translate == pytest.approx(100 * 32 / 224)
  assert small.randaugment_cutout == pytest.approx(40 * 32 / 224)
  assert (small.image_size, small.resize_size, small.num_classes) == (32, 36, 10)


# ----- RandAugment operations against PIL and closed forms ---------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_operations_match_pil(seed):
  image = _image(seed=seed, low=30 * seed, high=256 - 40 * seed)
  pil = Image.fromarray(image)
  np.testing.assert_array_equal(ra.equalize(tf.constant(image)), ImageOps.equalize(pil))
  np.testing.assert_array_equal(ra.invert(tf.constant(image)), ImageOps.invert(pil))
  np.testing.assert_array_equal(ra.posterize(tf.constant(image), 3),
                                ImageOps.posterize(pil, 3))
  np.testing.assert_array_equal(ra.solarize(tf.constant(image), 100),
                                ImageOps.solarize(pil, 100))
  contrast = ra.autocontrast(tf.constant(image)).numpy().astype(int)
  assert np.abs(contrast - np.asarray(ImageOps.autocontrast(pil), int)).max() <= 1


def test_solarize_at_full_magnitude_inverts_every_pixel():
  image = _image()
  np.testing.assert_array_equal(ra.solarize(tf.constant(image), 256), 255 - image)


def test_blend_operations_closed_forms():
  image = _image()
  x = image.astype(np.float32)
  brightness = ra.brightness(tf.constant(image), 1.9).numpy()
  np.testing.assert_array_equal(brightness, np.clip(1.9 * x, 0, 255).astype(np.uint8))
  grey = np.full_like(x, int(24 * 20 / 256))  # AlgoPerf's "mean": pixels / 256
  contrast = ra.contrast(tf.constant(image), 0.5).numpy()
  np.testing.assert_array_equal(contrast, (grey + 0.5 * (x - grey)).astype(np.uint8))
  assert np.array_equal(ra.color(tf.constant(image), 1.0), image)
  flat = np.full((6, 6, 3), 77, np.uint8)
  np.testing.assert_array_equal(ra.sharpness(tf.constant(flat), 1.9), flat)
  adds = ra.solarize_add(tf.constant(image), 110).numpy()
  np.testing.assert_array_equal(
      adds, np.where(image < 128, np.minimum(x + 110, 255), x).astype(np.uint8))


def test_geometric_operations():
  image = _image(10, 10)
  rotated = ra.rotate(tf.constant(image), tf.constant(90.0)).numpy()
  np.testing.assert_array_equal(rotated, np.rot90(image))  # counter-clockwise
  moved = ra.translate_x(tf.constant(image), tf.constant(3.0)).numpy()
  np.testing.assert_array_equal(moved[:, :7], image[:, 3:])
  assert np.all(moved[:, 7:] == ra.FILL_VALUE)
  moved = ra.translate_y(tf.constant(image), tf.constant(-2.0)).numpy()
  np.testing.assert_array_equal(moved[2:], image[:-2])
  sheared = ra.shear_x(tf.constant(image), tf.constant(0.5)).numpy()
  np.testing.assert_array_equal(sheared[0], image[0])  # row 0 does not move
  np.testing.assert_array_equal(sheared[4, :8], image[4, 2:])


def test_cutout_greys_a_square_around_a_random_pixel():
  image = np.zeros((40, 40, 3), np.uint8)
  areas = []
  for s in range(12):
    out = ra.cutout(tf.constant(image), 5, tf.constant([s, 1], tf.int64)).numpy()
    grey = out[..., 0] == ra.FILL_VALUE
    rows, cols = np.nonzero(grey.any(1))[0], np.nonzero(grey.any(0))[0]
    assert len(rows) <= 10 and len(cols) <= 10
    assert grey.sum() == len(rows) * len(cols)  # one rectangle
    areas.append(grey.sum())
  assert max(areas) == 100 and len(set(areas)) > 1  # clipped at borders sometimes


def test_randaugment_is_seeded_and_uses_many_operations():
  image = tf.constant(_image(32, 32, low=40, high=200))  # so every operation acts
  outputs = [ra.randaugment(image, 1, 10, tf.constant([s, 0], tf.int64), 14.0, 6.0)
             .numpy() for s in range(40)]
  assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outputs)
  np.testing.assert_array_equal(
      outputs[0], ra.randaugment(image, 1, 10, tf.constant([0, 0], tf.int64), 14.0, 6.0))
  distinct = {o.tobytes() for o in outputs}
  assert len(distinct) > 15
  assert not any(np.array_equal(o, image.numpy()) for o in outputs)
