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


def json_round_trip(obj: Any) -> Any:
  """``obj`` as `write_json` stores it and `json.load` reads it back."""
  return json.loads(json.dumps(_finite_or_none(obj), default=_json_default))


def completed_with(log_dir: str, hparams: Mapping[str, Any]) -> bool:
  """Whether ``log_dir`` holds a trial that completed with exactly ``hparams``
  (its status.json and hparams.json); unreadable files count as no."""
  try:
    with open(os.path.join(log_dir, "status.json")) as f:
      status = json.load(f)
    with open(os.path.join(log_dir, "hparams.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return False
  return status.get("status") == "completed" and saved == json_round_trip(dict(hparams))


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


def _command(*args: str, cwd: str | None = None) -> str | None:
  """A command's stripped stdout, or None when it is missing, fails or hangs."""
  try:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return (out.stdout.strip() or None) if out.returncode == 0 else None


def _git(*args: str) -> str | None:
  """``git ARGS`` in this package's checkout (None outside one)."""
  return _command("git", *args, cwd=os.path.dirname(os.path.abspath(__file__)))


def _git_commit() -> str | None:
  return _git("rev-parse", "HEAD")


# Attributes AlgoPerf's logger leaves out of the ``workload.*`` keys, and ours
# that are costly or belong to the running trial.
_SKIPPED_WORKLOAD_ATTRIBUTES = frozenset(
    {"param_shapes", "model_params_types", "evaluator", "metrics_logger"})


def workload_properties(workload) -> dict[str, Any]:
  """``workload.<name>`` for every public attribute that is a number, string or bool.

  The same selection as AlgoPerf's ``meta_data.json`` (its ``workload.*``
  keys: targets, budgets, example counts). AlgoPerf's workloads hold their
  model sizes as attributes (``workload.latent_dim``); ours keep them in the
  size's config, whose fields are listed the same way. An attribute that
  raises is left out.
  """
  import dataclasses

  values: dict[str, Any] = {}
  config = getattr(workload, "config", None)
  if dataclasses.is_dataclass(config):
    values.update({f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
  for name in dir(workload):
    if name.startswith("_") or name in _SKIPPED_WORKLOAD_ATTRIBUTES:
      continue
    try:
      values[name] = getattr(workload, name)
    except Exception:  # e.g. a size without that split or config field
      continue
  return {f"workload.{name}": value for name, value in sorted(values.items())
          if isinstance(value, (bool, int, float, str))}


def nvidia_gpus() -> list[dict[str, Any]]:
  """One dict per NVIDIA GPU from ``nvidia-smi`` ([] without one), as GPUtil reads them."""
  fields = ("index", "name", "driver_version", "utilization.gpu", "memory.total",
            "memory.used", "memory.free", "temperature.gpu")
  out = _command("nvidia-smi", f"--query-gpu={','.join(fields)}",
                 "--format=csv,noheader,nounits")
  gpus = []
  for line in (out or "").splitlines():
    cells = [c.strip() for c in line.split(",")]
    if len(cells) != len(fields):
      continue
    gpu = dict(zip(fields, cells, strict=True))
    for key in fields[3:]:
      try:
        gpu[key] = float(gpu[key])
      except ValueError:  # "[N/A]" on some boards
        gpu[key] = math.nan
    gpus.append(gpu)
  return gpus


def _gpu_utilization(gpus: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """AlgoPerf's ``gpu.*`` keys: per GPU and averaged (memory in MB, util in [0, 1])."""
  if not gpus:
    return {}
  per_gpu = {}
  for gpu in gpus:
    total = gpu["memory.total"]
    per_gpu[gpu["index"]] = {
        "compute.util": gpu["utilization.gpu"] / 100,
        "mem.util": gpu["memory.used"] / total if total else math.nan,
        "mem.total": total,
        "mem.used": gpu["memory.used"],
        "mem.free": gpu["memory.free"],
        "temp.current": gpu["temperature.gpu"],
    }
  util: dict[str, Any] = {"gpu.count": len(gpus)}
  for index, values in per_gpu.items():
    util.update({f"gpu.{index}.{k}": v for k, v in values.items()})
  for key in next(iter(per_gpu.values())):
    util[f"gpu.avg.{key}"] = sum(v[key] for v in per_gpu.values()) / len(gpus)
  return util


def _cpu_model_name() -> str | None:
  for line in (_command("lscpu") or "").splitlines():
    if line.startswith("Model name:"):
      return line.split(":", 1)[1].strip()
  return platform.processor() or None


def system_info() -> dict[str, Any]:
  """AlgoPerf's utilization, hardware and software keys of ``meta_data.json``.

  CPU, memory, disk and network counters (psutil); ``gpu.*``, ``gpu_model_name``,
  ``gpu_count`` and ``gpu_driver`` only when ``nvidia-smi`` lists a GPU, as
  AlgoPerf's logger. A counter the system does not offer is None.
  """
  import psutil

  def counter(read, field):
    try:
      value = read()
    except (OSError, RuntimeError, NotImplementedError):
      return None
    return getattr(value, field, None)

  memory = psutil.virtual_memory()
  info: dict[str, Any] = {
      "cpu.util.avg_percent_since_last": psutil.cpu_percent(interval=None),
      "cpu.freq.current": counter(psutil.cpu_freq, "current"),
      "mem.total": memory.total,
      "mem.available": memory.available,
      "mem.used": memory.used,
      "mem.percent_used": memory.percent,
      # AlgoPerf's names for the disk counters.
      "mem.read_bytes_since_boot": counter(psutil.disk_io_counters, "read_bytes"),
      "mem.write_bytes_since_boot": counter(psutil.disk_io_counters, "write_bytes"),
      "net.bytes_sent_since_boot": counter(psutil.net_io_counters, "bytes_sent"),
      "net.bytes_recv_since_boot": counter(psutil.net_io_counters, "bytes_recv"),
      "os_platform": platform.platform(),
      "python_version": platform.python_version(),
      "python_compiler": platform.python_compiler(),
      "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
      "git_commit_hash": _git_commit(),
      "cpu_model_name": _cpu_model_name(),
      "cpu_count": psutil.cpu_count(),
  }
  gpus = nvidia_gpus()
  info.update(_gpu_utilization(gpus))
  if gpus:
    info.update({"gpu_model_name": gpus[0]["name"], "gpu_count": len(gpus),
                 "gpu_driver": gpus[0]["driver_version"]})
  return info


def meta_data(workload, rng_seed: int, extra: Mapping[str, Any] | None = None) -> dict:
  """AlgoPerf's meta_data.json keys, plus ours (size, options, targets, devices).

  AlgoPerf's: the ``workload.*`` properties (`workload_properties`), the
  system's (`system_info`) and ``rng_seed``.
  """
  import jax

  devices = jax.devices()
  meta = workload_properties(workload)
  meta.update(system_info())
  meta.update({
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
  })
  meta.update(extra or {})
  return meta
