"""Tests of the scorer: hand-made logs with closed-form answers, and the real
MLCommons leaderboard logs against the scores MLCommons published."""

from __future__ import annotations

import csv
import math
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from algoperf_avg import spec
from algoperf_avg import targets as targets_lib
from algoperf_avg.analysis import logreader, scoring

ARCHIVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                       "shared", "data", "algoperf_leaderboard_logs.tar.xz")
SMALL = targets_lib.TARGETS["ogbg_small"]  # mAP, maximize
HIT, MISS = SMALL.validation + 0.01, SMALL.validation - 0.1
TAUS = np.linspace(1.0, 4.0, 100)


def write_trial(root, submission, study, workload, trial, rows, extra=None,
                framework="jax"):
  """Write one eval_measurements.csv; rows are (step, seconds, metric)."""
  folder = os.path.join(root, submission, f"study_{study}",
                        f"{workload}_{framework}", f"trial_{trial}")
  os.makedirs(folder, exist_ok=True)
  metric = f"validation/{targets_lib.get(workload).metric}"
  header = ["global_step", "score", "accumulated_submission_time", metric]
  header += list(extra or {})
  with open(os.path.join(folder, "eval_measurements.csv"), "w", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    for i, (step, seconds, value) in enumerate(rows):
      writer.writerow([step, seconds, seconds, value]
                      + [col[i] for col in (extra or {}).values()])
  return os.path.join(folder, "eval_measurements.csv")


def reach_at(seconds, steps=None, n=4, workload="ogbg_small"):
  """Eval rows that first reach the target at the ``n``-th eval, at ``seconds``."""
  steps = steps if steps is not None else seconds * 10
  good = HIT if targets_lib.get(workload).direction == "max" else 0.0
  bad = MISS if good == HIT else 1e9
  return [(steps * (i + 1) / n, seconds * (i + 1) / n, good if i == n - 1 else bad)
          for i in range(n)]


def score(root, **kw):
  return scoring.score_experiment(logreader.read_experiment(str(root)), **kw)


# ---------------------------------------------------------------- time to target


def test_best_trial_per_study_and_median_over_studies(tmp_path):
  for study, best in enumerate([30.0, 10.0, 20.0]):
    write_trial(tmp_path, "a", study, "ogbg_small", 1, reach_at(best))
    write_trial(tmp_path, "a", study, "ogbg_small", 2, reach_at(best + 5))
    write_trial(tmp_path, "a", study, "ogbg_small", 3, [(1, 1.0, MISS)])
  result = score(tmp_path).times["a"]["ogbg_small"]
  assert result.seconds == 20.0 and result.steps == 200.0
  assert [r.trial for r in result.studies] == ["trial_1"] * 3


def test_earliest_eval_index_wins_over_earlier_time(tmp_path):
  # AlgoPerf's rule: trial_1 reaches at eval 2 (t=50), trial_2 at eval 3 (t=40).
  write_trial(tmp_path, "a", 0, "ogbg_small", 1, reach_at(50.0, n=2))
  write_trial(tmp_path, "a", 0, "ogbg_small", 2, reach_at(40.0, n=3))
  assert score(tmp_path).times["a"]["ogbg_small"].seconds == 50.0


@pytest.mark.parametrize("later_is_faster", [True, False])
def test_ties_on_eval_index_take_the_earliest_time(tmp_path, later_is_faster):
  fast, slow = (2, 1) if later_is_faster else (1, 2)
  write_trial(tmp_path, "a", 0, "ogbg_small", fast, reach_at(30.0, steps=500))
  write_trial(tmp_path, "a", 0, "ogbg_small", slow, reach_at(31.0, steps=100))
  result = score(tmp_path).times["a"]["ogbg_small"]
  # Steps follow the same trial, so seconds and steps views agree.
  assert (result.seconds, result.steps) == (30.0, 500.0)
  assert result.studies[0].trial == f"trial_{fast}"


@pytest.mark.parametrize("study_times, expected", [
    ([10.0, None, None], math.inf),  # two of three missed
    ([10.0, 20.0, None], 20.0),
    ([10.0, None], math.inf),  # even count: mean of 10 and inf
    ([10.0, 30.0], 20.0),
])
def test_median_over_studies_with_misses(tmp_path, study_times, expected):
  for study, t in enumerate(study_times):
    rows = reach_at(t) if t is not None else [(1, 5.0, MISS)]
    write_trial(tmp_path, "a", study, "ogbg_small", 1, rows)
  assert score(tmp_path).times["a"]["ogbg_small"].seconds == expected


def test_min_metrics_reach_at_or_below_target(tmp_path):
  target = targets_lib.get("criteo1tb").validation
  write_trial(tmp_path, "a", 0, "criteo1tb", 1,
              [(1, 10.0, target + 1e-3), (2, 20.0, target), (3, 30.0, target - 1)])
  assert score(tmp_path).times["a"]["criteo1tb"].seconds == 20.0


def test_diverged_trial_counts_as_missed(tmp_path):
  write_trial(tmp_path, "a", 0, "ogbg_small", 1, reach_at(10.0, n=2),
              extra={"diverged": ["", "1"]})
  write_trial(tmp_path, "a", 0, "ogbg_small", 2, reach_at(40.0))
  write_trial(tmp_path, "a", 1, "ogbg_small", 1, [(1, 1.0, "nan"), (2, 2.0, "")],
              extra={"diverged": ["", "1"]})
  times = score(tmp_path).times["a"]["ogbg_small"]
  assert [r.seconds for r in times.studies] == [40.0, math.inf]


@pytest.mark.parametrize("ruleset, version, reach, expected", [
    # In units of ogbg_small's budget B.
    ("external", "v0.6", 0.99, 0.99),
    ("external", "v0.6", 1.0, math.inf),  # no eval at or past the budget
    ("external", "v0.5", 1.0, 1.0),  # v0.5's runner evaluated once more
    ("self", "v0.6", 1.49, 1.49),  # 1.5 x budget
    ("self", "v0.6", 1.5, math.inf),
])
def test_budget(tmp_path, ruleset, version, reach, expected):
  budget = SMALL.max_runtime_sec
  reach, expected = reach * budget, expected * budget
  write_trial(tmp_path, "a", 0, "ogbg_small", 1,
              [(1, 0.1 * budget, MISS), (2, reach, HIT), (3, reach + 1, HIT)])
  board = score(tmp_path, ruleset=ruleset, version=version)
  assert board.times["a"]["ogbg_small"].seconds == expected


def test_v05_budgets_and_self_tuning_factor():
  rules = scoring.RULES["v0.5"]
  assert scoring.budget_sec("fastmri_tanh", "external", rules) == 8_859
  assert scoring.budget_sec("fastmri", "self", rules) == 3 * 8_859
  assert scoring.budget_sec("fastmri", "self", scoring.RULES["v0.6"]) == 1.5 * 4_430
  assert scoring.budget_sec("ogbg_small", "external", rules) == SMALL.max_runtime_sec


# ------------------------------------------------------ profiles and the score


def trapezoid_share(ratio):
  """Score contribution of one workload at ``ratio`` on AlgoPerf's tau grid."""
  return float(np.trapezoid((ratio <= TAUS).astype(float), TAUS) / 3.0)


def test_profile_closed_forms():
  workloads = ["w1", "w2", "w3", "w4"]
  times = {"a": {"w1": 10.0, "w2": 10.0, "w3": 10.0, "w4": math.inf},
           "b": {"w1": 10.0, "w2": 25.0, "w3": 40.0, "w4": math.inf},
           "c": {"w1": 50.0, "w2": 10.0, "w3": 41.0}}
  counted = scoring.counted_times(times, workloads)
  assert counted["b"]["w3"] == 40.0  # exactly 4x the best stays
  assert counted["c"]["w1"] == math.inf and counted["c"]["w3"] == math.inf  # > 4x
  assert math.isnan(counted["c"]["w4"])  # no logs
  taus, rho = scoring.performance_profile(counted, workloads)
  np.testing.assert_allclose(taus, TAUS)
  scores = {s: scoring.benchmark_score(taus, rho[s]) for s in rho}
  # w4 is missed by all: nobody's rho passes 3/4.
  assert scores["a"] == pytest.approx(3 / 4)
  assert scores["b"] == pytest.approx((1 + trapezoid_share(2.5) + trapezoid_share(4.0)) / 4)
  assert scores["c"] == pytest.approx(1 / 4)
  # The grid's error against the exact integral is at most half a grid step.
  assert scores["b"] == pytest.approx((1 + 1.5 / 3 + 0) / 4, abs=1.5 / 99 / 3)
  assert trapezoid_share(4.0) == pytest.approx(1 / 198)


def test_one_submission_scores_its_share_of_reached_workloads(tmp_path):
  write_trial(tmp_path, "only", 0, "ogbg_small", 1, reach_at(10.0))
  write_trial(tmp_path, "only", 0, "criteo1tb", 1, [(1, 10.0, 1.0)])  # missed
  board = score(tmp_path)
  assert board.workloads == ["criteo1tb", "ogbg_small"]
  assert board.scores == {"only": pytest.approx(0.5)}


def test_identical_submissions_both_score_one(tmp_path):
  for name in ("a", "b"):
    write_trial(tmp_path, name, 0, "ogbg_small", 1, reach_at(10.0))
  assert score(tmp_path).scores == {"a": 1.0, "b": 1.0}


def test_all_missed_everywhere_scores_zero(tmp_path):
  for name in ("a", "b"):
    write_trial(tmp_path, name, 0, "ogbg_small", 1, [(1, 1.0, MISS)])
  assert score(tmp_path).scores == {"a": 0.0, "b": 0.0}


def test_steps_can_rank_differently_from_seconds(tmp_path):
  write_trial(tmp_path, "a", 0, "ogbg_small", 1, reach_at(10.0, steps=1000))
  write_trial(tmp_path, "b", 0, "ogbg_small", 1, reach_at(20.0, steps=500))
  assert score(tmp_path).scores["a"] == 1.0
  by_steps = score(tmp_path, steps=True)
  assert by_steps.scores["b"] == 1.0
  assert by_steps.scores["a"] == pytest.approx(trapezoid_share(2.0))


def test_held_out_rule():
  workloads = ["ogbg", "wmt", "fastmri"]
  held_out = ["ogbg_model_size", "wmt_glu_tanh", "fastmri_tanh"]
  times = {
      "a": {"ogbg": 10.0, "ogbg_model_size": math.inf, "wmt": 10.0, "wmt_glu_tanh": 10.0,
            "fastmri": 10.0},  # no fastmri_tanh logs
      "b": {"ogbg": 20.0, "ogbg_model_size": 50.0, "wmt": 20.0, "wmt_glu_tanh": 41.0,
            "fastmri": 20.0, "fastmri_tanh": 10.0},
      # c has the fastest wmt variant but misses wmt: its variant time is
      # dropped before the 4x rule, so b's 41 is within 4x of a's 10.
      "c": {"ogbg": math.inf, "ogbg_model_size": 1.0, "wmt": math.inf,
            "wmt_glu_tanh": 2.0, "fastmri": 30.0, "fastmri_tanh": 100.0},
  }
  without = scoring.counted_times(times, workloads)
  assert without["a"] == {"ogbg": 10.0, "wmt": 10.0, "fastmri": 10.0}
  rule = scoring.counted_times(times, workloads, held_out)
  assert rule["a"] == {"ogbg": math.inf, "wmt": 10.0, "fastmri": math.inf}
  assert rule["b"] == {"ogbg": 20.0, "wmt": math.inf, "fastmri": 20.0}
  assert rule["c"] == {"ogbg": math.inf, "wmt": math.inf, "fastmri": math.inf}


def test_held_out_rule_needs_variant_logs(tmp_path):
  write_trial(tmp_path, "a", 0, "ogbg", 1, [(1, 1.0, 0.5)])
  with pytest.raises(spec.UsageError, match="ogbg_model_size"):
    score(tmp_path, version="v0.5", held_out_rule=True)


def test_speedup_geometric_mean_over_shared_workloads():
  reference = {"w1": 200.0, "w2": 200.0, "w3": 100.0, "w4": math.inf}
  times = {"w1": 100.0, "w2": 400.0, "w3": math.inf, "w4": 10.0}
  assert scoring.speedup(times, reference, ["w1", "w2", "w3", "w4"]) == (1.0, 2)
  assert scoring.speedup({"w1": 50.0}, reference, ["w1"]) == (4.0, 1)
  value, shared = scoring.speedup({}, reference, ["w1"])
  assert math.isnan(value) and shared == 0


# ------------------------------------------------------------------ the command


def test_score_command_writes_csv_and_reports(tmp_path):
  exp = tmp_path / "exp"
  write_trial(exp, "baseline", 0, "ogbg_small", 1, reach_at(20.0))
  extra = {"validation_online/mean_average_precision": [MISS, MISS, MISS, HIT]}
  rows = [(25, 2.5, MISS), (50, 5.0, HIT), (75, 7.5, HIT), (100, 10.0, HIT)]
  write_trial(exp, "lawa", 0, "ogbg_small", 1, rows, extra=extra)
  out = tmp_path / "out" / "scores.csv"
  text = scoring.score_command(str(exp), reference="baseline", out_csv=str(out),
                               online=True)
  assert "lawa:online" in text and "speedup vs baseline" in text
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["submission"] for r in rows] == ["lawa", "lawa:online", "baseline"]
  assert [r["score"] for r in rows] == ["1.0000", f"{trapezoid_share(2.0):.4f}",
                                        f"{trapezoid_share(4.0):.4f}"]
  assert rows[0]["speedup_vs_baseline"] == "4.0000"
  assert [r["ogbg_small"] for r in rows] == ["5.0", "10.0", "20.0"]
  assert not [p for p in os.listdir(out.parent) if p != "scores.csv"]  # no temp left
  with pytest.raises(spec.UsageError, match="reference 'nadamw'"):
    scoring.score_command(str(exp), reference="nadamw")


def test_one_submission_folder_and_inference_from_paths(tmp_path):
  sub = tmp_path / "algoperf_v05" / "logs" / "self_tuning" / "mine"
  write_trial(sub.parent, "mine", 0, "ogbg_small", 1, reach_at(10.0))
  text = scoring.score_command(str(sub))
  assert "self tuning, v0.5 rules" in text and "mine" in text
  assert logreader.infer_version("x/algoperf_v06/logs") == "v0.6"
  assert logreader.infer_version("runs/exp1") is None
  assert "the path says self_tuning" in scoring.score_command(str(sub), ruleset="external")


# ------------------------------------------------------------ malformed logs


GOOD = "global_step,score,validation/mean_average_precision\n1,1.0,0.5\n"


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    (GOOD + "2,2.0", "cut short"),
    (GOOD + "2,2.0\n", "line 3 has 2 fields"),
    (GOOD + "2,abc,0.5\n", "'abc' is not a number"),
    ("global_step,validation/mean_average_precision\n1,0.5\n", "missing column"),
    ("global_step,score,validation/loss\n1,1.0,0.5\n", "no column validation/mean"),
    ("global_step,score,validation/mean_average_precision\n,1.0,0.5\n", "empty or NaN"),
])
def test_malformed_csv_raises_usage_error_naming_the_file(tmp_path, text, message):
  path = write_trial(tmp_path, "a", 0, "ogbg_small", 1, [])
  with open(path, "w") as f:
    f.write(text)
  with pytest.raises(spec.UsageError, match=message) as error:
    logreader.read_experiment(str(tmp_path))
  assert path in str(error.value)


def test_binary_file_raises_usage_error(tmp_path):
  path = write_trial(tmp_path, "a", 0, "ogbg_small", 1, [])
  Path(path).write_bytes(b"\xff\xfe\x00garbage\n")
  with pytest.raises(spec.UsageError, match="unreadable"):
    logreader.read_experiment(str(tmp_path))


def test_layout_errors_and_notes(tmp_path):
  with pytest.raises(spec.UsageError, match="no such folder"):
    logreader.read_experiment(str(tmp_path / "absent"))
  with pytest.raises(spec.UsageError, match="no trials found"):
    logreader.read_experiment(str(tmp_path))
  write_trial(tmp_path / "one", "a", 0, "ogbg_small", 1, reach_at(1.0))
  write_trial(tmp_path / "two", "a", 0, "ogbg_small", 1, reach_at(1.0))
  with pytest.raises(spec.UsageError, match="several folders of submissions"):
    logreader.read_experiment(str(tmp_path))
  stray = tmp_path / "one" / "a" / "study_0" / "trial_1"
  stray.mkdir()
  (stray / "eval_measurements.csv").write_text(GOOD)
  experiment = logreader.read_experiment(str(tmp_path / "one"))
  assert len(experiment.trials) == 1 and "skipped 1 file(s)" in experiment.notes[0]
  unknown = tmp_path / "one" / "a" / "study_0" / "resnet_tiny_jax" / "trial_1"
  unknown.mkdir(parents=True)
  (unknown / "eval_measurements.csv").write_text(GOOD)
  # A workload we have no targets for is named in the notes; the rest is scored.
  experiment = logreader.read_experiment(str(tmp_path / "one"))
  assert [t.workload for t in experiment.trials] == ["ogbg_small"]
  assert any("unknown workload 'resnet_tiny'" in note for note in experiment.notes)


def test_header_only_csv_is_a_trial_without_evaluations(tmp_path):
  path = write_trial(tmp_path, "a", 0, "ogbg_small", 1, [])
  write_trial(tmp_path, "a", 0, "ogbg_small", 2, reach_at(5.0))
  assert Path(path).read_text().count("\n") == 1
  assert score(tmp_path).times["a"]["ogbg_small"].seconds == 5.0


def test_reads_a_folder_inside_an_archive(tmp_path):
  write_trial(tmp_path / "runs" / "exp1", "a", 0, "ogbg_small", 1, reach_at(5.0))
  write_trial(tmp_path / "runs" / "exp2", "b", 0, "ogbg_small", 1, reach_at(5.0))
  archive = tmp_path / "runs.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(tmp_path / "runs", arcname="runs")
  (trial,) = logreader.read_experiment(f"{archive}/runs/exp2").trials
  assert trial.submission == "b" and trial.path.startswith(str(archive))
  with pytest.raises(spec.UsageError, match="runs/exp1, .*runs/exp2"):
    logreader.read_experiment(str(archive))


def test_workload_ids_split_on_the_last_underscore(tmp_path):
  write_trial(tmp_path, "a", 0, "ogbg_small", 1, reach_at(1.0), framework="pytorch")
  (trial,) = logreader.read_experiment(str(tmp_path)).trials
  assert (trial.workload, trial.framework, trial.study) == ("ogbg_small", "pytorch", "study_0")


# ---------------------------------------------- the MLCommons leaderboard logs

# Benchmark scores as MLCommons published them, from the mlcommons/
# submissions_algorithms repository (commit 12c8e4ea):
# v0.5: https://github.com/mlcommons/submissions_algorithms/blob/main/previous_leaderboards/algoperf_v05/README.md
#   tables "External Tuning Ruleset Leaderboard" and "Self-Tuning Ruleset
#   Leaderboard" (Leaderboard Version 0.5); the same scores are in Kasimbeg et
#   al., "Accelerating neural network training: An analysis of the AlgoPerf
#   competition", ICLR 2025.
# v0.6: https://github.com/mlcommons/submissions_algorithms/blob/main/README.md
#   table "External Tuning Ruleset Leaderboard" (Leaderboard Version 0.6,
#   2025-03-24). Its self-tuning table is not published (commented out).
PUBLISHED = {
    "algoperf_v05/logs/external_tuning": {
        "shampoo_submission": 0.7784, "schedule_free_adamw": 0.7077,
        "generalized_adam": 0.6383, "cyclic_lr": 0.6301, "nadamp": 0.5909,
        "baseline": 0.5707, "amos": 0.4918, "caspr_adaptive": 0.4722,
        "lawa_queue": 0.3699, "lawa_ema": 0.3384, "schedule_free_prodigy": 0.0,
    },
    "algoperf_v05/logs/self_tuning": {
        "schedule_free_adamw": 0.8542, "baseline": 0.8194,
        "nadamw_sequential": 0.3308, "sinv6_75": 0.1420, "sinv6": 0.0903,
        "adamg": 0.0,
    },
    "algoperf_v06/logs/external_tuning": {"shampoo": 0.6244, "baseline": 0.4590},
}


def extract_leaderboard(tmp_path_factory) -> str:
  """The archive extracted once per session (also used by test_plots.py)."""
  if not os.path.exists(ARCHIVE):
    pytest.skip(f"leaderboard logs not found at {os.path.normpath(ARCHIVE)} "
                "(see shared/data/README.md)")
  folder = tmp_path_factory.getbasetemp() / "algoperf_leaderboard"
  if not (folder / "done").exists():
    # Only the eval files the scorer reads (half the members), in one stream.
    with tarfile.open(ARCHIVE, "r|xz") as tar:
      for member in tar:
        if member.name.endswith("/" + logreader.EVAL_FILE):
          tar.extract(member, folder, filter="data")
    (folder / "done").write_text("")
  return str(folder)


@pytest.fixture(scope="session")
def leaderboard(tmp_path_factory):
  return extract_leaderboard(tmp_path_factory)


@pytest.mark.parametrize("board", sorted(PUBLISHED))
def test_published_benchmark_scores(leaderboard, board):
  path = os.path.join(leaderboard, board)
  result = scoring.score_experiment(
      logreader.read_experiment(path), ruleset=logreader.infer_ruleset(path),
      version=logreader.infer_version(path), held_out_rule="v05" in board)
  ours = {s: round(v, 4) for s, v in result.scores.items()}
  assert ours == PUBLISHED[board]


def test_leaderboard_scored_straight_from_the_archive(leaderboard):
  if not os.path.exists(ARCHIVE):
    pytest.skip("no archive")
  from_tar = logreader.read_experiments(ARCHIVE)
  assert [os.path.relpath(e.root, ARCHIVE) for e in from_tar] == [
      "algoperf_v05/logs/external_tuning", "algoperf_v05/logs/self_tuning",
      "algoperf_v06/logs/external_tuning", "algoperf_v06/logs/self_tuning"]
  assert sum(len(e.trials) for e in from_tar) == 4_359  # 4,377 files, 18 stray
  v06 = from_tar[2]
  folder = logreader.read_experiment(os.path.join(leaderboard, v06.root[len(ARCHIVE) + 1:]))
  assert scoring.score_experiment(v06).scores == scoring.score_experiment(folder).scores
  with pytest.raises(spec.UsageError, match="algoperf_v06/logs/self_tuning"):
    logreader.read_experiment(leaderboard)
