"""Tests of fastMRI's SSIM: scikit-image, AlgoPerf golden values, closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skimage_data
from skimage.metrics import structural_similarity as skimage_ssim

from workloads.fastmri import metrics

# The options under which scikit-image computes AlgoPerf's SSIM (all are its
# defaults for 2-D images except data_range, which it needs for floats).
SKIMAGE_OPTIONS = dict(win_size=7, gaussian_weights=False,
                       use_sample_covariance=True, K1=0.01, K2=0.03)


def _camera(size: int = 128) -> np.ndarray:
  image = skimage_data.camera().astype(np.float64) / 255
  step = image.shape[0] // size
  return image[::step, ::step][:size, :size]


def _degraded(image: np.ndarray) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  blurred = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1)) / 3
  return {
      "noise": np.clip(image + 0.1 * rng.normal(size=image.shape), 0, 1),
      "blur": blurred,
      "shift": np.roll(image, 3, axis=1),
      "inverted": 1 - image,
      "dimmed": 0.5 * image + 0.1,
  }


@pytest.mark.parametrize("kind", ["noise", "blur", "shift", "inverted", "dimmed"])
def test_equals_skimage_on_known_images(kind):
  image = _camera()
  other = _degraded(image)[kind]
  expected = skimage_ssim(other, image, data_range=1.0, **SKIMAGE_OPTIONS)
  ours = metrics.structural_similarity(
      jnp.asarray(other, jnp.float32), jnp.asarray(image, jnp.float32), 1.0)
  np.testing.assert_allclose(float(ours), expected, atol=2e-5)


def test_equals_skimage_on_denormalised_slices_with_volume_max():
  # What evaluation sees: normalised images, their statistics, the volume max.
  image = _camera(64) * 3e-4
  noisy = _degraded(image / 3e-4)["noise"] * 3e-4
  mean, std = image.mean(), image.std()
  ours = metrics.ssim(
      jnp.asarray([(noisy - mean) / std], jnp.float32),
      jnp.asarray([(image - mean) / std], jnp.float32),
      jnp.asarray([mean], jnp.float32), jnp.asarray([std], jnp.float32),
      jnp.asarray([4e-4], jnp.float32))
  expected = skimage_ssim(noisy, image, data_range=4e-4, **SKIMAGE_OPTIONS)
  np.testing.assert_allclose(float(ours[0]), expected, atol=2e-5)


def test_matches_algoperf_golden_values():
  # AlgoPerf's fastmri_jax ssim.ssim on these arrays (max |diff| 2.4e-7); the
  # third slice is padding-like (mean, std and volume max 0).
  rng = np.random.default_rng(42)
  targets = rng.normal(size=(4, 24, 20)).astype(np.float32)
  outputs = (0.8 * targets + 0.4 * rng.normal(size=targets.shape)).astype(np.float32)
  mean = jnp.asarray([1e-4, 2e-4, 0.0, 5e-5])
  std = jnp.asarray([3e-5, 1e-4, 0.0, 2e-5])
  volume_max = jnp.asarray([4e-4, 9e-4, 0.0, 2e-4])
  values = metrics.ssim(jnp.asarray(outputs), jnp.asarray(targets), mean, std,
                        volume_max)
  np.testing.assert_allclose(
      values, [0.8930671, 0.8887501, 1.0, 0.8969560], atol=1e-6)


def test_identical_images_score_one():
  image = jnp.asarray(_camera(32), jnp.float32)
  np.testing.assert_allclose(metrics.structural_similarity(image, image), 1.0,
                             atol=1e-6)


@pytest.mark.parametrize("a,b,data_range", [(0.2, 0.5, 1.0), (3.0, 1.0, 4.0)])
def test_constant_images_follow_the_luminance_term(a, b, data_range):
  # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2.
  c1 = (0.01 * data_range) ** 2
  expected = (2 * a * b + c1) / (a * a + b * b + c1)
  ours = metrics.structural_similarity(
      jnp.full((16, 16), a), jnp.full((16, 16), b), data_range)
  # float32 E[x^2] - E[x]^2 leaves ~3e-6 of variance next to C2 = (0.03 L)^2.
  np.testing.assert_allclose(float(ours), expected, rtol=5e-4)


def _loop_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
  """SSIM written out: every 7x7 window of the mirrored images, border dropped."""
  pa, pb = np.pad(a, 3, mode="symmetric"), np.pad(b, 3, mode="symmetric")
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  values = []
  for i in range(3, a.shape[0] - 3):  # window centres off the 3-pixel border
    for j in range(3, a.shape[1] - 3):
      wa, wb = pa[i:i + 7, j:j + 7].ravel(), pb[i:i + 7, j:j + 7].ravel()
      cov = np.cov(wa, wb)  # sample (co)variances, n - 1
      values.append((2 * wa.mean() * wb.mean() + c1) * (2 * cov[0, 1] + c2)
                    / ((wa.mean() ** 2 + wb.mean() ** 2 + c1)
                       * (cov[0, 0] + cov[1, 1] + c2)))
  return float(np.mean(values))


def test_equals_explicit_windows_with_mirrored_edges_and_dropped_border():
  rng = np.random.default_rng(3)
  a = rng.uniform(size=(12, 15))
  b = a + 0.3 * rng.normal(size=a.shape)
  b[0, :] += 2.0  # edits on the edge reach the kept windows through the mirror
  ours = metrics.structural_similarity(
      jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 2.0)
  np.testing.assert_allclose(float(ours), _loop_ssim(a, b, 2.0), atol=2e-6)


def test_batched_and_per_image_data_range():
  rng = np.random.default_rng(1)
  a = rng.uniform(size=(3, 20, 20)).astype(np.float32)
  b = (a + 0.1 * rng.normal(size=a.shape)).astype(np.float32)
  ranges = np.array([1.0, 2.0, 0.5], np.float32)
  batched = metrics.structural_similarity(jnp.asarray(a), jnp.asarray(b),
                                          jnp.asarray(ranges))
  for i in range(3):
    one = metrics.structural_similarity(jnp.asarray(a[i]), jnp.asarray(b[i]),
                                        float(ranges[i]))
    np.testing.assert_allclose(batched[i], one, rtol=1e-6)


def test_eval_statistics_sum_real_slices_and_finalize_divides_once():
  rng = np.random.default_rng(2)
  targets = rng.normal(size=(5, 16, 16)).astype(np.float32)
  outputs = targets + rng.normal(size=targets.shape).astype(np.float32)
  batch = {"targets": targets, "mean": np.zeros(5, np.float32),
           "std": np.ones(5, np.float32), "volume_max": np.full(5, 4.0, np.float32)}
  valid = np.array([1, 1, 1, 0, 0], np.float32)
  stats = jax.jit(metrics.eval_statistics)(outputs, batch, valid)
  per_slice = metrics.ssim(outputs, targets, batch["mean"], batch["std"],
                           batch["volume_max"])
  l1 = np.abs(outputs - targets).mean((1, 2))
  # Two batches' sums, finalized together: a mean over slices, not batches.
  totals = {k: float(v) * 2 for k, v in stats.items()}
  result = metrics.finalize(totals)
  np.testing.assert_allclose(result["ssim"], float(per_slice[:3].mean()), rtol=1e-5)
  np.testing.assert_allclose(result["loss"], l1[:3].mean(), rtol=1e-5)
  assert totals["num_examples"] == 6


def test_rejects_even_window_and_mismatched_shapes():
  with pytest.raises(ValueError, match="odd"):
    metrics.structural_similarity(jnp.ones((8, 8)), jnp.ones((8, 8)), window_size=6)
  with pytest.raises(ValueError, match="shapes"):
    metrics.structural_similarity(jnp.ones((8, 8)), jnp.ones((8, 9)))
