"""Score the MLCommons AlgoPerf leaderboard logs and compare with the published scores.

    python scripts/score_leaderboard.py [--archive PATH] [--out results/leaderboard]

Reads all four leaderboards (v0.5 and v0.6, external and self tuning) from the
archive in one pass, scores each under its own version's rules (the v0.5 ones
with the held-out variant rule, as MLCommons did), and writes per leaderboard
the score table (``<board>.csv``), the performance profile (``<board>_profile.png``
+ ``.csv``), and ``published_vs_ours.csv`` over all of them.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from algoperf_avg.analysis import logreader, plots, scoring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ARCHIVE = flags.DEFINE_string(
    "archive", os.path.join(ROOT, "..", "shared", "data", "algoperf_leaderboard_logs.tar.xz"),
    "The leaderboard logs: a .tar.xz archive or its extracted folder.")
_OUT = flags.DEFINE_string("out", os.path.join(ROOT, "results", "leaderboard"), "Output folder.")

# The published scores, with their sources, live beside the test that checks
# them (mlcommons/submissions_algorithms, commit 12c8e4ea).
sys.path.insert(0, ROOT)
from tests.test_scoring import PUBLISHED  # noqa: E402


def main(argv: list[str]) -> None:
  del argv
  start = time.perf_counter()
  experiments = logreader.read_experiments(_ARCHIVE.value)
  boards = {}
  for experiment in experiments:
    name = os.path.relpath(experiment.root, _ARCHIVE.value).replace(os.sep, "/")
    version = logreader.infer_version(name)
    ruleset = logreader.infer_ruleset(name)
    boards[name] = (ruleset, version, scoring.score_experiment(
        experiment, ruleset, version, held_out_rule=version == "v0.5"))
  elapsed = time.perf_counter() - start
  print(f"read and scored {sum(len(e.trials) for e in experiments)} trials "
        f"in {elapsed:.2f} s")

  summary = []
  for name, (ruleset, version, board) in boards.items():
    stem = os.path.join(_OUT.value, name.replace("/logs/", "_"))
    header, rows = scoring.table_rows(board)
    scoring.write_csv_atomic(stem + ".csv", header, rows)
    plots.plot_profiles(board, stem + "_profile", title=f"{name.split('/')[0]}, "
                        f"{ruleset} tuning" + (", held-out rule" if version == "v0.5" else ""))
    print(scoring.format_report(board, name, ruleset, version, version == "v0.5", None, False))
    for submission, ours in sorted(board.scores.items(), key=lambda kv: -kv[1]):
      published = PUBLISHED.get(name, {}).get(submission)
      match = "" if published is None else str(round(ours, 4) == published)
      summary.append([name, submission, "" if published is None else f"{published:.4f}",
                      f"{ours:.4f}", match])
  scoring.write_csv_atomic(os.path.join(_OUT.value, "published_vs_ours.csv"),
                           ["leaderboard", "submission", "published", "ours", "match"],
                           summary)
  compared = [row for row in summary if row[4]]
  mismatches = [row for row in compared if row[4] == "False"]
  print(f"{len(compared) - len(mismatches)} of {len(compared)} published scores match"
        + (f"; MISMATCH: {mismatches}" if mismatches else ""))


if __name__ == "__main__":
  app.run(main)
