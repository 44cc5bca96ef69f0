"""The small ImageNet variants are learnable: tuned NadamW really reaches their targets.

Slow (a few minutes each on 2 cores): the evidence that imagenet_vit_small's
and imagenet_resnet_small's targets are honest. Step-based evals make it independent of the machine's
speed; the target was calibrated by scripts/calibrate_small.py.
"""

from __future__ import annotations

import jax
import pytest

from algoperf_avg import registry
from algoperf_avg.training import runner


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_vit", "imagenet_resnet"])
def test_nadamw_reaches_the_small_target_within_the_step_hint(name):
  workload = registry.get_workload(name, "small")
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(
      max_global_steps=workload.step_hint, budget_multiplier=20.0,
      save_checkpoints=False))
  assert result.reached_target, result.eval_rows[-1]
  assert result.steps_to_target <= workload.step_hint
  row = next(r for r in result.eval_rows if r["global_step"] == result.steps_to_target)
  assert row["validation/accuracy"] >= workload.validation_target_value

  # Planted structure, not noise: an untrained model is at chance (10 classes).
  params, state = workload.init_model_fn(jax.random.key(0))
  untrained = workload.eval_model(workload.eval_batch_size, params, state,
                                  jax.random.key(1), None, splits=("validation",))
  assert untrained["validation/accuracy"] < 0.2
