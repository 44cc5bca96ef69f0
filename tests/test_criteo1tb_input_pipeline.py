"""Tests of the Criteo 1TB TSV pipeline on small day files in the real format.

The test writes raw day files (some gzipped, as downloaded), prepares them
with `prepare.setup_data` into 3-line shards (the real data has 5M-line
shards; the split rules only count shards) and reads them with the real
reader. The first dense value of every line is a unique id ``1000 * day +
line``, so order and coverage can be checked on parsed batches.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import numpy as np
import pytest

from algoperf_avg import spec
from workloads.criteo1tb import input_pipeline, prepare

LINES_PER_SHARD = 3
EVAL_DAY_LINES = 36 * LINES_PER_SHARD - 1  # 36 shards, the last one short


def _day_lines(day: int) -> int:
  return EVAL_DAY_LINES if day == 23 else 4 + day % 5


def _line(day: int, index: int, rng: np.random.Generator) -> str:
  dense = [str(1000 * day + index)] + [
      str(rng.integers(-2, 50)) if rng.random() < 0.8 else "" for _ in range(12)]
  categorical = [f"{rng.integers(0, 2**32):08x}" if rng.random() < 0.9 else ""
                 for _ in range(26)]
  return "\t".join([str(int(rng.random() < 0.3)), *dense, *categorical]) + "\n"


def _write_raw(raw_dir: str) -> dict[int, list[str]]:
  rng = np.random.default_rng(0)
  os.makedirs(raw_dir, exist_ok=True)
  days = {}
  for day in range(24):
    lines = [_line(day, i, rng) for i in range(_day_lines(day))]
    if day % 2:
      with gzip.open(os.path.join(raw_dir, f"day_{day}.gz"), "wt") as f:
        f.writelines(lines)
    else:
      with open(os.path.join(raw_dir, f"day_{day}"), "w") as f:
        f.writelines(lines)
    days[day] = lines
  return days


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("criteo")
  days = _write_raw(str(root / "raw"))
  data_dir = prepare.setup_data(str(root / "criteo1tb"), str(root / "raw"),
                                lines_per_shard=LINES_PER_SHARD)
  return data_dir, days


def _ids(batches) -> list[int]:
  return [int(i) for b in batches for i in np.rint(np.expm1(b["inputs"][:, 0]))]


def _train_ids(data_dir: str, batch_size: int, num_batches: int, **kwargs) -> list[int]:
  batches = input_pipeline.train_batches(data_dir, batch_size, **kwargs)
  return _ids(next(batches) for _ in range(num_batches))


def _all_train_ids() -> list[int]:
  return [1000 * d + i for d in range(23) for i in range(_day_lines(d))]


# ----- parsing -------------------------------------------------------------------


def test_parse_matches_algoperf_golden_values():
  # AlgoPerf's input_pipeline._parse_example_fn gave exactly these values.
  categorical = ["68fd1e64", "", "0b153874", "68fd1e64"] + [
      f"{i * 2654435761 % 2**32:08x}" for i in range(22)]
  line = "\t".join(["1", "5", "-1", "", "0", "-2", "100000", "3"] + ["7"] * 6
                   + categorical)
  empty = "\t".join(["0"] + [""] * 39)
  batch = input_pipeline.parse_tsv([line, empty])
  assert batch["inputs"].shape == (2, 39) and batch["inputs"].dtype == np.float32
  np.testing.assert_array_equal(batch["targets"], [1, 0])
  np.testing.assert_array_equal(batch["weights"], [1, 1])
  # log(relu(x) + 1), with empty and -1 read as 0.
  np.testing.assert_allclose(
      batch["inputs"][0, :13],
      np.log(np.maximum([5, 0, 0, 0, -2, 100000, 3] + [7] * 6, 0) + 1.0), rtol=1e-6)
  assert not batch["inputs"][1, :13].any()
  np.testing.assert_array_equal(batch["inputs"][:, 13:].astype(np.int64), [
      [6734129, 10351, 5201, 4667, 19695, 0, 3690, 162, 24, 1066772, 2436819,
       355697, 9, 777, 9718, 63, 0, 477, 13, 10761894, 18426088, 23795454,
       67907, 1484, 93, 28],
      [16124033, 10351, 4188, 7307, 19695, 0, 6670, 378, 5, 27691836, 1866611,
       184436, 4, 202, 10577, 64, 3, 387, 9, 13392961, 5775802, 11306799,
       361450, 6860, 42, 8],
  ])
  # The same token in columns 0 and 3 gets two ids; an empty field is hashed
  # as "00000000" (column 4 holds it literally in the first line); the id
  # 18,426,089 of column 20 is rounded to float32, as in AlgoPerf.
  assert batch["inputs"][0, 13] != batch["inputs"][0, 16]
  assert batch["inputs"][0, 17] == batch["inputs"][1, 17]


def test_pad_values_cover_the_batch():
  assert set(input_pipeline.PAD_VALUES) == {"inputs", "targets", "weights"}
  assert input_pipeline.PAD_VALUES["weights"] == 0


# ----- preparing -------------------------------------------------------------------


def test_setup_data_cuts_days_into_numbered_shards(prepared):
  data_dir, days = prepared
  manifest = prepare.read_manifest(data_dir)
  assert manifest["lines_per_shard"] == LINES_PER_SHARD
  shards = manifest["shards"]
  assert len([n for n in shards if n.startswith("day_23_")]) == 36
  assert list(shards)[:3] == ["day_0_00", "day_0_01", "day_1_00"]
  assert shards["day_23_35"]["lines"] == 2
  for day, lines in days.items():
    names = [prepare.shard_name(day, i)
             for i in range(-(-len(lines) // LINES_PER_SHARD))]
    text = ""
    for name in names:
      with open(os.path.join(data_dir, name)) as f:
        text += f.read()
      assert shards[name]["bytes"] == os.path.getsize(os.path.join(data_dir, name))
    assert text == "".join(lines)
  assert sorted(os.listdir(data_dir)) == sorted([*shards, prepare.MANIFEST_NAME])


def test_setup_data_is_resumable_and_indexes_algoperf_folders(prepared, tmp_path):
  data_dir, _ = prepared
  before = {n: os.stat(os.path.join(data_dir, n)).st_mtime_ns for n in os.listdir(data_dir)
            if n != prepare.MANIFEST_NAME}
  prepare.setup_data(data_dir, None, lines_per_shard=LINES_PER_SHARD)  # nothing to do
  after = {n: os.stat(os.path.join(data_dir, n)).st_mtime_ns for n in before}
  assert after == before

  # A folder prepared by AlgoPerf's dataset_setup.py: shards, no manifest.
  copy = tmp_path / "algoperf_prepared"
  shutil.copytree(data_dir, copy)
  os.remove(copy / prepare.MANIFEST_NAME)
  prepare.setup_data(str(copy), lines_per_shard=LINES_PER_SHARD)
  assert (prepare.read_manifest(str(copy))["shards"]
          == prepare.read_manifest(data_dir)["shards"])
  assert input_pipeline.data_problem(str(copy)) is None

  # Shards of another size are not indexed as if they were 3-line shards.
  with pytest.raises(spec.UsageError, match="2 lines each"):
    prepare.setup_data(str(copy), lines_per_shard=2, days=[0])


def test_setup_data_says_how_to_get_missing_days(tmp_path):
  with open(tmp_path / "day_0", "w") as f:
    f.write("0" + "\t" * 39 + "\n")
  with pytest.raises(spec.UsageError, match=r"days \[1, 2,.*setup-data criteo1tb"):
    prepare.setup_data(str(tmp_path / "out"), str(tmp_path))
  assert not os.path.exists(tmp_path / "out")  # nothing written on bad input


def test_count_lines_counts_a_last_line_without_newline(tmp_path):
  path = tmp_path / "f"
  for text, lines in [("", 0), ("a\n", 1), ("a\nb", 2), ("a\n\nb\n", 3)]:
    path.write_text(text)
    assert prepare.count_lines(str(path)) == lines


# ----- splits and errors --------------------------------------------------------------


def test_split_assignment(prepared):
  data_dir, days = prepared
  names = {split: [os.path.basename(s.path)
                   for s in input_pipeline.split_files(data_dir, split)]
           for split in input_pipeline.SPLITS}
  assert names["test"] == [f"day_23_{i:02d}" for i in range(19)]
  assert names["validation"] == [f"day_23_{i:02d}" for i in range(19, 36)]
  assert names["train"] == names["eval_train"]
  assert {prepare.parse_shard_name(n)[0] for n in names["train"]} == set(range(23))
  assert input_pipeline.num_examples(data_dir, "train") == sum(
      len(days[d]) for d in range(23))
  assert input_pipeline.num_examples(data_dir, "test") == 19 * 3
  assert input_pipeline.num_examples(data_dir, "validation") == 17 * 3 - 1


def test_unprepared_data_is_a_usage_error(prepared, tmp_path):
  data_dir, _ = prepared
  with pytest.raises(spec.UsageError, match="setup-data criteo1tb"):
    input_pipeline.check_data(None)
  with pytest.raises(spec.UsageError, match="no folder"):
    input_pipeline.check_data(str(tmp_path / "nothing"))
  with pytest.raises(spec.UsageError, match="no manifest.json"):
    next(input_pipeline.eval_batches(str(tmp_path), "validation", 8))
  with pytest.raises(spec.UsageError, match="unknown criteo1tb split"):
    input_pipeline.split_files(data_dir, "dev")

  copy = tmp_path / "copy"
  shutil.copytree(data_dir, copy)
  with open(copy / "day_5_00", "a") as f:
    f.write("x")
  assert "changed since it was prepared" in input_pipeline.data_problem(str(copy))
  manifest = json.loads((copy / prepare.MANIFEST_NAME).read_text())
  del manifest["shards"]["day_23_35"]
  prepare.write_manifest(str(copy), manifest["shards"], lines_per_shard=3)
  assert "35 shards" in input_pipeline.data_problem(str(copy))
  for name in list(manifest["shards"]):
    if name.startswith("day_7_"):
      del manifest["shards"][name]
  prepare.write_manifest(str(copy), manifest["shards"], lines_per_shard=3)
  assert "days [7] are not prepared" in input_pipeline.data_problem(str(copy))


# ----- reading ---------------------------------------------------------------------


def test_eval_split_is_read_once_in_order(prepared):
  data_dir, _ = prepared
  batches = list(input_pipeline.eval_batches(data_dir, "validation", 8))
  assert _ids(batches) == [23_000 + i for i in range(19 * 3, EVAL_DAY_LINES)]
  assert [len(b["targets"]) for b in batches] == [8] * 6 + [2]
  for batch in batches:
    assert batch["inputs"].dtype == batch["targets"].dtype == np.float32
    assert batch["inputs"].shape[1] == 39
    np.testing.assert_array_equal(batch["weights"], 1)
  whole = input_pipeline.read_split(data_dir, "test")
  assert _ids([whole]) == [23_000 + i for i in range(19 * 3)]


def test_eval_shards_partition_the_split(prepared):
  data_dir, _ = prepared
  full = _ids(input_pipeline.eval_batches(data_dir, "test", 5))
  parts = [_ids(input_pipeline.eval_batches(data_dir, "test", 5, shard_index=i,
                                            num_shards=4)) for i in range(4)]
  assert sum(parts, []) == full
  assert {len(p) for p in parts} <= {len(full) // 4, len(full) // 4 + 1}
  limited = [_ids(input_pipeline.eval_batches(data_dir, "test", 5, num_examples=7,
                                              shard_index=i, num_shards=2))
             for i in range(2)]
  assert limited == [full[:3], full[3:7]]


def test_eval_train_is_a_fixed_set_of_training_lines(prepared):
  data_dir, _ = prepared
  ids = _ids(input_pipeline.eval_batches(data_dir, "eval_train", 4, num_examples=20))
  assert len(ids) == 20 and set(ids) <= set(_all_train_ids())
  assert ids == _ids(input_pipeline.eval_batches(data_dir, "eval_train", 7,
                                                 num_examples=20))
  assert ids != sorted(ids)  # files in a seeded order, not day 0 first


def test_training_reads_whole_files_in_a_seeded_order_per_epoch(prepared):
  data_dir, _ = prepared
  num_train = len(_all_train_ids())
  ids = _train_ids(data_dir, 6, 2 * num_train // 6, seed=3)
  first, second = ids[:num_train], ids[num_train:2 * num_train]
  assert sorted(first) == _all_train_ids()
  assert first != sorted(first) and second != first
  # Each file is read whole, in order, once per epoch.
  files = input_pipeline.split_files(data_dir, "train")
  file_of = {}
  for f in files:
    day, index = prepare.parse_shard_name(os.path.basename(f.path))
    for line in range(index * LINES_PER_SHARD, index * LINES_PER_SHARD + f.num_lines):
      file_of[1000 * day + line] = f.path
  runs = [[first[0]]]
  for previous, current in zip(first, first[1:], strict=False):
    if file_of[current] == file_of[previous]:
      runs[-1].append(current)
    else:
      runs.append([current])
  assert len(runs) == len(files)
  assert all(run == sorted(run) for run in runs)
  assert _train_ids(data_dir, 6, 5, seed=3) == ids[:30]
  assert _train_ids(data_dir, 6, 5, seed=4) != ids[:30]


def test_training_resumes_at_any_batch(prepared):
  data_dir, _ = prepared
  ids = _train_ids(data_dir, 7, 60, seed=1)  # crosses into the third epoch
  for start in (0, 1, 9, 25, 41):
    resumed = _train_ids(data_dir, 7, 60 - start, seed=1, start_batch=start)
    assert resumed == ids[7 * start:]


def test_training_processes_read_disjoint_files(prepared):
  data_dir, _ = prepared
  files = input_pipeline.split_files(data_dir, "train")
  mine = [input_pipeline.process_files(files, i, 3) for i in range(3)]
  assert sorted(sum(mine, []), key=files.index) == files
  lines = [sum(s.num_lines for s in m) for m in mine]
  ids = [set(_train_ids(data_dir, 4, lines[i] // 4, seed=0, shard_index=i,
                        num_shards=3)) for i in range(3)]
  assert not ids[0] & ids[1] and not ids[1] & ids[2] and not ids[0] & ids[2]
  with pytest.raises(spec.UsageError, match="cannot be split"):
    input_pipeline.process_files(files, 0, len(files) + 1)
