"""The small WMT variant is learnable: reference NadamW reaches its BLEU target.

Slow (a few minutes on 2 cores: 800 steps and step-based beam-search evals);
the evidence that the calibrated target (scripts/calibrate_small.py,
results/calibration/wmt_small*.csv) is honest. Step-based evals and a
generous time budget make it independent of the machine's speed.
"""

from __future__ import annotations

import jax
import pytest

from tests import small_target


@pytest.mark.slow
def test_nadamw_reaches_the_small_bleu_target_within_the_step_hint():
  workload = small_target.reference_reaches_target("wmt", budget_multiplier=20.0)

  # Planted structure, not noise: an untrained model translates nothing.
  params, state = workload.init_model_fn(jax.random.key(0))
  untrained = workload.eval_model(workload.eval_batch_size, params, state,
                                  jax.random.key(1), None, splits=("validation",),
                                  metrics="target")
  assert untrained["validation/bleu"] < 5
