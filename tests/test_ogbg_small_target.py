"""The small OGBG variant is learnable: tuned NadamW really reaches its target.

The one long test of the suite (about a minute and a half on 2 cores): it is
the evidence that the small variant's target is honest. Step-based evals and
a generous time budget make it independent of the machine's speed; the
target itself was calibrated by scripts/calibrate_small.py.
"""

from __future__ import annotations

import jax
import pytest

from algoperf_avg import registry
from algoperf_avg.training import runner


@pytest.mark.slow  # about 2 minutes on 2 cores
def test_nadamw_reaches_the_small_target_within_the_step_hint():
  workload = registry.get_workload("ogbg", "small")
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(
      eval_every_steps=200, max_global_steps=workload.step_hint,
      budget_multiplier=20.0, save_checkpoints=False))
  assert result.reached_target, result.eval_rows[-1]
  assert result.steps_to_target < workload.step_hint
  row = next(r for r in result.eval_rows if r["global_step"] == result.steps_to_target)
  assert row["validation/mean_average_precision"] > workload.validation_target_value

  # Planted structure, not noise: an untrained model is far below the target.
  params, state = workload.init_model_fn(jax.random.key(0))
  untrained = workload.eval_model(workload.eval_batch_size, params, state,
                                  jax.random.key(1), None, splits=("validation",))
  assert untrained["validation/mean_average_precision"] < 0.5
