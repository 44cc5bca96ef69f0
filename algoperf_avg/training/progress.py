"""Terminal output of the CLI: a progress line per trial and a summary table."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from algoperf_avg.training import logs


class ProgressBar:
  """One self-overwriting line on a terminal; a line every few seconds in logs.

  Called after every step, so it throttles itself to a few updates a second.
  """

  def __init__(self, label: str, stream: TextIO | None = None, width: int = 20):
    self.label = label
    self.stream = stream or sys.stderr
    self.width = width
    self.interactive = self.stream.isatty()
    self.min_interval = 0.25 if self.interactive else 10.0
    self._last = 0.0
    self._text = ""

  def update(self, progress) -> None:
    """Redraw (throttled) from a `runner.Progress`."""
    now = time.monotonic()
    if now - self._last < self.min_interval:
      return
    self._last = now
    steps = getattr(progress, "step_budget", None)
    if steps:  # a step budget (small sizes): progress and budget in steps
      frac = min(progress.global_step / steps, 1.0)
      budget = f"{progress.submission_time:7.1f}s, {steps:,} steps"
    else:
      frac = min(progress.submission_time / max(progress.budget, 1e-9), 1.0)
      budget = f"{progress.submission_time:7.1f}/{progress.budget:.0f}s"
    filled = int(frac * self.width)
    metric = (
        f"{progress.latest_metric:.4f}" if progress.latest_metric is not None else "-"
    )
    self._text = (
        f"{self.label} | step {progress.global_step:>6} | "
        f"[{'#' * filled}{'.' * (self.width - filled)}] "
        f"{budget} | "
        f"val {progress.metric_name} {metric}"
    )
    if self.interactive:
      self.stream.write("\r" + self._text)
    else:
      self.stream.write(self._text + "\n")
    self.stream.flush()

  def close(self) -> None:
    """End the line."""
    if self.interactive and self._text:
      self.stream.write("\n")
      self.stream.flush()


def _best(rows: list[dict[str, Any]], key: str, direction: str) -> float | None:
  values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
  if not values:
    return None
  return max(values) if direction == "max" else min(values)


def _fmt(value: Any, spec: str = "") -> str:
  if value is None:
    return "-"
  return format(value, spec)


def format_summary(workload, named_results: list[tuple[str, Any]]) -> str:
  """A table: one row per (submission, `runner.TrialResult`).

  ``steps ratio`` is steps-to-target relative to the first row (< 1: sooner).
  """
  metric = workload.target_metric_name
  key = f"validation/{metric}"
  online_key = logs.ONLINE_PREFIX + metric
  width = max([len("submission")] + [len(name) for name, _ in named_results]) + 2
  header = (
      f"{'submission':<{width}}{'status':<10}{'steps':>7}{'time_s':>9}  "
      f"{'steps_to_target':>15}{'time_to_target_s':>17}{'steps ratio':>12}"
      f"{'best val':>10}{'best online':>12}"
  )
  lines = [
      f"{workload.workload_id}: target validation/{metric} "
      f"{'>' if workload.target_direction == 'max' else '<'} {workload.validation_target_value:g}"
      + (f" within {budget:,} steps" if (budget := workload.targets.step_budget)
         else f" within {workload.max_allowed_runtime_sec:g}s"),
      header,
      "-" * len(header),
  ]
  reference = named_results[0][1].steps_to_target if named_results else None
  for name, r in named_results:
    ratio = (
        r.steps_to_target / reference if r.steps_to_target and reference else None
    )
    lines.append(
        f"{name:<{width}}{r.status:<10}{r.global_step:>7}{r.accumulated_submission_time:>9.1f}  "
        f"{_fmt(r.steps_to_target, 'd') if r.reached_target else 'missed':>15}"
        f"{_fmt(r.time_to_target, '.1f'):>17}{_fmt(ratio, '.3f'):>12}"
        f"{_fmt(_best(r.eval_rows, key, workload.target_direction), '.4f'):>10}"
        f"{_fmt(_best(r.eval_rows, online_key, workload.target_direction), '.4f'):>12}"
    )
  return "\n".join(lines)
