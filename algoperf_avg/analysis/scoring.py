"""Time to target, performance profiles and the AlgoPerf benchmark score.

The rules are AlgoPerf's (docs/DOCUMENTATION.md and scoring/*.py of
mlcommons/algorithmic-efficiency); they reproduce the scores MLCommons
published for the v0.5 and v0.6 leaderboards from the raw logs
(tests/test_scoring.py):

* A trial reaches the target at its first evaluation whose validation metric
  is <= the target (metrics to minimize) or >= it (to maximize); NaN never
  does (`targets.Targets.reached`, the runner's definition too). A trial
  whose ``diverged`` column is 1 counts as missed.
* Budget: only evaluations logged before the runtime budget count. The budget
  is the workload's ``max_runtime_sec`` (`targets.py`), times 1.5 for the
  self-tuning ruleset. Small sizes have a budget in steps instead
  (`targets.Targets.step_budget`): evaluations after it do not count. The
  v0.5 competition had longer budgets (`targets.MAX_RUNTIME_SEC_V05`), a
  factor of 3 for self-tuning, and its runner still evaluated once after the
  budget ran out; `Rules` holds both versions.
  AlgoPerf's scorer itself never checks budgets (its runner stops evaluating);
  checking them here gives the same result on its logs and keeps overlong runs
  of ours from scoring.
* Per study, the trial that reaches the target at the earliest evaluation
  *index* counts (AlgoPerf's rule). Where several tie on that index AlgoPerf's
  choice fell to directory-listing order; here the earliest time wins, then
  the fewest steps, then the trial name, so results are deterministic and the
  seconds and steps views always use the same trial. A study with no trial
  reaching the target scores ``inf``. The workload's time is the median over
  studies (numpy's: with an even count, the mean of the middle two; ``inf``
  takes part). Self-tuning runs are one trial per study and go the same way.
* Times more than 4x the best submission's on a workload become ``inf``.
  Ratios are taken to the best time per workload and
  rho(tau) = (number of scored workloads with ratio <= tau) / n, where the
  scored workloads are the base workloads found in the logs (AlgoPerf's 8).
  A workload a submission has no logs for counts as missed.
* The benchmark score is the trapezoidal integral of rho over AlgoPerf's grid
  of 100 points in [1, 4], divided by 3. (The grid matters in the third
  decimal: the exact integral of the step function differs slightly.)
* Held-out rule (v0.5, ``held_out_rule=True``): each base workload is paired
  with its drawn variant (`targets.HELD_OUT_WORKLOADS_V05`). A variant's time
  becomes ``inf`` if the base's is ``inf`` or missing; the 4x rule is applied
  to bases and variants; then a base's time becomes ``inf`` if its variant's is
  ``inf`` or missing. Only the bases enter the profile.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from algoperf_avg import spec
from algoperf_avg import targets as targets_lib
from algoperf_avg.analysis import logreader
from algoperf_avg.training import logs

MAX_TAU = 4.0
NUM_TAU_POINTS = 100  # AlgoPerf's grid: np.linspace(1, 4, 100)


@dataclasses.dataclass(frozen=True)
class Rules:
  """What differs between leaderboard versions."""

  version: str
  budgets: Mapping[str, float]  # per base workload; overrides targets.py
  self_tuning_factor: float
  eval_after_budget: bool  # the runner evaluated once after the budget ran out
  held_out_workloads: tuple[str, ...]


RULES: dict[str, Rules] = {
    "v0.5": Rules("v0.5", targets_lib.MAX_RUNTIME_SEC_V05, 3.0, True,
                  targets_lib.HELD_OUT_WORKLOADS_V05),
    "v0.6": Rules("v0.6", {}, 1.5, False, ()),
}
LATEST = "v0.6"
RULESETS = ("external", "self")


@dataclasses.dataclass(frozen=True)
class StudyResult:
  """The counting trial of one study (``trial`` is None when none reached)."""

  study: str
  trial: str | None
  eval_index: int | None
  seconds: float
  steps: float


@dataclasses.dataclass(frozen=True)
class WorkloadTime:
  """One submission's time to target on one workload (medians over studies)."""

  submission: str
  workload: str
  seconds: float
  steps: float
  studies: tuple[StudyResult, ...]


@dataclasses.dataclass
class Scoreboard:
  """Everything `score_experiment` computes."""

  submissions: list[str]
  workloads: list[str]  # scored (base) workloads: n in rho
  times: dict[str, dict[str, WorkloadTime]]  # submission -> workload (all found)
  counted: dict[str, dict[str, float]]  # after the 4x / held-out rules
  taus: np.ndarray
  rho: dict[str, np.ndarray]
  scores: dict[str, float]
  notes: list[str]


def budget_sec(workload: str, ruleset: str, rules: Rules) -> float:
  """Runtime budget of ``workload`` under ``ruleset`` ("external"/"self")."""
  base = targets_lib.base_of(workload)
  budget = rules.budgets.get(base, targets_lib.get(workload).max_runtime_sec)
  return budget * (rules.self_tuning_factor if ruleset == "self" else 1.0)


def trial_hit(trial: logreader.Trial, budget: float, eval_after_budget: bool,
              online: bool = False, step_budget: float | None = None
              ) -> tuple[int, float, float] | None:
  """``(eval index, seconds, steps)`` where ``trial`` first reached its target.

  None when it never did within the budget, or diverged. ``step_budget``
  (small sizes) limits by steps instead: evaluations after it do not count.
  """
  row = targets_lib.get(trial.workload)
  metric = trial.online_metric if online else trial.metric
  if trial.diverged or metric is None or not len(metric):
    return None
  if step_budget is not None:
    over = np.flatnonzero(trial.global_step > step_budget)
    limit = len(metric) if not len(over) else over[0]
  else:
    over = np.flatnonzero(trial.seconds >= budget)
    limit = len(metric) if not len(over) else over[0] + int(eval_after_budget)
  reached = [row.reached(float(v)) for v in metric[:limit]]
  if not any(reached):
    return None
  i = reached.index(True)
  return i, float(trial.seconds[i]), float(trial.global_step[i])


def step_budget(workload: str, ruleset: str, rules: Rules) -> float | None:
  """The step budget of a small size under ``ruleset`` (None: a time budget)."""
  steps = targets_lib.get(workload).step_budget
  if steps is None:
    return None
  return steps * (rules.self_tuning_factor if ruleset == "self" else 1.0)


def time_to_target(trials: Sequence[logreader.Trial], ruleset: str, rules: Rules,
                   online: bool = False) -> dict[str, dict[str, WorkloadTime]]:
  """Per submission and workload: best trial per study, median over studies."""
  groups: dict[tuple[str, str], dict[str, list[logreader.Trial]]] = {}
  for t in trials:
    groups.setdefault((t.submission, t.workload), {}).setdefault(t.study, []).append(t)
  out: dict[str, dict[str, WorkloadTime]] = {}
  for (submission, workload), studies in sorted(groups.items()):
    budget = budget_sec(workload, ruleset, rules)
    steps_budget = step_budget(workload, ruleset, rules)
    results = []
    for study in sorted(studies, key=_natural):
      hits = []
      for t in studies[study]:
        hit = trial_hit(t, budget, rules.eval_after_budget, online, steps_budget)
        if hit is not None:
          hits.append((hit, t.trial))
      if hits:
        (index, seconds, steps), name = min(hits, key=lambda h: (*h[0], _natural(h[1])))
        results.append(StudyResult(study, name, index, seconds, steps))
      else:
        results.append(StudyResult(study, None, None, math.inf, math.inf))
    out.setdefault(submission, {})[workload] = WorkloadTime(
        submission, workload,
        seconds=float(np.median([r.seconds for r in results])),
        steps=float(np.median([r.steps for r in results])),
        studies=tuple(results))
  return out


def counted_times(times: Mapping[str, Mapping[str, float]], workloads: Sequence[str],
                  held_out: Sequence[str] = (), max_tau: float = MAX_TAU
                  ) -> dict[str, dict[str, float]]:
  """Times that enter the profile: 4x rule, and the held-out rule if given.

  Args:
    times: submission -> workload -> time (inf missed; absent = no logs).
    workloads: the scored base workloads.
    held_out: variants paired with their bases (empty: no held-out rule).
    max_tau: times above ``max_tau`` x the best become inf.

  Returns:
    submission -> scored workload -> time (NaN where there were no logs).
  """
  columns = list(workloads) + [v for v in held_out if targets_lib.base_of(v) in workloads]
  table = {s: {w: times[s].get(w, math.nan) for w in columns} for s in times}
  pairs = [(v, targets_lib.base_of(v)) for v in columns[len(workloads):]]
  for row in table.values():
    for variant, base in pairs:
      if not math.isfinite(row[base]):  # inf or NaN
        row[variant] = math.inf
  for w in columns:
    best = _nanmin([row[w] for row in table.values()])
    for row in table.values():
      if row[w] > max_tau * best:
        row[w] = math.inf
  for row in table.values():
    for variant, base in pairs:
      if not math.isfinite(row[variant]):  # inf or NaN
        row[base] = math.inf
  return {s: {w: row[w] for w in workloads} for s, row in table.items()}


def performance_profile(counted: Mapping[str, Mapping[str, float]],
                        workloads: Sequence[str], max_tau: float = MAX_TAU,
                        num_points: int = NUM_TAU_POINTS
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """rho(tau) of each submission on ``num_points`` taus in [1, max_tau]."""
  taus = np.linspace(1.0, max_tau, num_points)
  rho = {}
  for submission, row in counted.items():
    ratios = np.array([_ratio(row.get(w, math.nan), [r.get(w, math.nan)
                                                     for r in counted.values()])
                       for w in workloads], float)
    with np.errstate(invalid="ignore"):
      rho[submission] = (ratios[None, :] <= taus[:, None]).sum(1) / max(len(workloads), 1)
  return taus, rho


def benchmark_score(taus: np.ndarray, rho: np.ndarray) -> float:
  """Normalized area under rho: 1 = fastest on every workload, 0 = never within 4x."""
  return float(np.trapezoid(rho, taus) / (taus[-1] - taus[0]))


def speedup(times: Mapping[str, float], reference: Mapping[str, float],
            workloads: Sequence[str]) -> tuple[float, int]:
  """Geometric-mean speedup (reference time / time) over workloads both reach.

  Returns:
    ``(speedup, number of workloads used)``; ``(nan, 0)`` when none is shared.
  """
  logs = [math.log(reference[w] / times[w]) for w in workloads
          if math.isfinite(times.get(w, math.nan))
          and math.isfinite(reference.get(w, math.nan)) and times[w] > 0]
  return (math.exp(sum(logs) / len(logs)), len(logs)) if logs else (math.nan, 0)


def score_experiment(experiment: logreader.Experiment, ruleset: str = "external",
                     version: str = LATEST, held_out_rule: bool = False,
                     steps: bool = False, online: bool = False,
                     max_tau: float = MAX_TAU) -> Scoreboard:
  """Score every submission of ``experiment`` (see the module doc for the rules).

  Args:
    experiment: from `logreader.read_experiment`.
    ruleset: "external" or "self".
    version: a key of `RULES` ("v0.5", "v0.6").
    held_out_rule: apply the v0.5 held-out variant rule.
    steps: rank by steps (``global_step``) instead of seconds (``score``).
    online: also score ``validation_online/*`` as submissions "<name>:online".
    max_tau: the profile's upper end; times beyond max_tau x best count as missed.
  """
  if ruleset not in RULESETS:
    raise spec.UsageError(f"ruleset must be one of {RULESETS}, not {ruleset!r}")
  if version not in RULES:
    raise spec.UsageError(f"version must be one of {sorted(RULES)}, not {version!r}")
  rules = RULES[version]
  times = time_to_target(experiment.trials, ruleset, rules)
  if online:
    online_trials = [t for t in experiment.trials if t.online_metric is not None]
    for submission, row in time_to_target(online_trials, ruleset, rules, online=True).items():
      times[f"{submission}:online"] = row
  submissions = sorted(times)
  workloads = sorted({w for row in times.values() for w in row
                      if targets_lib.get(w).base_workload is None})
  held_out = rules.held_out_workloads if held_out_rule else ()
  present = {w for row in times.values() for w in row}
  lacking = [v for v in held_out if targets_lib.base_of(v) in workloads and v not in present]
  if lacking:
    raise spec.UsageError(
        f"the {version} held-out rule needs logs of {', '.join(lacking)}; "
        "no submission has them")
  column = "steps" if steps else "seconds"
  flat = {s: {w: getattr(t, column) for w, t in times[s].items()} for s in submissions}
  counted = counted_times(flat, workloads, held_out, max_tau)
  taus, rho = performance_profile(counted, workloads, max_tau)
  notes = list(experiment.notes)
  for s in submissions:
    absent = [w for w in workloads if w not in times[s]]
    if absent:
      notes.append(f"{s}: no logs for {', '.join(absent)} (counted as missed)")
  return Scoreboard(submissions, workloads, times, counted, taus, rho,
                    {s: benchmark_score(taus, rho[s]) for s in submissions}, notes)


def score_command(exp_dir: str, ruleset: str | None = None, reference: str | None = None,
                  steps: bool = False, out_csv: str | None = None,
                  held_out_rule: bool = False, version: str | None = None,
                  online: bool = False) -> str:
  """``algoperf-avg score``: score a folder of submissions; return the printed text.

  Args:
    exp_dir: folder of submissions, one submission, or a log archive (see
      `logreader`).
    ruleset: "external" or "self"; None infers it from the path
      (``self_tuning`` in it means "self").
    reference: a submission to report geometric-mean speedups against.
    steps: rank by steps to target instead of seconds.
    out_csv: also write the table (one row per submission) here, atomically.
    held_out_rule: apply the v0.5 held-out variant rule.
    version: leaderboard rules, "v0.5" or "v0.6"; None infers "v0.5" from an
      ``algoperf_v05`` folder in the path, else "v0.6".
    online: also score the online weights (``validation_online/*``).

  Raises:
    spec.UsageError: bad input (folder, logs, names).
  """
  ruleset = ruleset or logreader.infer_ruleset(exp_dir)
  version = version or logreader.infer_version(exp_dir) or LATEST
  board = score_experiment(logreader.read_experiment(exp_dir), ruleset, version,
                           held_out_rule, steps, online)
  if ruleset == "external" and logreader.infer_ruleset(exp_dir) == "self":
    board.notes.append("the path says self_tuning but the ruleset is external: "
                       "evaluations past the external budget do not count")
  if reference is not None and reference not in board.submissions:
    raise spec.UsageError(
        f"reference {reference!r} is not among: {', '.join(board.submissions)}")
  header, rows = table_rows(board, reference, steps)
  if out_csv:
    write_csv_atomic(out_csv, header, rows)
  return format_report(board, exp_dir, ruleset, version, held_out_rule, reference, steps)


def table_rows(board: Scoreboard, reference: str | None = None, steps: bool = False
               ) -> tuple[list[str], list[list[str]]]:
  """The CSV table: one row per submission, best score first, then workloads."""
  column = "steps" if steps else "seconds"
  header = ["submission", "score"]
  if reference is not None:
    header += [f"speedup_vs_{reference}", "shared_workloads"]
  header += _all_workloads(board)
  rows = []
  for s in _ranked(board):
    row = [s, f"{board.scores[s]:.4f}"]
    if reference is not None:
      value, shared = _speedup_of(board, s, reference, column)
      row += [f"{value:.4f}", str(shared)]
    for w in header[len(row):]:
      t = board.times[s].get(w)
      row.append("" if t is None else _fmt_time(getattr(t, column), column))
    rows.append(row)
  return header, rows


def format_report(board: Scoreboard, exp_dir: str, ruleset: str, version: str,
                  held_out_rule: bool, reference: str | None, steps: bool) -> str:
  """Ranking, then time to target per workload (rows) and submission (columns)."""
  column = "steps" if steps else "seconds"
  ranked = _ranked(board)
  ranking = [["rank", "submission", "score"]
             + ([f"speedup vs {reference} (workloads)"] if reference else [])]
  for rank, s in enumerate(ranked, start=1):
    row = [str(rank), s, f"{board.scores[s]:.4f}"]
    if reference:
      value, shared = _speedup_of(board, s, reference, column)
      row.append(f"{value:.3f} ({shared})")
    ranking.append(row)
  times = [["workload"] + ranked]
  variants = _all_workloads(board)[len(board.workloads):]
  for w in board.workloads + variants:
    label = w if w in board.workloads else f"{w} *"
    times.append([label] + [_fmt_time(getattr(board.times[s][w], column), column)
                            if w in board.times[s] else "-" for s in ranked])
  lines = [
      f"{exp_dir}: {ruleset} tuning, {version} rules"
      f"{', held-out rule' if held_out_rule else ''}; score over "
      f"{len(board.workloads)} workloads", "",
      _format_table(ranking, left=2), "",
      f"time to target ({column}; median over studies; inf = missed, - = no logs):",
      _format_table(times)]
  if variants:
    lines.append("* variant: counts only through the held-out rule")
  return "\n".join(lines + [f"note: {n}" for n in board.notes]) + "\n"


def write_csv_atomic(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
  """Write a CSV through a temporary file and a rename (never half-written)."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  logs.atomic_write_text(path, text.getvalue())


def _ranked(board: Scoreboard) -> list[str]:
  return sorted(board.submissions, key=lambda s: (-board.scores[s], s))


def _all_workloads(board: Scoreboard) -> list[str]:
  """Scored workloads, then the others found in the logs (variants)."""
  found = {w for row in board.times.values() for w in row}
  return board.workloads + sorted(found - set(board.workloads))


def _speedup_of(board: Scoreboard, submission: str, reference: str, column: str
                ) -> tuple[float, int]:
  flat = {w: getattr(t, column) for w, t in board.times[submission].items()}
  ref = {w: getattr(t, column) for w, t in board.times[reference].items()}
  return speedup(flat, ref, board.workloads)


def _fmt_time(value: float, column: str) -> str:
  return "inf" if math.isinf(value) else f"{value:.{0 if column == 'steps' else 1}f}"


def _format_table(cells: list[list[str]], left: int = 1) -> str:
  """Aligned columns: the first ``left`` flush left, the others flush right."""
  widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
  return "\n".join(
      "  ".join(c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
      for r in cells)


def _ratio(time: float, column: Sequence[float]) -> float:
  best = _nanmin(column)
  if math.isnan(time) or math.isnan(best):
    return math.nan
  if math.isinf(time):
    return math.inf
  return 1.0 if time == best else time / best if best > 0 else math.inf


def _nanmin(values: Sequence[float]) -> float:
  finite_or_inf = [v for v in values if not math.isnan(v)]
  return min(finite_or_inf) if finite_or_inf else math.nan


def _natural(name: str) -> tuple:
  """Sort key that puts trial_10 after trial_9."""
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
