"""Reading AlgoPerf-format experiment logs for the scorer and the plots.

Layout (AlgoPerf's; ours is the same with framework ``jax``)::

    EXP/<submission>/study_<k>/<workload>_<framework>/trial_<i>/eval_measurements.csv

``EXP`` may be a folder of submissions (e.g. the leaderboard archive's
``algoperf_v05/logs/external_tuning``), one submission's folder (it holds the
``study_*`` folders), any folder above one such level, or a ``.tar.xz`` /
``.tar.gz`` archive, optionally followed by a path inside it
(``logs.tar.xz/algoperf_v05/logs/external_tuning``). Workload folders are
split on their *last* underscore, so ``ogbg_small_jax`` is workload
``ogbg_small``.

Only the columns the scorer and plots need are parsed, with the csv module:
AlgoPerf's ~4,400 leaderboard trials read in about a second this way, where
one pandas frame per file takes far longer. A file that is empty, ragged,
cut short (no final newline) or holds a non-number raises `spec.UsageError`
naming the file; empty cells and ``nan`` are NaN (AlgoPerf logs a diverged
metric as an empty cell). Folders that are not part of the layout (e.g. a
stray ``study_0/trial_1``) are skipped and listed in `Experiment.notes`.

The archive's folder names also say which rules apply: `infer_version` and
`infer_ruleset` read ``algoperf_v05`` and ``self_tuning`` from a path.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from algoperf_avg import spec
from algoperf_avg import targets as targets_lib

EVAL_FILE = "eval_measurements.csv"
FRAMEWORKS = ("jax", "pytorch")
ONLINE_PREFIX = "validation_online/"
_STUDY = re.compile(r"study_\d+$")
_TRIAL = re.compile(r"trial_\d+$")
_ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar.bz2", ".tar")


@dataclasses.dataclass
class Trial:
  """One trial's evaluations (the columns the scorer and plots use)."""

  submission: str
  study: str  # "study_0"
  workload: str  # workload id without framework, e.g. "ogbg_small"
  framework: str
  trial: str  # "trial_1"
  path: str  # where the CSV was read from (for messages and the plots' CSVs)
  global_step: np.ndarray
  seconds: np.ndarray  # AlgoPerf's `score` column (accumulated_submission_time)
  metric: np.ndarray  # validation/<target metric>
  online_metric: np.ndarray | None  # validation_online/<target metric>
  diverged: bool


@dataclasses.dataclass
class Experiment:
  """All trials under one folder of submissions."""

  root: str
  trials: list[Trial]
  notes: list[str]



def read_experiment(exp_dir: str) -> Experiment:
  """Read every trial under ``exp_dir`` (a folder or an archive, see module doc).

  Raises:
    spec.UsageError: no trials found, several folders of submissions under
      ``exp_dir`` (the message lists them), a workload without a targets row,
      or a malformed CSV.
  """
  by_root, skipped = _collect(exp_dir)
  if len(by_root) > 1:
    shown = ", ".join(_join(exp_dir, root) for root in sorted(by_root))
    raise spec.UsageError(
        f"{exp_dir}: holds several folders of submissions; score one of: {shown}")
  return _parse(exp_dir, by_root, skipped)[0]


def read_experiments(path: str) -> list[Experiment]:
  """Every folder of submissions under ``path``, read in one pass.

  One pass matters for archives: the leaderboard archive holds four
  leaderboards and is decompressed once, not once per leaderboard.

  Raises:
    spec.UsageError: as `read_experiment`, except for several folders.
  """
  return _parse(path, *_collect(path))


def _collect(path: str) -> tuple[dict[str, list], list[tuple[str, str, str]]]:
  """Eval files under ``path`` grouped by their folder of submissions."""
  archive, inner = _split_archive_path(path)
  if archive is not None:
    sources = _archive_sources(archive, inner)
  elif os.path.isdir(path):
    sources = _folder_sources(path)
  else:
    raise spec.UsageError(f"{path}: no such folder or archive")
  skipped: list[tuple[str, str, str]] = []  # (relative path, path, reason)
  by_root: dict[str, list] = {}
  for rel_path, where, read in sources:
    loc = _locate(rel_path, path)
    if isinstance(loc, str):
      skipped.append((rel_path, where, loc))
    else:
      by_root.setdefault(loc[0], []).append((loc, where, read))
  if not by_root:
    raise spec.UsageError(
        f"{path}: no trials found (expected "
        f"<submission>/study_<k>/<workload>_<framework>/trial_<i>/{EVAL_FILE})")
  return by_root, skipped


def _parse(path: str, by_root: dict[str, list], skipped: list[tuple[str, str, str]]
           ) -> list[Experiment]:
  experiments = []
  for root, located in sorted(by_root.items()):
    trials = []
    unknown: dict[str, list[str]] = {}
    for (_, submission, study, workload, framework, trial), where, read in located:
      try:
        row = targets_lib.get(workload)
      except KeyError:
        # A workload the targets table does not know (another harness's, a
        # variant of ours): named in the notes, not a reason to fail the rest.
        unknown.setdefault(workload, []).append(where)
        continue
      columns = parse_eval_csv(read(), where, row.metric)
      trials.append(Trial(
          submission=submission, study=study, workload=workload,
          framework=framework, trial=trial, path=where, **columns))
    mine = [(w, why) for rel, w, why in skipped if not root or rel.startswith(root + "/")]
    mine += [(where, f"unknown workload {name!r} (no targets for it)")
             for name, wheres in sorted(unknown.items()) for where in wheres]
    experiments.append(Experiment(root=_join(path, root), trials=trials,
                                  notes=_skip_notes(mine)))
  return experiments


def _join(path: str, root: str) -> str:
  return os.path.join(path, root) if root else path


def _skip_notes(skipped: list[tuple[str, str]]) -> list[str]:
  """One line per reason: how many files, and the first of them."""
  by_reason: dict[str, list[str]] = {}
  for where, reason in skipped:
    by_reason.setdefault(reason, []).append(where)
  return [f"skipped {len(paths)} file(s), {reason}: {paths[0]}"
          + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
          for reason, paths in by_reason.items()]


def infer_version(path: str) -> str | None:
  """"v0.5" for a path through an ``algoperf_v05`` folder (the archive's layout)."""
  for part in re.split(r"[\\/]", path):
    match = re.fullmatch(r"algoperf_v(\d)(\d)", part)
    if match:
      return f"v{match[1]}.{match[2]}"
  return None


def infer_ruleset(path: str) -> str:
  """"self" for a path through a ``self_tuning`` folder, else "external"."""
  return "self" if "self_tuning" in re.split(r"[\\/]", path) else "external"


def parse_eval_csv(text: str, where: str, metric: str) -> dict:
  """Parse one eval_measurements.csv into the `Trial` column arrays.

  Args:
    text: the file's contents.
    where: its path, for error messages.
    metric: the target metric name (``validation/<metric>`` is read).

  Returns:
    Keyword arguments ``global_step, seconds, metric, online_metric, diverged``.

  Raises:
    spec.UsageError: empty, ragged, cut short, missing columns or non-numbers.
  """
  if not text.strip():
    raise spec.UsageError(f"{where}: empty file (truncated log?)")
  if not text.endswith("\n"):
    raise spec.UsageError(f"{where}: last line is cut short (truncated log?)")
  reader = csv.reader(io.StringIO(text))
  header = next(reader)
  rows = list(reader)
  index = {name: i for i, name in enumerate(header)}
  time_column = "score" if "score" in index else "accumulated_submission_time"
  metric_column = f"validation/{metric}"
  online_column = f"{ONLINE_PREFIX}{metric}"
  missing = [c for c in ("global_step", time_column) if c not in index]
  if missing:
    raise spec.UsageError(
        f"{where}: missing column(s) {', '.join(missing)}; has {', '.join(header)}")
  for line_no, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise spec.UsageError(
          f"{where}: line {line_no} has {len(row)} fields, the header "
          f"{len(header)} (truncated or malformed CSV)")
  cells = list(zip(*rows, strict=True)) if rows else [()] * len(header)
  wanted = ["global_step", time_column, metric_column, online_column, "diverged"]
  values = {c: _column(cells[index[c]], where, c) for c in wanted if c in index}
  diverged = bool(np.any(values["diverged"] == 1)) if "diverged" in values else False
  if metric_column not in values and not diverged and rows:
    raise spec.UsageError(
        f"{where}: no column {metric_column} (wrong workload folder name?); "
        f"has {', '.join(header)}")
  for column in ("global_step", time_column):
    if np.isnan(values[column]).any():
      raise spec.UsageError(f"{where}: empty or NaN cell in column {column}")
  return dict(
      global_step=values["global_step"],
      seconds=values[time_column],
      metric=values.get(metric_column, np.full(len(rows), np.nan)),
      online_metric=values.get(online_column),
      diverged=diverged,
  )


def _column(texts: tuple[str, ...], where: str, column: str) -> np.ndarray:
  """Cells as floats (empty = NaN); numpy parses a whole column at once."""
  try:
    return np.array([t or "nan" for t in texts], dtype=float)
  except ValueError:
    for line_no, text in enumerate(texts, start=2):
      _number(text, where, line_no, column)
    raise  # unreachable: some cell failed above


def _number(text: str, where: str, line_no: int, column: str) -> float:
  if text == "":
    return math.nan
  try:
    return float(text)
  except ValueError:
    raise spec.UsageError(
        f"{where}: line {line_no}, column {column}: {text!r} is not a number") from None


def _locate(rel_path: str, exp_dir: str) -> tuple | str:
  """``(root, submission, study, workload, framework, trial)`` or why not."""
  parts = rel_path.split("/")
  studies = [i for i, p in enumerate(parts) if _STUDY.match(p)]
  if len(parts) < 4 or not studies or studies[-1] != len(parts) - 4:
    return "not in a <submission>/study_<k>/<workload>_<framework>/trial_<i>/ folder"
  s = studies[-1]
  folder, trial = parts[s + 1], parts[s + 2]
  workload, _, framework = folder.rpartition("_")
  if framework not in FRAMEWORKS or not workload:
    return f"{folder!r} is not <workload>_<framework> ({'/'.join(FRAMEWORKS)})"
  if not _TRIAL.match(trial):
    return f"{trial!r} is not trial_<i>"
  if s > 0:
    root, submission = "/".join(parts[: s - 1]), parts[s - 1]
  else:  # exp_dir is one submission's folder
    root, submission = "", os.path.basename(os.path.normpath(exp_dir))
  return root, submission, parts[s], workload, framework, trial


Source = tuple[str, str, Callable[[], str]]  # (relative path, path, reader)


def _folder_sources(exp_dir: str) -> Iterator[Source]:
  """(path relative to exp_dir, path, reader) of every eval file below it."""
  for folder, subfolders, files in os.walk(exp_dir):
    subfolders.sort()
    if EVAL_FILE in files:
      path = os.path.join(folder, EVAL_FILE)
      rel = os.path.relpath(path, exp_dir).replace(os.sep, "/")
      yield rel, path, _file_reader(path)


def _file_reader(path: str):
  def read() -> str:
    try:
      with open(path, newline="", encoding="utf-8") as f:
        return f.read()
    except (OSError, UnicodeDecodeError) as e:
      raise spec.UsageError(f"{path}: unreadable ({e})") from None
  return read


def _split_archive_path(path: str) -> tuple[str | None, str]:
  """Split ``x.tar.xz/inner/path`` into the archive and the inner path."""
  probe = os.path.normpath(path)
  inner: list[str] = []
  while probe and probe != os.path.dirname(probe):
    if os.path.isfile(probe):
      if probe.endswith(_ARCHIVE_SUFFIXES) and tarfile.is_tarfile(probe):
        return probe, "/".join(reversed(inner))
      return None, ""
    if os.path.isdir(probe):
      return None, ""
    inner.append(os.path.basename(probe))
    probe = os.path.dirname(probe)
  return None, ""


def _archive_sources(archive: str, inner: str) -> Iterable[Source]:
  """Eval files inside ``archive`` below ``inner``, read in one pass."""
  prefix = inner.strip("/") + "/" if inner.strip("/") else ""
  found = []
  try:
    # Streaming mode ("r|*") decompresses once, front to back.
    with tarfile.open(archive, "r|*") as tar:
      for member in tar:
        name = member.name[2:] if member.name.startswith("./") else member.name
        if not member.isfile() or not name.startswith(prefix):
          continue
        if not name.endswith("/" + EVAL_FILE):
          continue
        data = tar.extractfile(member).read()
        where = f"{archive}/{name}"
        found.append((name[len(prefix):], where, _bytes_reader(data, where)))
  except (tarfile.TarError, EOFError, OSError) as e:
    raise spec.UsageError(f"{archive}: unreadable archive ({e})") from None
  found.sort(key=lambda item: item[0])
  return found


def _bytes_reader(data: bytes, where: str):
  def read() -> str:
    try:
      return data.decode("utf-8")
    except UnicodeDecodeError:
      raise spec.UsageError(f"{where}: not UTF-8 text") from None
  return read
