"""SSIM of fastMRI reconstructions, as AlgoPerf computes it (in JAX, jittable).

Per slice: both images are de-normalised (``x * std + mean``) and compared by
the mean structural similarity of Wang et al. (2004) with a 7x7 uniform
window (symmetric padding at the edges), K1 = 0.01, K2 = 0.03, sample
covariance (``n / (n - 1)``), the data range set to the volume's maximum (the
h5 ``max`` attribute), and the 3-pixel border dropped before averaging. The
slice's value is clipped to [-1, 1]. A split's SSIM is the mean over its
slices, so batches contribute sums (`eval_statistics`) that `finalize`
divides once by the number of real slices.

This equals ``skimage.metrics.structural_similarity(a, b,
data_range=volume_max, win_size=7, gaussian_weights=False,
use_sample_covariance=True, K1=0.01, K2=0.03)`` on the de-normalised 2-D
images (scikit-image's defaults apart from ``data_range``; its uniform filter
pads in scipy's ``"reflect"`` mode, which is numpy's ``"symmetric"``), up to
float32 round-off and except where the clip bites.

References:
  Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 13 (2004).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

WINDOW_SIZE = 7
K1 = 0.01
K2 = 0.03


def _box_mean(images: jax.Array, size: int) -> jax.Array:
  """Mean over ``size x size`` windows of ``(..., H, W)``, edges mirrored.

  Same shape as ``images``; the padding repeats the edge pixel (numpy's
  ``"symmetric"``), as `scipy.ndimage.uniform_filter` does by default. Rows
  are filtered first, then columns, each pass divided by ``size``.
  """
  radius = size // 2
  batch_axes = [(0, 0)] * (images.ndim - 2)
  padded = jnp.pad(
      images, batch_axes + [(radius, radius), (radius, radius)], mode="symmetric"
  )
  ones = (1,) * (images.ndim - 2)
  add = jax.lax.add
  rows = jax.lax.reduce_window(
      padded, 0.0, add, ones + (1, size), ones + (1, 1), "VALID"
  ) / size
  return jax.lax.reduce_window(
      rows, 0.0, add, ones + (size, 1), ones + (1, 1), "VALID"
  ) / size


def structural_similarity(
    images_a: jax.Array,
    images_b: jax.Array,
    data_range: float | jax.Array = 1.0,
    window_size: int = WINDOW_SIZE,
    k1: float = K1,
    k2: float = K2,
) -> jax.Array:
  """Mean SSIM of each pair of images ``(..., H, W)``; shape ``(...)``.

  Args:
    images_a: images, float.
    images_b: images of the same shape.
    data_range: the images' dynamic range, a scalar or one per image
      (broadcast against the leading axes).
    window_size: side of the uniform window (odd); also sets the border,
      ``(window_size - 1) // 2`` pixels, left out of the mean.
    k1: stabiliser of the luminance term, ``C1 = (k1 * data_range)^2``.
    k2: stabiliser of the contrast-structure term, ``C2 = (k2 * data_range)^2``.
  """
  if window_size % 2 != 1:
    raise ValueError(f"window_size must be odd, got {window_size}")
  if images_a.shape != images_b.shape:
    raise ValueError(f"shapes differ: {images_a.shape} vs {images_b.shape}")
  num_points = window_size**2
  covariance_norm = num_points / (num_points - 1)  # unbiased (sample) estimate
  mean_a = _box_mean(images_a, window_size)
  mean_b = _box_mean(images_b, window_size)
  var_a = covariance_norm * (_box_mean(images_a * images_a, window_size) - mean_a**2)
  var_b = covariance_norm * (_box_mean(images_b * images_b, window_size) - mean_b**2)
  covariance = covariance_norm * (
      _box_mean(images_a * images_b, window_size) - mean_a * mean_b
  )
  data_range = jnp.asarray(data_range, images_a.dtype)[..., None, None]
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  ssim_map = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
      (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
  )
  border = (window_size - 1) // 2
  return jnp.mean(ssim_map[..., border:-border, border:-border], axis=(-2, -1))


def ssim(
    outputs: jax.Array,
    targets: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    volume_max: jax.Array,
) -> jax.Array:
  """Per-slice SSIM ``(N,)`` of normalised reconstructions, in [-1, 1].

  Args:
    outputs: ``(N, H, W)`` model outputs, in the normalised units of the inputs.
    targets: ``(N, H, W)`` normalised targets.
    mean: ``(N,)`` the input's mean used to normalise each slice.
    std: ``(N,)`` the input's standard deviation.
    volume_max: ``(N,)`` the maximum over the slice's volume (the data
      range); 0, as on padding slices, is read as 1 so the value stays finite.
  """
  volume_max = jnp.where(volume_max == 0, 1.0, volume_max)
  scale, shift = std[:, None, None], mean[:, None, None]
  values = structural_similarity(
      outputs * scale + shift, targets * scale + shift, volume_max
  )
  return jnp.clip(values, -1.0, 1.0)


def per_example_l1(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean absolute error of each slice ``(N,)`` (AlgoPerf's per-example loss)."""
  return jnp.mean(jnp.abs(outputs - targets), axis=tuple(range(1, outputs.ndim)))


def eval_statistics(
    outputs: jax.Array, batch: Mapping[str, jax.Array], valid: jax.Array
) -> dict[str, jax.Array]:
  """Summable statistics of one eval batch: SSIM and L1 sums, slice count.

  Args:
    outputs: ``(N, H, W)`` model outputs for ``batch``.
    batch: holds ``targets``, ``mean``, ``std`` and ``volume_max``.
    valid: ``(N,)`` 1 for real slices, 0 for padding.
  """
  valid = valid.astype(outputs.dtype)
  values = ssim(
      outputs, batch["targets"], batch["mean"], batch["std"], batch["volume_max"]
  )
  return {
      "ssim_sum": jnp.sum(values * valid),
      "loss_sum": jnp.sum(per_example_l1(outputs, batch["targets"]) * valid),
      "num_examples": jnp.sum(valid),
  }


def finalize(totals: Mapping[str, float]) -> dict[str, float]:
  """Split metrics from summed `eval_statistics`: mean SSIM and L1 per slice."""
  count = float(totals["num_examples"])
  return {
      "ssim": float(totals["ssim_sum"]) / count,
      "loss": float(totals["loss_sum"]) / count,
  }
