"""One k-space slice -> one normalised (input, target) pair, as AlgoPerf does it.

AlgoPerf's pipeline (after the fastMRI reference) undersamples each slice's
k-space with a random column mask (4x acceleration, a fully sampled centre of
8% of the columns), reconstructs a zero-filled image by a centred orthonormal
inverse FFT, crops it to the target's size, takes its magnitude, normalises it
by its own mean and standard deviation and clips it to +-6; the target is
normalised with the input's statistics and clipped the same way.

AlgoPerf draws the mask with ``tf.random.stateless_uniform`` (Philox on CPU).
`stateless_uniform` and `stateless_fold_in` below are exact numpy ports of
those TensorFlow functions (checked against TensorFlow in the tests), so the
masks are bit-identical to AlgoPerf's without importing TensorFlow: every
eval slice uses seed ``(0, 0)``, and training slice ``i`` the seed
``stateless_fold_in(base, i)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

CENTER_FRACTION = 0.08
ACCELERATION = 4
CLIP = 6.0
EVAL_MASK_SEED = (0, 0)  # AlgoPerf: tf.cast(jax.random.PRNGKey(0), tf.int64)

Seed = Sequence[int]  # two int64 values, as TensorFlow's stateless seeds

_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))
# TensorFlow scrambles a user seed into a Philox key and counter with this key.
_SEED_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)


def _philox(counter: np.ndarray, key: Sequence[int]) -> np.ndarray:
  """Philox-4x32-10 of ``counter`` (4, n) uint32 under ``key``; (4, n) uint32."""
  c0, c1, c2, c3 = (np.asarray(word, np.uint64) for word in counter)
  k0, k1 = np.uint64(key[0]), np.uint64(key[1])
  for _ in range(10):
    product0, product1 = _PHILOX_M[0] * c0, _PHILOX_M[1] * c2
    c0, c1, c2, c3 = (
        (product1 >> np.uint64(32)) ^ c1 ^ k0,
        product1 & _MASK32,
        (product0 >> np.uint64(32)) ^ c3 ^ k1,
        product0 & _MASK32,
    )
    k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
  return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def _random_bits(seed: Seed, n: int) -> np.ndarray:
  """The first ``n`` uint32 of TensorFlow's Philox stream for ``seed``."""
  s0, s1 = (int(s) % 2**64 for s in seed)
  words = [s0 & 0xFFFFFFFF, s0 >> 32, s1 & 0xFFFFFFFF, s1 >> 32]
  mix = _philox(np.array(words, np.uint32)[:, None], _SEED_SCRAMBLE_KEY)[:, 0]
  key = (int(mix[0]), int(mix[1]))
  # Counter (0, 0, mix[2], mix[3]) + block index as one 128-bit integer; its
  # low word cannot overflow for the sizes here (< 2**32 blocks).
  blocks = np.arange((n + 3) // 4, dtype=np.uint64)
  counter = np.stack([
      blocks & _MASK32,
      blocks >> np.uint64(32),
      np.full_like(blocks, mix[2]),
      np.full_like(blocks, mix[3]),
  ])
  return _philox(counter, key).T.reshape(-1)[:n]


def stateless_uniform(num: int, seed: Seed) -> np.ndarray:
  """``tf.random.stateless_uniform((num,), seed)`` (float32 in [0, 1), on CPU)."""
  bits = _random_bits(seed, num)
  # 23 random mantissa bits under the exponent of 1.0, minus 1, as TensorFlow.
  floats = ((bits & np.uint32(0x7FFFFF)) | np.uint32(127 << 23)).view(np.float32)
  return floats - np.float32(1.0)


def stateless_fold_in(seed: Seed, data: int) -> tuple[int, int]:
  """``tf.random.experimental.stateless_fold_in(seed, data)`` for int64 data.

  TensorFlow's result is ``(r, data)`` with ``r`` one random int64 drawn from
  ``seed`` alone, so ``r`` is computed once per seed.
  """
  return _fold_in_word(tuple(int(s) for s in seed)), int(data)


@functools.lru_cache(maxsize=64)
def _fold_in_word(seed: tuple[int, int]) -> int:
  low, high = (int(b) for b in _random_bits(seed, 2))
  value = low | (high << 32)
  return value - 2**64 if value >= 2**63 else value


def column_mask(
    num_columns: int,
    seed: Seed,
    center_fraction: float = CENTER_FRACTION,
    acceleration: float = ACCELERATION,
) -> np.ndarray:
  """AlgoPerf's random column mask ``(num_columns,)`` bool.

  ``int(num_columns * center_fraction)`` central columns are always kept;
  every other column is kept with the probability that makes the expected
  total ``num_columns / acceleration``. The arithmetic is float32 as in
  AlgoPerf (it decides the centre's width, e.g. 29 of 368 columns).
  """
  columns = np.float32(num_columns)
  num_low = int(columns * np.float32(center_fraction))
  start = (num_columns - num_low + 1) // 2
  center = np.zeros(num_columns, bool)
  center[start : start + num_low] = True
  prob = (columns / np.float32(acceleration) - np.float32(num_low)) / (
      columns - np.float32(num_low)
  )
  return center | (stateless_uniform(num_columns, seed) < prob)


def zero_filled_image(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Complex image of masked, centred k-space ``(rows, cols)`` (orthonormal)."""
  masked = kspace * mask[None, :].astype(kspace.dtype)
  shifted = np.fft.ifftshift(masked, axes=(0, 1))
  return np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(0, 1))


def center_crop(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """The central ``shape`` of a 2-D array (offsets rounded down, as AlgoPerf)."""
  top = (image.shape[0] - shape[0]) // 2
  left = (image.shape[1] - shape[1]) // 2
  return image[top : top + shape[0], left : left + shape[1]]


def process_slice(
    kspace: np.ndarray, target: np.ndarray, volume_max: float, seed: Seed
) -> dict[str, np.ndarray]:
  """One training/eval example from a k-space slice and its reconstruction.

  Args:
    kspace: ``(rows, cols)`` complex k-space, centred (DC in the middle).
    target: ``(height, width)`` the slice's ``reconstruction_esc``.
    volume_max: the file's ``max`` attribute (0 when absent).
    seed: the mask seed (`EVAL_MASK_SEED` for eval slices).

  Returns:
    ``inputs`` and ``targets`` ``(height, width)`` float32, normalised and
    clipped; ``mean``, ``std`` (the input's statistics, to de-normalise) and
    ``volume_max``, float32 scalars.
  """
  kspace = np.asarray(kspace, np.complex64)
  image = zero_filled_image(kspace, column_mask(kspace.shape[1], seed))
  magnitude = np.abs(center_crop(image, target.shape)).astype(np.float32)
  mean = magnitude.mean(dtype=np.float32)
  std = magnitude.std(dtype=np.float32)
  inputs = np.clip((magnitude - mean) / std, -CLIP, CLIP)
  targets = np.clip((np.asarray(target, np.float32) - mean) / std, -CLIP, CLIP)
  return {
      "inputs": inputs.astype(np.float32),
      "targets": targets.astype(np.float32),
      "mean": np.float32(mean),
      "std": np.float32(std),
      "volume_max": np.float32(volume_max),
  }
