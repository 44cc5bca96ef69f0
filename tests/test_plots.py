"""Tests of the figures: every PNG comes with the CSV it was drawn from."""

from __future__ import annotations

import csv
import os

import pytest

from algoperf_avg import spec
from algoperf_avg.analysis import plots
from tests.test_scoring import HIT, MISS, extract_leaderboard, reach_at, write_trial

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  assert os.path.getsize(path) > 10_000


@pytest.fixture
def experiment(tmp_path):
  exp = tmp_path / "exp"
  write_trial(exp, "baseline", 0, "ogbg_small", 1, reach_at(20.0, steps=400))
  write_trial(exp, "baseline", 0, "criteo1tb", 1, [(1, 10.0, 0.5), (2, 20.0, 0.1)])
  online = {"validation_online/mean_average_precision": [MISS, MISS, HIT, HIT]}
  write_trial(exp, "lawa", 0, "ogbg_small", 1, reach_at(10.0, steps=100), extra=online)
  write_trial(exp, "lawa", 0, "ogbg_small", 2, [(1, 1.0, MISS)])
  write_trial(exp, "lawa", 0, "criteo1tb", 1, [(1, 10.0, 0.5)])  # missed
  return str(exp)


def test_plot_command_writes_png_and_csv_pairs(experiment, tmp_path):
  out = tmp_path / "figures"
  written = plots.plot_command(experiment, str(out))
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(f"{stem}.{ext}" for ext in ("png", "csv") for stem in (
      "profile", "curves_ogbg_small", "curves_criteo1tb", "step_ratio_vs_baseline"))
  assert sorted(os.listdir(out)) == names  # no temporary files left behind
  for path in written:
    if path.endswith(".png"):
      assert_png(path)


def test_profile_csv_holds_the_plotted_profile(experiment, tmp_path):
  plots.plot_command(experiment, str(tmp_path))
  rows = read_csv(tmp_path / "profile.csv")
  assert len(rows) == 100 and list(rows[0]) == ["tau", "baseline", "lawa"]
  assert (rows[0]["tau"], rows[-1]["tau"]) == ("1", "4")
  # baseline: criteo1tb fastest, ogbg_small at 2x lawa's time; lawa: ogbg_small.
  assert [rows[-1]["baseline"], rows[-1]["lawa"]] == ["1", "0.5"]
  assert [rows[0]["baseline"], rows[0]["lawa"]] == ["0.5", "0.5"]


def test_curves_show_online_weights_next_to_averaged(experiment, tmp_path):
  plots.plot_command(experiment, str(tmp_path))
  rows = read_csv(tmp_path / "curves_ogbg_small.csv")
  series = {(r["submission"], r["series"]) for r in rows}
  assert series == {("baseline", "validation"), ("lawa", "validation"),
                    ("lawa", "validation_online")}
  # lawa's trial_1 reached the target (trial_2 never did), so it is shown.
  assert {r["trial_path"].split(os.sep)[-2] for r in rows if r["submission"] == "lawa"} == {
      "trial_1"}
  assert len([r for r in rows if r["series"] == "validation_online"]) == 4


def test_step_ratio_bars(experiment, tmp_path):
  plots.plot_command(experiment, str(tmp_path), reference="baseline")
  rows = read_csv(tmp_path / "step_ratio_vs_baseline.csv")
  by_workload = {r["workload"]: r for r in rows}
  assert by_workload["ogbg_small"]["ratio"] == "0.25"
  assert by_workload["criteo1tb"]["steps"] == "inf"
  assert by_workload["criteo1tb"]["ratio"] == ""
  with pytest.raises(spec.UsageError, match="reference 'sgd'"):
    plots.plot_command(experiment, str(tmp_path), reference="sgd")


def test_plots_of_the_leaderboard_logs(tmp_path_factory, tmp_path):
  folder = os.path.join(extract_leaderboard(tmp_path_factory),
                        "algoperf_v06", "logs", "external_tuning")
  written = plots.plot_command(folder, str(tmp_path))
  assert len(written) == 2 * (1 + 8 + 1)
  rows = read_csv(tmp_path / "profile.csv")
  assert list(rows[0]) == ["tau", "shampoo", "baseline"]
  assert_png(tmp_path / "profile.png")
