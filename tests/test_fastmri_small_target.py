"""The small fastMRI variant is learnable: reference NadamW reaches its target.

Trains fastmri-small with the reference NadamW for its step budget (a few
minutes on 2 cores), with step-based evals, so the result does not depend on
the machine's speed. The target was calibrated by scripts/calibrate_small.py
(results/calibration/fastmri_small*.csv).
"""

from __future__ import annotations

import pytest

from tests import small_target
from workloads.fastmri import metrics


@pytest.mark.slow
def test_nadamw_reaches_the_small_target_within_the_step_hint():
  workload = small_target.reference_reaches_target("fastmri")

  # Learned, not given: the zero-filled input itself is far below the target.
  totals = {}
  for batch in workload.eval_batches("validation", None, workload.eval_batch_size):
    stats = metrics.eval_statistics(batch["inputs"], batch, batch["weights"])
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in stats.items()}
  assert metrics.finalize(totals)["ssim"] < workload.validation_target_value - 0.1
