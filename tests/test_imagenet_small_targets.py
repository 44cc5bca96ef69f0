"""The small ImageNet variants are learnable: tuned NadamW really reaches their targets.

Slow (a few minutes each on 2 cores): the evidence that imagenet_vit_small's
and imagenet_resnet_small's targets are honest. Step-based evals make it independent of the machine's
speed; the target was calibrated by scripts/calibrate_small.py.
"""

from __future__ import annotations

import jax
import pytest

from tests import small_target


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_vit", "imagenet_resnet"])
def test_nadamw_reaches_the_small_target_within_the_step_hint(name):
  workload = small_target.reference_reaches_target(name, budget_multiplier=20.0)

  # Planted structure, not noise: an untrained model is at chance (10 classes).
  params, state = workload.init_model_fn(jax.random.key(0))
  untrained = workload.eval_model(workload.eval_batch_size, params, state,
                                  jax.random.key(1), None, splits=("validation",))
  assert untrained["validation/accuracy"] < 0.2
