"""Post-hoc power-EMA synthesis: the least-squares fit of Karras et al. (2024, App. C).

A power EMA of exponent gamma (`averaging.power_ema`, a record every step from
step 1) holds, at step t, the weights of step j (1 <= j <= t) with weight

    p_{gamma,t}(j) = (j / t)^(gamma+1) - ((j - 1) / t)^(gamma+1),

exactly (the decays telescope): its profile as a function of time. Given
snapshots of such EMAs (two exponents, every S steps), the EMA of any other
exponent at step t is approximated by the combination ``sum_i x_i snapshot_i``
whose profile is closest in L2 to the requested one: with ``P`` the stored
profiles (one row per snapshot taken at or before t) and ``p`` the requested
one, solve ``(P P^T) x = P p`` (the Gram matrix of the stored profiles; least
squares, as it is singular when two snapshots coincide). Karras et al. use the
continuous profiles ``tau^gamma`` and their closed-form inner products; here
the profiles are the exact discrete ones on the step grid, so a stored profile
is reproduced exactly and the fit's error is that of the method, not of the
continuum approximation. The fit's relative error ``||P^T x - p|| / ||p||`` is
reported per profile and eval step.

Cost: O(K t) memory and time per fit for K snapshots (float64), fine for
steps x snapshots up to ~10^8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def profile(gamma: float, step: int, length: int) -> np.ndarray:
  """Weights of steps 1..length in the power EMA of ``gamma`` at ``step`` (zero after)."""
  if step < 1 or step > length:
    raise ValueError(f"step must be in [1, {length}], got {step}")
  j = np.arange(1, step + 1, dtype=np.float64)
  weights = np.zeros(length, np.float64)
  weights[:step] = (j / step) ** (gamma + 1.0) - ((j - 1.0) / step) ** (gamma + 1.0)
  return weights


def solve(stored: Sequence[tuple[int, float]], step: int, gamma: float
          ) -> tuple[np.ndarray, float]:
  """Coefficients of ``stored`` snapshots ``(step_i, gamma_i)`` for gamma at ``step``.

  Every stored step must be <= ``step``. Returns ``(x, relative_error)``.
  """
  if not stored:
    raise ValueError("no stored snapshots to fit")
  if any(s > step for s, _ in stored):
    raise ValueError(f"snapshots after step {step} cannot enter its average")
  profiles = np.stack([profile(g, s, step) for s, g in stored])  # K x step
  target = profile(gamma, step, step)
  gram = profiles @ profiles.T
  coefficients = np.linalg.lstsq(gram, profiles @ target, rcond=None)[0]
  residual = profiles.T @ coefficients - target
  return coefficients, float(np.linalg.norm(residual) / np.linalg.norm(target))
