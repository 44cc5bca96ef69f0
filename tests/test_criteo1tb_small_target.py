"""The small criteo1tb is learnable: reference NadamW reaches its loss target.

Slow (about a minute on 2 cores, more under load): the evidence that the
target is reachable (scripts/calibrate_small.py,
results/calibration/criteo1tb_small*.csv, where a constant LR does not reach
it). Step-based evals make it independent of the machine's speed.
"""

from __future__ import annotations

import jax
import pytest

from tests import small_target


@pytest.mark.slow
def test_nadamw_reaches_the_small_target_within_the_step_hint():
  workload = small_target.reference_reaches_target("criteo1tb", budget_multiplier=20.0)

  # Planted structure, not noise: an untrained model is far above the target.
  params, state = workload.init_model_fn(jax.random.key(0))
  untrained = workload.eval_model(workload.eval_batch_size, params, state,
                                  jax.random.key(1), None, splits=("validation",))
  assert untrained["validation/loss"] > workload.validation_target_value + 0.02
