"""Scrambled Halton sequences: low-discrepancy points for hyperparameter search.

`tuning.sample_trials` reads search-space coordinates from these points
(AlgoPerf samples its search spaces with a Halton sequence too).
"""

from __future__ import annotations

import numpy as np

_HALTON_STREAM = 0  # seed stream; tuning's study assignment uses stream 1


def _first_primes(count: int) -> list[int]:
  primes: list[int] = []
  candidate = 2
  while len(primes) < count:
    if all(candidate % p for p in primes if p * p <= candidate):
      primes.append(candidate)
    candidate += 1
  return primes


def halton_sequence(num_points: int, num_dims: int, seed: int) -> np.ndarray:
  """Scrambled and shifted Halton points, shape ``[num_points, num_dims]``.

  Dimension ``d`` is a van der Corput sequence in the d-th prime base, its
  digits permuted at random per digit position (0 kept fixed, so expansions
  stay finite), then shifted by a random offset mod 1. Both keep Halton's
  stratification (the first ``b**k`` points of base ``b`` fall one per cell of
  width ``b**-k``, for every prefix) and break the strong correlation between
  high-base dimensions of the plain sequence. Values are float64 in [0, 1);
  the same ``seed`` (a non-negative int) gives the same points.
  """
  points = np.zeros((num_points, num_dims))
  indices = np.arange(num_points)
  for dim, base in enumerate(_first_primes(num_dims)):
    # One seed stream per (dim, digit), so the first n points do not depend on
    # how many are drawn: a study extended from 5 to 10 trials keeps its 5.
    remaining = indices.copy()
    scale = 1.0
    digit = 0
    while digit == 0 or base**digit < num_points:
      digit_rng = np.random.default_rng([seed, _HALTON_STREAM, dim, digit + 1])
      permutation = np.concatenate([[0], 1 + digit_rng.permutation(base - 1)])
      scale /= base
      points[:, dim] += permutation[remaining % base] * scale
      remaining //= base
      digit += 1
    shift = np.random.default_rng([seed, _HALTON_STREAM, dim, 0]).random()
    points[:, dim] = np.mod(points[:, dim] + shift, 1.0)
  return points
