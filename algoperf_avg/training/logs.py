"""AlgoPerf-format logs, always written atomically.

Layout of one trial (the same as AlgoPerf's, so its tools read ours)::

    EXP/study_<k>/<workload_id>_jax/trial_<i>/
        eval_measurements.csv   one row per evaluation
        hparams.json            the trial's hyperparameters
        meta_data_<p>.json      workload, seed, versions, devices (p = preemption)
        flags_<p>.json          the command-line flags of that (re)start
        status.json             running / completed / diverged / failed

Every file is written to a temporary name in the same folder and renamed, so a
crash never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

FRAMEWORK = "jax"

# AlgoPerf's bookkeeping columns; metric columns ("train/loss", ...) follow.
TIME_COLUMNS = (
    "global_step",
    "preemption_count",
    "score",
    "accumulated_submission_time",
    "accumulated_eval_time",
    "accumulated_logging_time",
    "total_duration",
)
# Metrics of the online (non-averaged) weights, logged next to the averaged ones.
ONLINE_PREFIX = "validation_online/"


def trial_dir(experiment_dir: str, study: int, workload_id: str, trial: int) -> str:
  """``EXP/study_<study>/<workload_id>_jax/trial_<trial>`` (trials count from 1)."""
  return os.path.join(
      experiment_dir, f"study_{study}", f"{workload_id}_{FRAMEWORK}", f"trial_{trial}"
  )


def study_and_trial(log_dir: str) -> tuple[int, int]:
  """``(k, i)`` of a ``.../study_<k>/<workload>_jax/trial_<i>`` folder ((0, 1) otherwise)."""
  import re

  trial = re.fullmatch(r"trial_(\d+)", os.path.basename(os.path.normpath(log_dir)))
  study_dir = os.path.dirname(os.path.dirname(os.path.normpath(log_dir)))
  study = re.fullmatch(r"study_(\d+)", os.path.basename(study_dir))
  return (int(study.group(1)) if study else 0, int(trial.group(1)) if trial else 1)


def atomic_write_text(path: str, text: str) -> None:
  """Write ``text`` to ``path`` through a temporary file and a rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _json_default(value: Any) -> Any:
  if hasattr(value, "item"):  # numpy / jax scalars
    return value.item()
  if isinstance(value, (set, tuple)):
    return list(value)
  return str(value)


def write_json(path: str, obj: Any) -> None:
  """Atomically write ``obj`` as indented JSON (non-finite floats as null)."""
  text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=True, default=_json_default)
  atomic_write_text(path, text + "\n")


def _finite_or_none(obj: Any) -> Any:
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, Mapping):
    return {str(k): _finite_or_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite_or_none(v) for v in obj]
  return obj


def order_columns(columns: Sequence[str]) -> list[str]:
  """Bookkeeping columns first (AlgoPerf's order), then metrics alphabetically."""
  head = [c for c in TIME_COLUMNS if c in columns]
  return head + sorted(c for c in columns if c not in TIME_COLUMNS)


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
  """Rows as CSV text with the union of their columns (missing cells empty)."""
  columns = order_columns(sorted({k for row in rows for k in row}))
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _csv_cell(v) for k, v in row.items()})
  return out.getvalue()


def _csv_cell(value: Any) -> Any:
  if isinstance(value, float):
    return repr(value)  # full precision; nan/inf stay readable
  return value


class MetricsLogger:
  """A trial's rows, in AlgoPerf's two files, each rewritten atomically.

  ``eval_measurements.csv`` holds the evaluation rows; ``measurements.csv``
  every row: evaluations, what a submission logs through
  ``workload.metrics_logger.append_scalar_metrics`` (AlgoPerf's call), and a
  final ``score`` row when training ends. Rewriting a whole file per row costs
  microseconds at AlgoPerf's eval cadence and means a reader never sees a
  torn row.
  """

  def __init__(self, directory: str | None, rows: Sequence[Mapping[str, Any]] = ()):
    """``directory`` None keeps the rows in memory only."""
    self.directory = directory
    self.path = os.path.join(directory, "eval_measurements.csv") if directory else None
    self.all_path = os.path.join(directory, "measurements.csv") if directory else None
    self._rows: list[dict[str, Any]] = []
    self.all_rows: list[dict[str, Any]] = []
    self.rows = [dict(r) for r in rows]

  @property
  def rows(self) -> list[dict[str, Any]]:
    return self._rows

  @rows.setter
  def rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace the eval rows (a resume: the checkpoint's rows are the truth)."""
    self._rows = [dict(r) for r in rows]
    self.all_rows = [dict(r) for r in rows]

  def append(self, row: Mapping[str, Any]) -> None:
    """Add one evaluation row and persist both files."""
    self._rows.append(dict(row))
    self.all_rows.append(dict(row))
    if self.path:
      atomic_write_text(self.path, format_csv(self._rows))
      atomic_write_text(self.all_path, format_csv(self.all_rows))

  def append_scalar_metrics(self, metrics: Mapping[str, Any], global_step: int,
                            preemption_count: int | None = None,
                            is_eval: bool = False) -> None:
    """AlgoPerf's ``MetricLogger.append_scalar_metrics`` (for submissions)."""
    row = dict(metrics, global_step=global_step)
    if preemption_count is not None:
      row["preemption_count"] = preemption_count
    if is_eval:
      self.append(row)
      return
    self.all_rows.append(row)
    if self.all_path:
      atomic_write_text(self.all_path, format_csv(self.all_rows))

  def finish(self, score: float, global_step: int, preemption_count: int) -> None:
    """AlgoPerf's last row of ``measurements.csv``: the final score."""
    self.append_scalar_metrics({"score": score}, global_step, preemption_count)


def read_rows(path: str) -> list[dict[str, Any]]:
  """Read an eval_measurements.csv written by `MetricsLogger` (floats parsed)."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  parsed = []
  for row in rows:
    parsed.append({k: _parse_cell(v) for k, v in row.items() if v not in ("", None)})
  return parsed


def _parse_cell(text: str) -> Any:
  try:
    number = float(text)
  except ValueError:
    return text
  return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def _git_commit() -> str | None:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
    )
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() or None


def meta_data(workload, rng_seed: int, extra: Mapping[str, Any] | None = None) -> dict:
  """What AlgoPerf's meta_data.json records, plus the workload size."""
  import jax

  devices = jax.devices()
  meta = {
      "workload": workload.name,
      "workload_id": workload.workload_id,
      "size": workload.size,
      "workload_options": dict(getattr(workload, "option_values", {})),
      "num_params": workload.num_params,
      "rng_seed": rng_seed,
      "framework": FRAMEWORK,
      "jax_version": jax.__version__,
      "python_version": platform.python_version(),
      "platform": platform.platform(),
      "device_kind": devices[0].device_kind,
      "num_devices": len(devices),
      "num_processes": jax.process_count(),
      "git_commit": _git_commit(),
      "targets": dict(vars(workload.targets)),
  }
  meta.update(extra or {})
  return meta
