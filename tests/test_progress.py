"""The progress line: time budgets in seconds, small sizes' budgets in steps."""

from __future__ import annotations

import io
import math

from algoperf_avg.training.progress import ProgressBar
from algoperf_avg.training.runner import Progress


def _line(progress: Progress) -> str:
  out = io.StringIO()
  bar = ProgressBar("nadamw", stream=out, width=10)
  bar.update(progress)
  return out.getvalue().strip()


def test_a_step_budget_is_shown_in_steps():
  line = _line(Progress(1_800, 42.0, math.inf, 0.91234, "mean_average_precision",
                        step_budget=3_600))
  assert "[#####.....]" in line and "3,600 steps" in line and "inf" not in line
  assert "42.0s" in line and "0.9123" in line


def test_a_time_budget_is_shown_in_seconds():
  line = _line(Progress(10, 30.0, 120.0, None, "loss"))
  assert "[##........]" in line and "30.0/120s" in line and "steps" not in line
