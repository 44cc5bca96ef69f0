"""Data helpers: epoch streams with O(1) start, shards, stacking, padding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from algoperf_avg.kit import data


def test_index_batches_cover_each_epoch_once_and_start_anywhere():
  n, size = 10, 4
  stream = list(itertools.islice(data.index_batches(n, size, seed=3), 10))  # 4 epochs
  flat = np.concatenate(stream)
  for epoch in range(4):
    assert sorted(flat[epoch * n:(epoch + 1) * n]) == list(range(n))
  assert not np.array_equal(flat[:n], flat[n:2 * n])  # a new permutation per epoch
  for start in (0, 1, 7):
    resumed = list(itertools.islice(data.index_batches(n, size, seed=3, start_batch=start), 3))
    for a, b in zip(resumed, stream[start:start + 3], strict=True):
      np.testing.assert_array_equal(a, b)
  other = np.concatenate(list(itertools.islice(data.index_batches(n, size, seed=4), 3)))
  assert not np.array_equal(other, flat[:12])


def test_epoch_order_is_the_same_stream():
  order = list(itertools.islice(data.epoch_order(7, seed=1), 20))
  batches = np.concatenate(list(itertools.islice(data.index_batches(7, 5, seed=1), 4)))
  assert order == batches[:20].tolist()
  assert list(itertools.islice(data.epoch_order(7, seed=1, start=9), 5)) == order[9:14]


def test_block_epoch_order_visits_one_block_at_a_time_and_starts_anywhere():
  n, block = 12, 4
  order = list(itertools.islice(data.block_epoch_order(n, block, seed=2), 3 * n))
  for epoch in range(3):
    visit = order[epoch * n:(epoch + 1) * n]
    assert sorted(visit) == list(range(n))  # every example once per epoch
    for k in range(0, n, block):  # ... block by block
      assert len({i // block for i in visit[k:k + block]}) == 1
  assert order[:n] != order[n:2 * n]  # a new order per epoch
  for start in (0, 3, 4, 13, 30):
    assert list(itertools.islice(data.block_epoch_order(n, block, seed=2, start=start),
                                 6)) == order[start:start + 6]
  assert list(itertools.islice(data.block_epoch_order(n, block, seed=3), n)) != order[:n]
  with pytest.raises(ValueError, match="blocks of 5"):
    next(data.block_epoch_order(12, 5, seed=0))


def test_shard_bounds_cover_every_example_once():
  for n, shards in ((10, 3), (2, 4), (0, 2)):
    bounds = [data.shard_bounds(n, i, shards) for i in range(shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
  with pytest.raises(ValueError, match="does not exist"):
    data.shard_bounds(10, 3, 3)


def test_stack_examples_nested_and_remainder():
  examples = [{"inputs": (np.full(2, i), np.zeros(3)), "targets": np.int32(i)}
              for i in range(5)]
  batches = list(data.stack_examples(examples, 2))
  assert [b["targets"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
  assert batches[0]["inputs"][0].shape == (2, 2)
  assert len(list(data.stack_examples(examples, 2, drop_remainder=True))) == 2


def test_pad_batch_uses_declared_pad_values_and_adds_valid():
  batch = {"inputs": (np.ones((3, 4)), np.zeros((3, 4))),  # (audio, paddings)
           "targets": np.ones((3, 2), np.int32), "weights": np.ones((3, 2))}
  padded = data.pad_batch(batch, 5, {"inputs": (0.0, 1.0)})
  audio, paddings = padded["inputs"]
  assert audio.shape == (5, 4) and not audio[3:].any()
  assert paddings[3:].all() and not paddings[:3].any()  # padded frames read 1
  assert not padded["weights"][3:].any()  # 2-D weights are 0 on the padding
  np.testing.assert_array_equal(padded["valid"], [1, 1, 1, 0, 0])
  empty = data.padding_only(padded, {"inputs": (0.0, 1.0)})
  assert not empty["valid"].any() and empty["inputs"][1].all()
  same = data.pad_batch(batch, 3, add_valid=False)
  assert "valid" not in same and same["weights"].shape == (3, 2)


def test_pad_batch_errors():
  with pytest.raises(ValueError, match="leading example axis"):
    data.pad_batch({"a": np.zeros((3,)), "b": np.zeros((4,))}, 8)
  with pytest.raises(ValueError, match="exceeds"):
    data.pad_batch({"a": np.zeros((9,))}, 8)
  with pytest.raises(ValueError, match="lacks"):
    data.pad_batch({"a": np.zeros((2,))}, 8, {"b": 1})


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
  assert data.cache_dir("fastmri_small") == str(tmp_path / "fastmri_small")
  monkeypatch.delenv(data.CACHE_ENV)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert data.cache_dir("x") == str(tmp_path / "home" / ".cache" / "algoperf_avg" / "x")


def test_cache_dir_is_keyed_by_the_config(monkeypatch, tmp_path):
  monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
  first = data.cache_dir("toy", {"seed": 0, "n": 3})
  assert first.startswith(str(tmp_path / "toy-"))
  assert data.cache_dir("toy", {"n": 3, "seed": 0}) == first
  assert data.cache_dir("toy", {"seed": 1, "n": 3}) != first


def test_build_once_builds_one_complete_folder(tmp_path):
  calls = []

  def build(folder):
    calls.append(folder)
    with open(f"{folder}/done", "w") as f:
      f.write("yes")

  target = str(tmp_path / "cache" / "set")
  assert data.build_once(target, build) == target
  assert data.build_once(target, build) == target
  assert len(calls) == 1 and open(f"{target}/done").read() == "yes"

  def broken(folder):
    open(f"{folder}/half", "w").close()
    raise RuntimeError("interrupted")

  with pytest.raises(RuntimeError):
    data.build_once(str(tmp_path / "cache" / "other"), broken)
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["set"]  # no debris

  def lost_race(folder):  # another process renames its folder into place first
    build(folder)
    build_dir = tmp_path / "cache" / "raced"
    build_dir.mkdir()
    (build_dir / "done").write_text("theirs")

  raced = str(tmp_path / "cache" / "raced")
  assert data.build_once(raced, lost_race) == raced
  assert open(f"{raced}/done").read() == "theirs"
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["raced", "set"]
