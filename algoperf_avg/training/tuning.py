"""Search spaces, quasi-random (Halton) trials, and the two tuning rulesets.

A search space is a JSON file in one of AlgoPerf's two formats:

* a dict of hyperparameter name -> ``{"min": x, "max": y, "scaling":
  "linear" | "log"}`` or ``{"feasible_points": [...]}``; trials are drawn from
  it with a scrambled Halton sequence (quasi-random search,
  https://arxiv.org/abs/1706.03200);
* a list of fixed points (each a dict name -> value), used in order.

Example:

  space = load_search_space("submissions/nadamw_search_space.json")
  studies = sample_studies(space, num_studies=3, trials_per_study=5, seed=0)
  for trial in studies[0]:
    hparams = spec.Hyperparameters(trial)

References: AlgoPerf ``algoperf/halton.py`` and ``docs/DOCUMENTATION.md``
(tuning rulesets); Bousquet et al., "Critical Hyper-Parameters: No Random, No
Cry", 2017.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from algoperf_avg import spec
from algoperf_avg.training.halton import halton_sequence

SCALINGS = ("linear", "log")
_RANGE_KEYS = frozenset({"min", "max", "scaling"})
_CHOICE_KEYS = frozenset({"feasible_points"})
# Tags that keep the Halton scrambling and the study assignment on separate
# random streams of the same seed.
_ASSIGN_STREAM = 1  # seed stream of the study assignment (halton.py uses 0)


@dataclasses.dataclass(frozen=True)
class Range:
  """A float hyperparameter drawn from ``[min, max]``, linearly or in log space."""

  name: str
  min: float
  max: float
  scaling: str

  def value(self, u: float) -> float:
    """Maps a quasi-random coordinate ``u`` in [0, 1) into the range."""
    if self.scaling == "log":
      value = self.min * math.exp(u * math.log(self.max / self.min))
    else:
      value = self.min + u * (self.max - self.min)
    # exp/log round-off can step just outside the bounds the user wrote.
    return min(max(value, self.min), self.max)

  @property
  def is_constant(self) -> bool:
    return self.min == self.max


@dataclasses.dataclass(frozen=True)
class Choice:
  """A hyperparameter drawn uniformly from a list of feasible points."""

  name: str
  feasible_points: tuple[Any, ...]

  def value(self, u: float) -> Any:
    """Picks the point whose equal-width cell of [0, 1) contains ``u``."""
    index = min(int(u * len(self.feasible_points)), len(self.feasible_points) - 1)
    return self.feasible_points[index]

  @property
  def is_constant(self) -> bool:
    return len(self.feasible_points) == 1


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A parsed search space: either `dimensions` or `fixed_points` is set.

  Attributes:
    source: where it came from (a file path), named in error messages.
    dimensions: ranges and choices, in file order (dict format).
    fixed_points: the trials themselves, in file order (list format).
  """

  source: str
  dimensions: tuple[Range | Choice, ...] = ()
  fixed_points: tuple[dict[str, Any], ...] | None = None

  @property
  def is_fixed(self) -> bool:
    return self.fixed_points is not None

  @property
  def names(self) -> tuple[str, ...]:
    """Hyperparameter names, in file order."""
    if self.fixed_points is not None:
      return tuple(self.fixed_points[0])
    return tuple(d.name for d in self.dimensions)


def _error(source: str, message: str) -> spec.UsageError:
  return spec.UsageError(f"search space {source}: {message}")


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_dimension(source: str, name: str, entry: Any) -> Range | Choice:
  where = f"hyperparameter {name!r}"
  if not isinstance(entry, dict):
    raise _error(source, f"{where} must be an object with min/max/scaling or "
                 f"feasible_points, got {json.dumps(entry)}")
  keys = set(entry)
  unknown = keys - _RANGE_KEYS - _CHOICE_KEYS
  if unknown:
    key = sorted(unknown)[0]
    close = difflib.get_close_matches(key, sorted(_RANGE_KEYS | _CHOICE_KEYS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _error(source, f"{where} has unknown key {key!r}{hint}")
  if "feasible_points" in keys:
    if keys & _RANGE_KEYS:
      raise _error(source, f"{where} mixes 'feasible_points' with min/max/"
                   "scaling; use one or the other")
    points = entry["feasible_points"]
    if not isinstance(points, list):
      raise _error(source, f"{where}: 'feasible_points' must be a list")
    if not points:
      raise _error(source, f"{where}: 'feasible_points' is empty")
    return Choice(name, tuple(points))
  missing = sorted(_RANGE_KEYS - keys)
  if missing:
    raise _error(source, f"{where} is missing {', '.join(map(repr, missing))}")
  low, high, scaling = entry["min"], entry["max"], entry["scaling"]
  for key, bound in (("min", low), ("max", high)):
    if not _is_number(bound) or not math.isfinite(bound):
      raise _error(source, f"{where}: {key!r} must be a finite number, got "
                   f"{json.dumps(bound)}")
  if scaling not in SCALINGS:
    raise _error(source, f"{where}: unknown scaling {scaling!r}; choose one of: "
                 f"{', '.join(SCALINGS)}")
  if low > high:
    raise _error(source, f"{where}: min ({low}) is greater than max ({high})")
  if scaling == "log" and low <= 0:
    raise _error(source, f"{where}: log scaling needs min > 0, got min={low}")
  return Range(name, float(low), float(high), scaling)


def _parse_fixed_points(source: str, points: list[Any]) -> SearchSpace:
  if not points:
    raise _error(source, "the list of fixed points is empty")
  names = None
  for index, point in enumerate(points):
    if not isinstance(point, dict):
      raise _error(source, f"point {index} must be an object of hyperparameter "
                   f"values, got {json.dumps(point)}")
    if not point:
      raise _error(source, f"point {index} has no hyperparameters")
    if names is None:
      names = set(point)
    elif set(point) != names:
      missing, extra = sorted(names - set(point)), sorted(set(point) - names)
      parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
          [f"extra {', '.join(map(repr, extra))}"] if extra else [])
      raise _error(source, f"point {index} has different hyperparameters from "
                   f"point 0: {'; '.join(parts)}")
  return SearchSpace(source, fixed_points=tuple(dict(p) for p in points))


def parse_search_space(data: Any, source: str = "<search space>") -> SearchSpace:
  """Validates already-decoded JSON (see `load_search_space`).

  Args:
    data: a dict (ranges and choices) or a list (fixed points).
    source: named in error messages.

  Returns:
    The parsed `SearchSpace`.

  Raises:
    spec.UsageError: naming `source` and the offending hyperparameter.
  """
  if isinstance(data, list):
    return _parse_fixed_points(source, data)
  if not isinstance(data, dict):
    raise _error(source, "must be a JSON object (name -> range or feasible "
                 f"points) or a list of fixed points, got {type(data).__name__}")
  if not data:
    raise _error(source, "has no hyperparameters")
  dimensions = tuple(_parse_dimension(source, k, v) for k, v in data.items())
  return SearchSpace(source, dimensions=dimensions)


def load_search_space(path: str | os.PathLike[str]) -> SearchSpace:
  """Reads and validates a search-space JSON file (AlgoPerf formats).

  Args:
    path: the JSON file.

  Returns:
    The parsed `SearchSpace`.

  Raises:
    spec.UsageError: the file is missing, unreadable, not valid JSON (with line
      and column), or not a valid search space (naming the hyperparameter).
  """
  source = os.fspath(path)
  try:
    with open(source, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise _error(source, "file not found") from None
  except IsADirectoryError:
    raise _error(source, "is a directory, not a JSON file") from None
  except (OSError, UnicodeDecodeError) as e:
    raise _error(source, f"cannot be read ({e})") from None
  try:
    # NaN/Infinity are not JSON; reject them here instead of sampling them.
    data = json.loads(text, parse_constant=_reject_constant)
  except json.JSONDecodeError as e:
    raise _error(source, f"invalid JSON at line {e.lineno}, column {e.colno}: "
                 f"{e.msg}") from None
  except ValueError as e:
    raise _error(source, str(e)) from None
  return parse_search_space(data, source)


def _reject_constant(name: str) -> Any:
  raise ValueError(f"{name} is not allowed in a search space")


# ----- trials ------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise spec.UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _fixed_trials(space: SearchSpace, num_trials: int) -> list[dict[str, Any]]:
  assert space.fixed_points is not None
  if num_trials > len(space.fixed_points):
    raise _error(space.source, f"{num_trials} trials requested but the list "
                 f"has only {len(space.fixed_points)} points")
  return [dict(p) for p in space.fixed_points[:num_trials]]


def sample_trials(
    space: SearchSpace, num_trials: int | None, seed: int
) -> list[dict[str, Any]]:
  """Hyperparameters for ``num_trials`` trials of one study.

  Ranges and choices are read from a scrambled Halton sequence: log ranges are
  uniform in log space, choices uniform over the feasible points. Only
  hyperparameters that can vary use a Halton dimension (one-point choices and
  ``min == max`` ranges are constants), so the low, best-spread bases go to
  the ones that matter. A list of fixed points is returned in order; asking for
  more trials than it has is an error rather than silently running fewer (as
  AlgoPerf does) or repeating points (which would waste trials).

  Args:
    space: from `load_search_space`.
    num_trials: positive; may be ``None`` for a fixed list (all its points).
    seed: non-negative int; same seed, same trials. Unused for fixed lists.

  Returns:
    One dict of hyperparameter name -> value per trial, keys in file order.

  Raises:
    spec.UsageError: bad ``num_trials``/``seed``, or too few fixed points.
  """
  if space.is_fixed:
    assert space.fixed_points is not None
    if num_trials is None:
      num_trials = len(space.fixed_points)
    _check_int("num_trials", num_trials)
    return _fixed_trials(space, num_trials)
  if num_trials is None:
    raise _error(space.source, "num_trials is required to sample a search "
                 "space of ranges (only a fixed list implies its own count)")
  _check_int("num_trials", num_trials)
  _check_int("seed", seed, minimum=0)
  varying = [d for d in space.dimensions if not d.is_constant]
  coordinates = halton_sequence(num_trials, len(varying), seed)
  column = {d.name: i for i, d in enumerate(varying)}
  trials = []
  for row in coordinates:
    trials.append({
        d.name: d.value(row[column[d.name]] if d.name in column else 0.0)
        for d in space.dimensions
    })
  return trials


def sample_studies(
    space: SearchSpace, num_studies: int, trials_per_study: int, seed: int
) -> list[list[dict[str, Any]]]:
  """Trials for several studies, as AlgoPerf's external-tuning scoring does.

  For ranges, ``num_studies * trials_per_study`` Halton points are drawn at
  once and randomly assigned to the studies, so no two studies share a point
  and the union covers the space evenly. A fixed list gives every study the
  same first ``trials_per_study`` points, in order (AlgoPerf: "sampled
  without replacement for each study").

  Args:
    space: from `load_search_space`.
    num_studies: positive.
    trials_per_study: positive.
    seed: non-negative int; same seed, same studies.

  Returns:
    ``num_studies`` lists of ``trials_per_study`` hyperparameter dicts.
  """
  _check_int("num_studies", num_studies)
  _check_int("trials_per_study", trials_per_study)
  if space.is_fixed:
    trials = _fixed_trials(space, trials_per_study)
    return [[dict(t) for t in trials] for _ in range(num_studies)]
  trials = sample_trials(space, num_studies * trials_per_study, seed)
  order = np.random.default_rng([seed, _ASSIGN_STREAM]).permutation(len(trials))
  return [
      [trials[i] for i in order[s * trials_per_study:(s + 1) * trials_per_study]]
      for s in range(num_studies)
  ]


def check_hparam_names(
    hparams: Iterable[str] | Mapping[str, Any],
    allowed: Iterable[str],
    source: str | None = None,
) -> None:
  """Rejects hyperparameter names a submission does not declare.

  Args:
    hparams: names, or a mapping whose keys are the names.
    allowed: the names the submission understands.
    source: where ``hparams`` came from (a file), named in the message.

  Raises:
    spec.UsageError: listing each unknown name with its closest allowed names.
  """
  allowed = sorted(set(allowed))
  unknown = [name for name in hparams if name not in allowed]
  if not unknown:
    return
  lines = []
  for name in unknown:
    close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    lines.append(f"  {name!r}{hint}")
  where = f" in {source}" if source else ""
  raise spec.UsageError(
      f"unknown hyperparameter{'s' if len(unknown) > 1 else ''}{where}:\n"
      + "\n".join(lines)
      + f"\nallowed: {', '.join(allowed) if allowed else '(none)'}"
  )


# ----- rulesets ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ruleset:
  """How a tuning ruleset runs (AlgoPerf ``docs/DOCUMENTATION.md``).

  Attributes:
    name: ``"external"`` or ``"self"``.
    budget_multiplier: scales each workload's ``max_runtime_sec``.
    uses_search_space: external tuning requires a search space; self-tuning
      forbids one (submissions may not expose hyperparameters).
    num_studies: independent studies per workload (the median is scored).
    trials_per_study: trials per study (the fastest is the study's score).
  """

  name: str
  budget_multiplier: float
  uses_search_space: bool
  num_studies: int
  trials_per_study: int

  def max_runtime_sec(self, workload_max_runtime_sec: float) -> float:
    """The time budget of one trial under this ruleset."""
    return self.budget_multiplier * workload_max_runtime_sec

  def check_args(
      self, search_space_path: str | None, trials_per_study: int | None = None
  ) -> None:
    """Raises `spec.UsageError` when the CLI arguments break this ruleset."""
    if self.uses_search_space and search_space_path is None:
      raise spec.UsageError(
          f"the {self.name} tuning ruleset needs a search space JSON file")
    if not self.uses_search_space and search_space_path is not None:
      raise spec.UsageError(
          f"the {self.name}-tuning ruleset takes no search space (submissions "
          f"may not expose hyperparameters); drop {search_space_path}")
    if (not self.uses_search_space and trials_per_study is not None
        and trials_per_study != 1):
      raise spec.UsageError(
          f"the {self.name}-tuning ruleset runs 1 trial per study, not "
          f"{trials_per_study}")


RULESETS: dict[str, Ruleset] = {
    "external": Ruleset("external", budget_multiplier=1.0,
                        uses_search_space=True, num_studies=3,
                        trials_per_study=5),
    "self": Ruleset("self", budget_multiplier=1.5, uses_search_space=False,
                    num_studies=3, trials_per_study=1),
}


def get_ruleset(name: str) -> Ruleset:
  """The `Ruleset` called ``name``, or `spec.UsageError` listing the choices."""
  try:
    return RULESETS[name]
  except KeyError:
    raise spec.UsageError(
        f"unknown tuning ruleset {name!r}; choose one of: "
        f"{', '.join(RULESETS)}") from None

