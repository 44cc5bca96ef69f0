"""Figures of a scored experiment, each PNG written next to the CSV behind it.

* ``profile.png``: performance profiles rho(tau), one line per submission,
  with its benchmark score in the legend. The lines join rho on AlgoPerf's
  100-point tau grid, so the area under each is exactly its score (x 3).
* ``curves_<workload>.png``: validation metric against time of one trial per
  submission (the fastest to reach the target; else the best value reached),
  the online weights (``validation_online/*``) dashed on the same axis when
  logged, and the target as a grey line.
* ``step_ratio_vs_<reference>.png``: steps to target of each submission
  divided by the reference's, per workload both reach (< 1 = fewer steps).

Figures are drawn on `matplotlib.figure.Figure` objects, which render with the
Agg backend without touching pyplot's global state.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from algoperf_avg import spec
from algoperf_avg import targets as targets_lib
from algoperf_avg.analysis import logreader, scoring


def plot_command(exp_dir: str, out_dir: str, ruleset: str | None = None,
                 version: str | None = None, held_out_rule: bool = False,
                 reference: str | None = None, steps: bool = False,
                 online: bool = False) -> list[str]:
  """``algoperf-avg plot``: write all figures of ``exp_dir`` into ``out_dir``.

  Args:
    exp_dir: as `scoring.score_command`.
    out_dir: created if needed.
    ruleset, version, held_out_rule, steps, online: as `scoring.score_command`.
    reference: submission for the step-ratio bars; None takes "baseline" when
      there is one and otherwise draws no bars.

  Returns:
    The paths written (PNG and CSV pairs).
  """
  ruleset = ruleset or logreader.infer_ruleset(exp_dir)
  version = version or logreader.infer_version(exp_dir) or scoring.LATEST
  experiment = logreader.read_experiment(exp_dir)
  board = scoring.score_experiment(experiment, ruleset, version, held_out_rule,
                                   steps, online)
  if reference is not None and reference not in board.submissions:
    raise spec.UsageError(
        f"reference {reference!r} is not among: {', '.join(board.submissions)}")
  if reference is None and "baseline" in board.submissions:
    reference = "baseline"
  os.makedirs(out_dir, exist_ok=True)
  written = plot_profiles(board, os.path.join(out_dir, "profile"),
                          title=f"{ruleset} tuning, {version} rules"
                          + (", by steps" if steps else ""))
  for workload in sorted({t.workload for t in experiment.trials}):
    written += plot_curves(experiment, board, workload,
                           os.path.join(out_dir, f"curves_{workload}"))
  if reference is not None and len(board.submissions) > 1:
    written += plot_step_ratios(board, reference,
                                os.path.join(out_dir, f"step_ratio_vs_{reference}"))
  return written


def plot_profiles(board: scoring.Scoreboard, stem: str, title: str = "") -> list[str]:
  """Performance profiles of ``board`` to ``stem``.png and ``stem``.csv."""
  ranked = sorted(board.submissions, key=lambda s: (-board.scores[s], s))
  rows = [[f"{tau:.6g}"] + [f"{board.rho[s][i]:.6g}" for s in ranked]
          for i, tau in enumerate(board.taus)]
  fig = Figure(figsize=(9, 5.5), layout="constrained")
  ax = fig.add_subplot()
  for i, s in enumerate(ranked):
    ax.plot(board.taus, board.rho[s], label=f"{s} ({board.scores[s]:.3f})",
            color=_color(i), linestyle=_dash(i), linewidth=2)
  ax.set_xlim(board.taus[0], board.taus[-1])
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("tau: time to target / best time to target")
  ax.set_ylabel(f"fraction of the {len(board.workloads)} workloads within tau")
  ax.set_title(f"Performance profiles{': ' + title if title else ''} (score in legend)")
  ax.grid(alpha=0.3)
  ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
  return _save(fig, stem, ["tau"] + ranked, rows)


def plot_curves(experiment: logreader.Experiment, board: scoring.Scoreboard,
                workload: str, stem: str) -> list[str]:
  """Validation curves on ``workload``, one trial per submission."""
  row = targets_lib.get(workload)
  by_name = {(t.submission, t.study, t.trial): t for t in experiment.trials
             if t.workload == workload}
  fig = Figure(figsize=(9, 5.5), layout="constrained")
  ax = fig.add_subplot()
  seconds_max = max((t.seconds.max() for t in by_name.values() if len(t.seconds)),
                    default=0.0)
  hours = seconds_max > 7200
  rows, values = [], []
  for i, submission in enumerate(sorted({k[0] for k in by_name})):
    trial = _shown_trial(board, by_name, submission, workload, row.direction)
    if trial is None:
      continue
    series = [("validation", trial.metric, "-")]
    if trial.online_metric is not None:
      series.append(("validation_online", trial.online_metric, "--"))
    for name, metric, style in series:
      x = trial.seconds / 3600 if hours else trial.seconds
      label = submission if name == "validation" else f"{submission} (online)"
      ax.plot(x, metric, style, color=_color(i), label=label, linewidth=1.6)
      values.extend(v for v in metric if math.isfinite(v))
      rows += [[submission, trial.path, name, f"{step:.0f}", f"{sec:.6g}", f"{v:.6g}"]
               for step, sec, v in zip(trial.global_step, trial.seconds, metric,
                                       strict=True)]
  ax.axhline(row.validation, color="0.4", linewidth=1, label=f"target {row.validation:g}")
  if values:
    low, high = np.percentile(values + [row.validation], [2, 98])
    low, high = min(low, row.validation), max(high, row.validation)
    pad = 0.05 * (high - low or 1.0)
    ax.set_ylim(low - pad, high + pad)
  ax.set_xlabel("submission time (" + ("hours" if hours else "seconds") + ")")
  ax.set_ylabel(f"validation/{row.metric} ({row.direction}imize)")
  ax.set_title(f"{workload}: fastest trial per submission (else best value)")
  ax.grid(alpha=0.3)
  ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
  header = ["submission", "trial_path", "series", "global_step", "seconds", "value"]
  return _save(fig, stem, header, rows)


def plot_step_ratios(board: scoring.Scoreboard, reference: str, stem: str) -> list[str]:
  """Bars of steps to target relative to ``reference``, per workload both reach."""
  others = [s for s in sorted(board.submissions) if s != reference]
  ref_times = board.times[reference]
  ratios: dict[tuple[str, str], float] = {}
  rows = []
  for s in others:
    for w, mine in sorted(board.times[s].items()):
      if w in ref_times:
        ref = ref_times[w].steps
        both = math.isfinite(mine.steps) and math.isfinite(ref) and ref > 0
        ratios[s, w] = mine.steps / ref if both else math.nan
        rows.append([w, s, _num(mine.steps), _num(ref), _num(ratios[s, w])])
  # Only workloads with at least one bar get a place on the axis.
  workloads = sorted({w for (_, w), r in ratios.items() if math.isfinite(r)})
  fig = Figure(figsize=(max(6, 0.9 * len(workloads) + 3), 5), layout="constrained")
  ax = fig.add_subplot()
  width = 0.8 / max(len(others), 1)
  for i, s in enumerate(others):
    bars = [(j + (i - (len(others) - 1) / 2) * width, ratios[s, w])
            for j, w in enumerate(workloads) if math.isfinite(ratios.get((s, w), math.nan))]
    ax.bar([x for x, _ in bars], [r for _, r in bars], width, color=_color(i), label=s)
  ax.axhline(1.0, color="0.3", linewidth=1)
  ax.set_xticks(range(len(workloads)), workloads, rotation=40, ha="right", fontsize=8)
  ax.set_ylabel(f"steps to target / {reference}'s")
  ax.set_title(f"Steps to target relative to {reference} (no bar: either missed)")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
  header = ["workload", "submission", "steps", f"{reference}_steps", "ratio"]
  return _save(fig, stem, header, rows)


def _shown_trial(board, by_name, submission, workload, direction):
  """The submission's fastest trial to target, else its best validation value."""
  result = board.times[submission][workload]
  hits = [r for r in result.studies if r.trial is not None]
  if hits:
    best = min(hits, key=lambda r: (r.seconds, r.study))
    return by_name[(submission, best.study, best.trial)]
  candidates = [t for k, t in by_name.items() if k[0] == submission and len(t.metric)]
  finite = [t for t in candidates if np.isfinite(t.metric).any()]
  if not finite:
    return candidates[0] if candidates else None
  sign = 1.0 if direction == "max" else -1.0
  return max(finite, key=lambda t: np.nanmax(sign * t.metric))


def _save(fig: Figure, stem: str, header: list[str], rows: list[list[str]]) -> list[str]:
  """Write ``stem``.png (via a temporary file and a rename) and ``stem``.csv."""
  png, csv_path = stem + ".png", stem + ".csv"
  folder = os.path.dirname(os.path.abspath(png))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plot.", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=120, format="png")
    os.replace(tmp, png)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  scoring.write_csv_atomic(csv_path, header, rows)
  return [png, csv_path]


def _num(value: float) -> str:
  return "inf" if math.isinf(value) else "" if math.isnan(value) else f"{value:.6g}"


def _color(i: int):
  # tab20's dark shades first: 10 distinct colours, then the light ones.
  return colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2)


def _dash(i: int) -> str:
  return ("-", "--", "-.", ":")[(i // 10) % 4]
