"""Preparing the Criteo 1TB click logs: day files -> line shards + a manifest.

The raw data is 24 tab-separated day files (``day_0`` ... ``day_23``, as
downloaded ``day_N.gz``). Like AlgoPerf's ``dataset_setup.py`` (which runs
``split -a 2 -d -l 5000000``), `setup_data` cuts every day into shards of
5,000,000 lines named ``day_<d>_<NN>`` (``NN`` from 00), so the prepared
folder is the one AlgoPerf reads. It also writes ``manifest.json`` with the
line count and byte size of every shard: the reader needs the counts to map a
position in a split to a file and a line without reading what comes before,
and the sizes let `data_problem` notice a truncated or replaced file cheaply.

A folder already prepared by AlgoPerf is indexed in place (one pass counting
newlines); raw day files are split while streaming, never held in memory.
Each day is written to a hidden folder and moved in when complete, and the
manifest is rewritten after every day, so an interrupted run resumes at the
first unfinished day.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import itertools
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from algoperf_avg import spec

NUM_DAYS = 24
LINES_PER_SHARD = 5_000_000
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_SHARD_PATTERN = re.compile(r"^day_(\d+)_(\d+)$")
_READ_BLOCK = 16 * 2**20
HOW_TO = (
    "prepare it once with: algoperf-avg setup-data criteo1tb --data_dir=DATA "
    "--manual_dir=RAW, where RAW holds the 24 day files (day_0.gz ... day_23.gz, "
    "or decompressed day_0 ... day_23) of the Criteo 1TB Click Logs; a folder "
    "already prepared by AlgoPerf's dataset_setup.py is indexed in place "
    "(omit --manual_dir)"
)


def shard_name(day: int, index: int) -> str:
  """``day_<day>_<index>`` with a two-digit index, as ``split -a 2 -d`` names it."""
  return f"day_{day}_{index:02d}"


def parse_shard_name(name: str) -> tuple[int, int] | None:
  """``(day, index)`` of a shard file name, or None for any other name."""
  match = _SHARD_PATTERN.match(name)
  return (int(match.group(1)), int(match.group(2))) if match else None


def count_lines(path: str) -> int:
  """Lines in a text file as a line reader sees them (a last line may lack ``\\n``)."""
  lines, last = 0, b"\n"
  with open(path, "rb") as f:
    while block := f.read(_READ_BLOCK):
      lines += block.count(b"\n")
      last = block[-1:]
  return lines + (last != b"\n")


def split_lines(
    lines: Iterable[bytes], directory: str, day: int, lines_per_shard: int
) -> dict[str, int]:
  """Writes ``lines`` as the shards of ``day`` into ``directory``.

  Returns:
    The line count of every shard written, by file name. A day without lines
    gets no shard.
  """
  if lines_per_shard < 1:
    raise ValueError(f"lines_per_shard must be positive, got {lines_per_shard}")
  counts = {}
  iterator = iter(lines)
  for index in itertools.count():
    chunk = list(itertools.islice(iterator, lines_per_shard))
    if not chunk:
      break
    name = shard_name(day, index)
    with open(os.path.join(directory, name), "wb") as f:
      f.writelines(chunk)
    counts[name] = len(chunk)
  return counts


def _raw_day_path(manual_dir: str, day: int) -> str | None:
  for name in (f"day_{day}.gz", f"day_{day}", f"day_{day}.csv"):
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return path
  return None


def _open_raw(path: str) -> IO[bytes]:
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _existing_shards(data_dir: str, day: int) -> list[str]:
  names = [n for n in os.listdir(data_dir) if (parse_shard_name(n) or (-1,))[0] == day]
  return sorted(names, key=lambda n: parse_shard_name(n)[1])


def _prepare_day(
    data_dir: str, manual_dir: str | None, day: int, lines_per_shard: int
) -> dict[str, dict[str, int]]:
  """Shards of one day (split from the raw file, or indexed in place)."""
  raw = _raw_day_path(manual_dir, day) if manual_dir else None
  if raw is None:
    names = _existing_shards(data_dir, day)
    counts = {name: count_lines(os.path.join(data_dir, name)) for name in names}
    indices = [parse_shard_name(n)[1] for n in names]
    short = [n for n in names[:-1] if counts[n] != lines_per_shard]
    if indices != list(range(len(names))) or short:
      raise spec.UsageError(
          f"criteo1tb: the shards of day {day} in {data_dir!r} are not numbered "
          f"00, 01, ... with {lines_per_shard:,} lines each but the last (e.g. "
          f"{(short or names)[0]}); split the raw day again; {HOW_TO}")
  else:
    for name in _existing_shards(data_dir, day):  # a stale, unindexed copy
      os.remove(os.path.join(data_dir, name))
    partial = os.path.join(data_dir, f".partial_day_{day}")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with _open_raw(raw) as f:
      counts = split_lines(f, partial, day, lines_per_shard)
    for name in counts:
      os.replace(os.path.join(partial, name), os.path.join(data_dir, name))
    os.rmdir(partial)
  return {
      name: {"lines": lines, "bytes": os.path.getsize(os.path.join(data_dir, name))}
      for name, lines in counts.items()
  }


def read_manifest(data_dir: str) -> dict[str, Any] | None:
  """The manifest of a prepared folder, or None when there is none."""
  path = os.path.join(data_dir, MANIFEST_NAME)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("format") != MANIFEST_FORMAT:
    return None
  return manifest


def write_manifest(
    data_dir: str, shards: Mapping[str, Mapping[str, int]], **extra: Any
) -> None:
  """Writes (atomically) the manifest of ``shards`` ``{name: {lines, bytes}}``."""
  ordered = dict(sorted(shards.items(), key=lambda item: parse_shard_name(item[0])))
  manifest = {"format": MANIFEST_FORMAT, **extra, "shards": ordered}
  temporary = os.path.join(data_dir, f".{MANIFEST_NAME}.tmp")
  with open(temporary, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(temporary, os.path.join(data_dir, MANIFEST_NAME))


def _day_is_indexed(data_dir: str, shards: Mapping[str, Mapping[str, int]],
                    day: int) -> bool:
  names = [n for n in shards if parse_shard_name(n)[0] == day]
  return bool(names) and all(
      os.path.isfile(p := os.path.join(data_dir, n))
      and os.path.getsize(p) == shards[n]["bytes"]
      for n in names
  )


def setup_data(
    data_dir: str,
    manual_dir: str | None = None,
    *,
    lines_per_shard: int = LINES_PER_SHARD,
    days: Sequence[int] = range(NUM_DAYS),
    num_workers: int = 1,
) -> str:
  """Prepares (or indexes) the Criteo 1TB shards in ``data_dir``; returns it.

  Args:
    data_dir: the dataset folder (``DATA/criteo1tb``), created if missing.
    manual_dir: folder holding the raw day files ``day_<d>.gz`` (or
      decompressed ``day_<d>`` / ``day_<d>.csv``); None indexes shards that
      are already in ``data_dir``.
    lines_per_shard: lines per shard (AlgoPerf: 5,000,000; the split into
      validation and test depends on it).
    days: the days to prepare (all 24 by default).
    num_workers: days processed in parallel (processes).

  Raises:
    spec.UsageError: a day is neither in ``manual_dir`` nor already sharded
      in ``data_dir``.
  """
  manifest = read_manifest(data_dir)
  shards = dict(manifest["shards"]) if manifest else {}
  if manifest and manifest.get("lines_per_shard") != lines_per_shard:
    shards = {}  # a different layout: index everything again
  todo = [d for d in days if not _day_is_indexed(data_dir, shards, d)]
  missing = [
      d for d in todo
      if not (manual_dir and _raw_day_path(manual_dir, d))
      and not (os.path.isdir(data_dir) and _existing_shards(data_dir, d))
  ]
  if missing:
    where = f"in {manual_dir!r}" if manual_dir else "(no --manual_dir given)"
    raise spec.UsageError(
        f"criteo1tb: no raw file {where} and no shards in {data_dir!r} for days "
        f"{missing}; {HOW_TO}")
  os.makedirs(data_dir, exist_ok=True)  # only once there is something to write
  def record(day: int, day_shards: Mapping[str, Mapping[str, int]]) -> None:
    nonlocal shards
    shards = {n: v for n, v in shards.items() if parse_shard_name(n)[0] != day}
    shards.update(day_shards)
    write_manifest(data_dir, shards, lines_per_shard=lines_per_shard)

  if num_workers <= 1:
    for day in todo:
      record(day, _prepare_day(data_dir, manual_dir, day, lines_per_shard))
  else:
    # Spawned, not forked: the caller may hold JAX or TensorFlow threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, context) as pool:
      futures = {
          pool.submit(_prepare_day, data_dir, manual_dir, d, lines_per_shard): d
          for d in todo
      }
      for future in concurrent.futures.as_completed(futures):
        record(futures[future], future.result())
  write_manifest(data_dir, shards, lines_per_shard=lines_per_shard)
  return data_dir
