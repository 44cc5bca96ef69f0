"""Tests of fastMRI preprocessing: TensorFlow's stateless RNG, mask, FFT, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.fastmri import preprocessing

# AlgoPerf's eval mask of a 368-column knee slice: seed (0, 0), the fixed
# centre of int(368 * 0.08) = 29 columns (170-198) and 68 random ones.
EVAL_MASK_368 = [
    10, 11, 19, 20, 25, 28, 30, 32, 38, 49, 53, 55, 63, 66, 69, 76, 82, 86, 91,
    105, 113, 118, 122, 125, 135, 140, 153, 156, 162, 164, *range(170, 199),
    202, 203, 208, 219, 226, 228, 232, 233, 237, 242, 245, 249, 250, 253, 266,
    274, 283, 286, 294, 296, 301, 302, 305, 309, 312, 320, 321, 322, 326, 330,
    333, 346, 351, 352, 358, 361, 363, 366,
]


def _kspace_of(image: np.ndarray) -> np.ndarray:
  shifted = np.fft.ifftshift(image, axes=(0, 1))
  return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(0, 1))


def test_random_numbers_equal_tensorflow():
  tf = pytest.importorskip("tensorflow")
  for seed in [(0, 0), (1, 2), (123456789012, -5), (2**40 + 7, 3)]:
    for n in [1, 5, 72, 368]:
      expected = tf.random.stateless_uniform((n,), tf.constant(seed, tf.int64))
      np.testing.assert_array_equal(
          preprocessing.stateless_uniform(n, seed), expected.numpy())
    for data in [0, 1, 12345]:
      expected = tf.random.experimental.stateless_fold_in(
          tf.constant(seed, tf.int64), tf.constant(data, tf.int64))
      assert preprocessing.stateless_fold_in(seed, data) == tuple(expected.numpy())


def test_eval_mask_is_algoperfs():
  mask = preprocessing.column_mask(368, preprocessing.EVAL_MASK_SEED)
  assert np.flatnonzero(mask).tolist() == EVAL_MASK_368


@pytest.mark.parametrize("columns", [368, 372, 72, 25])
def test_mask_keeps_the_centre_and_a_quarter_on_average(columns):
  num_low = int(np.float32(columns) * np.float32(0.08))  # 25 -> 1 in float32
  start = (columns - num_low + 1) // 2
  fractions = []
  for seed in range(200):
    mask = preprocessing.column_mask(columns, (seed, 1))
    assert mask[start:start + num_low].all()
    fractions.append(mask.mean())
  assert abs(np.mean(fractions) - 0.25) < 0.02


def test_masks_differ_between_seeds_and_repeat_for_one_seed():
  a = preprocessing.column_mask(368, (3, 4))
  assert not np.array_equal(a, preprocessing.column_mask(368, (3, 5)))
  np.testing.assert_array_equal(a, preprocessing.column_mask(368, (3, 4)))


def test_full_mask_inverse_fft_returns_the_image():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(16, 12)) + 1j * rng.normal(size=(16, 12))
  recovered = preprocessing.zero_filled_image(_kspace_of(image), np.ones(12, bool))
  np.testing.assert_allclose(recovered, image, atol=1e-12)


def test_center_crop_rounds_offsets_down():
  image = np.arange(7 * 6).reshape(7, 6)
  np.testing.assert_array_equal(
      preprocessing.center_crop(image, (4, 3)), image[1:5, 1:4])


def test_process_slice_matches_algoperf_golden_values():
  # AlgoPerf's _process_example (TensorFlow) on the same arrays and seed.
  rng = np.random.default_rng(7)
  kspace = ((rng.normal(size=(64, 40)) + 1j * rng.normal(size=(64, 40))) * 1e-4)
  target = np.abs(rng.normal(size=(32, 32))) * 1e-4
  example = preprocessing.process_slice(
      kspace.astype(np.complex64), target.astype(np.float32), 3e-4, (5, 9))
  np.testing.assert_allclose(example["mean"], 5.754014e-05, rtol=1e-6)
  np.testing.assert_allclose(example["std"], 3.0830208e-05, rtol=1e-6)
  np.testing.assert_allclose(
      example["inputs"][0, :4], [0.35454515, -0.74772114, -0.65520692, -0.93747473],
      atol=2e-6)
  np.testing.assert_allclose(
      example["targets"][0, :4], [-1.54218495, 4.94616413, 2.61368918, 1.68545985],
      atol=2e-6)
  assert example["volume_max"] == np.float32(3e-4)


def test_process_slice_normalises_by_the_input_and_clips():
  rng = np.random.default_rng(1)
  image = np.zeros((48, 40), complex)
  image[8:40, 8:32] = rng.uniform(1, 2, (32, 24)) * np.exp(1j * rng.uniform(0, 6, (32, 24)))
  target = np.abs(preprocessing.center_crop(image, (32, 32))).astype(np.float32)
  target[0, 0] = 100.0  # far outside the input's range: clipped to +6
  example = preprocessing.process_slice(
      _kspace_of(image).astype(np.complex64), target, 2.0, (0, 0))
  for key in ("inputs", "targets"):
    assert example[key].shape == (32, 32) and example[key].dtype == np.float32
    assert np.abs(example[key]).max() <= 6.0
  assert example["targets"][0, 0] == 6.0
  # De-normalising the target with the input's statistics gives it back.
  denormalised = example["targets"] * example["std"] + example["mean"]
  np.testing.assert_allclose(denormalised[1:], target[1:], rtol=1e-5, atol=1e-5)
  assert (np.abs(example["inputs"]) < 6).all()  # nothing clipped: exact stats
  np.testing.assert_allclose(example["inputs"].mean(), 0, atol=1e-5)
  np.testing.assert_allclose(example["inputs"].std(), 1, atol=1e-5)


def test_undersampling_degrades_the_input():
  rng = np.random.default_rng(2)
  image = np.zeros((40, 40))
  image[10:30, 12:28] = 1 + rng.uniform(size=(20, 16))
  target = image.astype(np.float32)
  example = preprocessing.process_slice(
      _kspace_of(image).astype(np.complex64), target, 2.0, (0, 0))
  error = np.abs(example["inputs"] - example["targets"]).mean()
  assert error > 0.05  # aliasing and blur from keeping ~1/4 of the columns
