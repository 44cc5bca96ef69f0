"""Tests for algoperf_avg.training.tuning: search-space files, Halton trials, rulesets."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from algoperf_avg import spec
from algoperf_avg.training import tuning

NADAMW_SPACE = {  # AlgoPerf's archived NAdamW baseline search space, shortened.
    "learning_rate": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "one_minus_beta1": {"min": 2e-2, "max": 0.5, "scaling": "log"},
    "warmup_factor": {"feasible_points": [0.05]},
    "weight_decay": {"min": 5e-3, "max": 1.0, "scaling": "log"},
    "label_smoothing": {"feasible_points": [0.1, 0.2]},
    "dropout_rate": {"feasible_points": [0.0, 0.1]},
    "beta2": {"min": 0.9, "max": 0.999, "scaling": "linear"},
}
FIXED_POINTS = [
    {"learning_rate": 1e-3, "label_smoothing": 0.1},
    {"learning_rate": 2e-3, "label_smoothing": 0.0},
    {"learning_rate": 5e-4, "label_smoothing": 0.2},
]


def write(tmp_path, content, name="space.json"):
  path = tmp_path / name
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  return str(path)


def max_circular_gap(values):
  values = np.sort(np.asarray(values))
  gaps = np.diff(np.concatenate([values, [values[0] + 1.0]]))
  return gaps.max()


# ----- loading ---------------------------------------------------------------


def test_load_dict_space_keeps_file_order(tmp_path):
  space = tuning.load_search_space(write(tmp_path, NADAMW_SPACE))
  assert not space.is_fixed
  assert space.names == tuple(NADAMW_SPACE)
  lr = space.dimensions[0]
  assert lr == tuning.Range("learning_rate", 1e-4, 1e-2, "log")
  assert space.dimensions[4] == tuning.Choice("label_smoothing", (0.1, 0.2))


def test_load_fixed_list(tmp_path):
  space = tuning.load_search_space(write(tmp_path, FIXED_POINTS))
  assert space.is_fixed
  assert space.names == ("learning_rate", "label_smoothing")


BAD_SPACES = [
    ("{\n  \"lr\": {\"min\": 1,, }\n}", "line 2, column"),
    ("[]", "empty"),
    ("{}", "no hyperparameters"),
    ("3", "must be a JSON object"),
    ({"lr": 0.1}, "'lr' must be an object"),
    ({"lr": {"min": 2.0, "max": 1.0, "scaling": "linear"}}, "'lr': min (2.0) is greater"),
    ({"lr": {"min": 0.0, "max": 1.0, "scaling": "log"}}, "'lr': log scaling needs min > 0"),
    ({"lr": {"min": -1.0, "max": 1.0, "scaling": "log"}}, "'lr': log scaling"),
    ({"lr": {"min": 0.1, "max": 1.0, "scaling": "cubic"}}, "'lr': unknown scaling 'cubic'"),
    ({"lr": {"min": 0.1, "max": 1.0}}, "'lr' is missing 'scaling'"),
    ({"lr": {"min": 0.1, "max": 1.0, "scalling": "log"}}, "did you mean 'scaling'"),
    ({"lr": {"min": "0.1", "max": 1.0, "scaling": "log"}}, "'lr': 'min' must be a finite number"),
    ('{"lr": {"min": NaN, "max": 1.0, "scaling": "log"}}', "NaN is not allowed"),
    ({"wd": {"feasible_points": []}}, "'wd': 'feasible_points' is empty"),
    ({"wd": {"feasible_points": 0.1}}, "'wd': 'feasible_points' must be a list"),
    ({"wd": {"feasible_points": [0.1], "min": 0.0}}, "'wd' mixes"),
    ([{"lr": 1.0}, 2.0], "point 1 must be an object"),
    ([{"lr": 1.0, "wd": 0.1}, {"lr": 2.0}], "point 1 has different hyperparameters from point 0: missing 'wd'"),
    ([{"lr": 1.0}, {"lr": 2.0, "b": 1}], "extra 'b'"),
]


@pytest.mark.parametrize("content, message", BAD_SPACES)
def test_bad_space_is_usage_error_naming_file(tmp_path, content, message):
  path = write(tmp_path, content)
  with pytest.raises(spec.UsageError) as info:
    tuning.load_search_space(path)
  assert path in str(info.value)
  assert message in str(info.value)


def test_missing_file_and_directory(tmp_path):
  missing = str(tmp_path / "nope.json")
  with pytest.raises(spec.UsageError, match="nope.json: file not found"):
    tuning.load_search_space(missing)
  with pytest.raises(spec.UsageError, match="is a directory"):
    tuning.load_search_space(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
  path = write(tmp_path, NADAMW_SPACE)
  os.chmod(path, 0)
  with pytest.raises(spec.UsageError, match="cannot be read"):
    tuning.load_search_space(path)


def test_not_utf8(tmp_path):
  path = tmp_path / "space.json"
  path.write_bytes(b"\xff\xfe{}")
  with pytest.raises(spec.UsageError, match="cannot be read"):
    tuning.load_search_space(path)


# ----- sampling ----------------------------------------------------------------


def test_sampling_is_deterministic_and_seed_dependent():
  space = tuning.parse_search_space(NADAMW_SPACE)
  first = tuning.sample_trials(space, 8, seed=3)
  assert first == tuning.sample_trials(space, 8, seed=3)
  assert first != tuning.sample_trials(space, 8, seed=4)
  # Prefix-stable: asking for more trials keeps the earlier ones.
  assert tuning.sample_trials(space, 20, seed=3)[:8] == first


def test_values_within_bounds_and_constants():
  space = tuning.parse_search_space(NADAMW_SPACE)
  trials = tuning.sample_trials(space, 200, seed=0)
  for trial in trials:
    assert list(trial) == list(NADAMW_SPACE)
    assert 1e-4 <= trial["learning_rate"] <= 1e-2
    assert 0.9 <= trial["beta2"] <= 0.999
    assert trial["warmup_factor"] == 0.05
    assert trial["label_smoothing"] in (0.1, 0.2)
  assert {t["dropout_rate"] for t in trials} == {0.0, 0.1}


def test_log_scaling_is_uniform_in_log_space():
  space = tuning.parse_search_space(
      {"lr": {"min": 1e-6, "max": 1.0, "scaling": "log"}}
  )
  lrs = np.array([t["lr"] for t in tuning.sample_trials(space, 1000, seed=0)])
  geometric_mean = 1e-3
  assert math.isclose(np.median(lrs), geometric_mean, rel_tol=0.05)
  # A tenth of the samples per decade, as log-uniform requires.
  counts, _ = np.histogram(np.log10(lrs), bins=6, range=(-6, 0))
  assert np.all(np.abs(counts - 1000 / 6) <= 2)


def test_linear_scaling_is_uniform():
  space = tuning.parse_search_space(
      {"x": {"min": -2.0, "max": 2.0, "scaling": "linear"}}
  )
  xs = np.array([t["x"] for t in tuning.sample_trials(space, 1000, seed=5)])
  assert abs(np.median(xs)) < 0.01


def test_feasible_points_are_picked_evenly():
  space = tuning.parse_search_space(
      {"opt": {"feasible_points": ["adam", "sgd", "lion"]}, "wd": {"feasible_points": [0, 1]}}
  )
  trials = tuning.sample_trials(space, 36, seed=1)
  for name, points in (("opt", ["adam", "sgd", "lion"]), ("wd", [0, 1])):
    counts = np.array([sum(t[name] == p for t in trials) for p in points])
    # Low discrepancy: within 1 of the ideal count (random picks stray ~3).
    assert np.all(np.abs(counts - 36 / len(points)) <= 1), (name, counts)


def test_constant_hyperparameters_do_not_take_a_halton_dimension():
  # With the constant skipped, "x" gets base 2 whether or not "c" is listed.
  with_constant = tuning.parse_search_space({
      "c": {"feasible_points": [1]},
      "x": {"min": 0.0, "max": 1.0, "scaling": "linear"},
      "flat": {"min": 3.0, "max": 3.0, "scaling": "linear"},
  })
  without = tuning.parse_search_space({"x": {"min": 0.0, "max": 1.0, "scaling": "linear"}})
  a = tuning.sample_trials(with_constant, 5, seed=0)
  b = tuning.sample_trials(without, 5, seed=0)
  assert [t["x"] for t in a] == [t["x"] for t in b]
  assert all(t["c"] == 1 and t["flat"] == 3.0 for t in a)
  only_constants = tuning.parse_search_space({"c": {"feasible_points": ["x"]}})
  assert tuning.sample_trials(only_constants, 2, seed=0) == [{"c": "x"}] * 2


@pytest.mark.parametrize("dim, base", [(0, 2), (1, 3), (2, 5)])
def test_halton_prefix_of_base_power_is_evenly_spaced(dim, base):
  # The first base**k points of a dimension are one per cell of width
  # base**-k; after the random shift they are exactly evenly spaced.
  n = base**3 if base < 5 else base**2
  points = tuning.halton_sequence(n, 3, seed=7)[:, dim]
  assert math.isclose(max_circular_gap(points), 1.0 / n, rel_tol=1e-9)


def test_halton_covers_the_square_better_than_random():
  n = 64
  halton = tuning.halton_sequence(n, 2, seed=0)
  grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 101)] * 2), -1).reshape(-1, 2)

  def dispersion(points):  # largest distance from any grid point to a sample
    return np.sqrt(((grid[:, None] - points[None]) ** 2).sum(-1)).min(1).max()

  for seed in range(5):
    uniform = np.random.default_rng(seed).random((n, 2))
    assert dispersion(halton) < dispersion(uniform)
    for dim in range(2):
      assert max_circular_gap(halton[:, dim]) < max_circular_gap(uniform[:, dim])


def test_high_dimensions_are_not_correlated():
  # Plain Halton in bases 29 and 31 gives nearly equal coordinates for the first
  # points; scrambling must break that.
  points = tuning.halton_sequence(30, 11, seed=0)
  correlation = np.corrcoef(points[:, 9], points[:, 10])[0, 1]
  assert abs(correlation) < 0.5


def test_fixed_list_in_order_and_too_few_points(tmp_path):
  space = tuning.load_search_space(write(tmp_path, FIXED_POINTS))
  assert tuning.sample_trials(space, 2, seed=0) == FIXED_POINTS[:2]
  assert tuning.sample_trials(space, None, seed=0) == FIXED_POINTS
  assert tuning.sample_trials(space, 3, seed=99) == FIXED_POINTS
  with pytest.raises(spec.UsageError, match="4 trials requested but the list has only 3"):
    tuning.sample_trials(space, 4, seed=0)


@pytest.mark.parametrize("num_trials, seed", [(0, 0), (-1, 0), (2.0, 0), (2, -1), (True, 0)])
def test_bad_counts_and_seeds(num_trials, seed):
  space = tuning.parse_search_space(NADAMW_SPACE)
  with pytest.raises(spec.UsageError):
    tuning.sample_trials(space, num_trials, seed)


def test_ranges_need_num_trials():
  space = tuning.parse_search_space(NADAMW_SPACE, source="s.json")
  with pytest.raises(spec.UsageError, match="s.json: num_trials is required"):
    tuning.sample_trials(space, None, 0)


def test_studies_are_disjoint_and_seeded():
  space = tuning.parse_search_space(NADAMW_SPACE)
  studies = tuning.sample_studies(space, num_studies=3, trials_per_study=5, seed=0)
  assert [len(s) for s in studies] == [5, 5, 5]
  learning_rates = [t["learning_rate"] for s in studies for t in s]
  assert len(set(learning_rates)) == 15
  assert sorted(learning_rates) == sorted(
      t["learning_rate"] for t in tuning.sample_trials(space, 15, seed=0)
  )
  assert studies == tuning.sample_studies(space, 3, 5, seed=0)
  assert studies != tuning.sample_studies(space, 3, 5, seed=1)


def test_studies_from_fixed_list_repeat_the_list():
  space = tuning.parse_search_space(FIXED_POINTS)
  assert tuning.sample_studies(space, 3, 2, seed=0) == [FIXED_POINTS[:2]] * 3
  with pytest.raises(spec.UsageError, match="only 3"):
    tuning.sample_studies(space, 3, 5, seed=0)


# ----- names and rulesets --------------------------------------------------------


def test_check_hparam_names():
  allowed = {"learning_rate", "weight_decay", "warmup_factor"}
  tuning.check_hparam_names({"learning_rate": 1.0}, allowed)
  tuning.check_hparam_names([], allowed)
  with pytest.raises(spec.UsageError) as info:
    tuning.check_hparam_names(
        ["learning_rte", "weight_decay", "zzz"], allowed, source="space.json"
    )
  message = str(info.value)
  assert "unknown hyperparameters in space.json" in message
  assert "'learning_rte' (did you mean 'learning_rate'?)" in message
  assert "'zzz'\n" in message
  assert "weight_decay'" not in message.split("allowed:")[0]


def test_rulesets():
  external, self_tuning = tuning.get_ruleset("external"), tuning.get_ruleset("self")
  assert external.max_runtime_sec(100.0) == 100.0
  assert self_tuning.max_runtime_sec(100.0) == 150.0
  assert (external.num_studies, external.trials_per_study) == (3, 5)
  assert self_tuning.trials_per_study == 1
  external.check_args("space.json")
  self_tuning.check_args(None, 1)
  with pytest.raises(spec.UsageError, match="needs a search space"):
    external.check_args(None)
  with pytest.raises(spec.UsageError, match="takes no search space"):
    self_tuning.check_args("space.json")
  with pytest.raises(spec.UsageError, match="1 trial per study"):
    self_tuning.check_args(None, 5)
  with pytest.raises(spec.UsageError, match="choose one of: external, self"):
    tuning.get_ruleset("internal")
