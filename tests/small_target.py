"""The shared part of the small variants' target tests (test_*_small_target*.py).

Each of those trains its workload's small size with the reference NadamW for
step_hint steps (step-based evals, so the machine's speed does not matter)
and then checks, in its own way, that an untrained model is far from the
target: the evidence that the calibrated target is reachable and learned.
"""

from __future__ import annotations

from algoperf_avg import registry, spec
from algoperf_avg.training import runner


def reference_reaches_target(name: str, **options) -> spec.Workload:
  """Trains ``name``'s small size and asserts the target is first met within step_hint.

  ``options`` go to `runner.RunOptions` (after ``max_global_steps=step_hint``
  and ``save_checkpoints=False``). Returns the workload.
  """
  workload = registry.get_workload(name, "small")
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(
      max_global_steps=workload.step_hint, save_checkpoints=False, **options))
  assert result.reached_target, result.eval_rows[-1]
  assert result.steps_to_target <= workload.step_hint
  row = next(r for r in result.eval_rows if r["global_step"] == result.steps_to_target)
  assert workload.targets.reached(row[f"validation/{workload.target_metric_name}"]), row
  return workload
