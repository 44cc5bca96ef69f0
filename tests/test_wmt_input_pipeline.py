"""Tests of the WMT input pipeline, end to end on small TFDS files it writes.

The files are written in the format ``download_and_prepare`` writes for the
registered ``wmt17_translate`` / ``wmt14_translate`` builders, so the real
reader (`tfds.builder(...).as_dataset`) reads them unpatched.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from algoperf_avg import spec
from workloads.wmt import decode, input_pipeline, metrics, synthetic

LONG_PAIR = ("lang " * 300, "long " * 300)  # over 256 tokens: always dropped


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A prepared data folder: 300 train pairs (one too long), 41 + 9 eval pairs."""
  lexicon = synthetic.make_lexicon(0)
  rng = np.random.default_rng(0)
  train = synthetic.generate(299, lexicon, rng)
  train.insert(7, LONG_PAIR)
  validation = synthetic.generate(41, lexicon, rng)
  validation.insert(3, LONG_PAIR)
  test = synthetic.generate(9, lexicon, rng)
  root = tmp_path_factory.mktemp("wmt")
  synthetic.write_tfds(root, input_pipeline.TRAIN_DATASET, {"train": train})
  synthetic.write_tfds(root, input_pipeline.EVAL_DATASET,
                       {"validation": validation, "test": test})
  input_pipeline.train_tokenizer(root, vocab_size=200, max_chars=10**6)
  return {"root": root, "train": train, "validation": validation, "test": test,
          "tokenizer": input_pipeline.load_tokenizer(root)}


def test_check_data_says_how_to_prepare(data, tmp_path):
  input_pipeline.check_data(data["root"])
  for bad in (None, tmp_path / "missing", tmp_path):
    with pytest.raises(spec.UsageError, match="algoperf-avg setup-data wmt"):
      input_pipeline.check_data(bad)
  partial = tmp_path / "partial"
  synthetic.write_tfds(partial, input_pipeline.TRAIN_DATASET, {"train": data["train"]})
  synthetic.write_tfds(partial, input_pipeline.EVAL_DATASET,
                       {"validation": data["validation"], "test": data["test"]})
  with pytest.raises(spec.UsageError, match="no tokenizer"):
    input_pipeline.check_data(partial)
  with pytest.raises(spec.UsageError, match="setup-data"):
    input_pipeline.load_tokenizer(tmp_path)
  with pytest.raises(spec.UsageError, match="unknown split"):
    next(input_pipeline.read_pairs(data["root"], "dev"))


def test_reads_splits_in_stored_order_and_in_shards(data):
  assert list(input_pipeline.read_pairs(data["root"], "validation")) == data["validation"]
  assert list(input_pipeline.read_pairs(data["root"], "eval_train", num_examples=5)) == (
      data["train"][:5])
  shards = [list(input_pipeline.read_pairs(data["root"], "test", shard_index=i,
                                           num_shards=3)) for i in range(3)]
  assert [len(s) for s in shards] == [3, 3, 3]
  assert sum(shards, []) == data["test"]


def test_tokenizer_corpus_stops_after_the_pair_that_reaches_the_limit(tmp_path):
  path = tmp_path / "corpus.txt"
  pairs = [("ab", "cde"), ("fgh", "ij"), ("k", "l")]
  assert input_pipeline.write_tokenizer_corpus(pairs, path, max_chars=8) == 14
  assert path.read_text() == "ab\ncde\nfgh\nij\n"
  assert input_pipeline.write_tokenizer_corpus(iter([("ä", "b")]), path, 100) == 5


def test_tokenizer_has_sentencepiece_ids_and_round_trips(data):
  tokenizer = data["tokenizer"]
  assert tokenizer.get_piece_size() == 200
  assert tokenizer.unk_id() == 0 and tokenizer.eos_id() == decode.EOS_ID
  source, target = data["validation"][0]
  ids = tokenizer.encode(target, add_eos=True)
  assert ids[-1] == decode.EOS_ID and decode.PAD_ID not in ids
  assert tokenizer.decode(ids) == target


def test_tokenize_appends_eos_and_drops_long_pairs(data):
  pairs = data["validation"]
  tokenized = list(input_pipeline.tokenize_pairs(pairs, data["tokenizer"]))
  assert len(tokenized) == len(pairs) - 1
  for (source, target), (source_ids, target_ids) in zip(
      pairs[:3] + pairs[4:], tokenized, strict=True):
    assert source_ids.dtype == np.int32 and source_ids[-1] == decode.EOS_ID
    assert data["tokenizer"].decode(source_ids.tolist()) == source
    assert data["tokenizer"].decode(target_ids.tolist()) == target
  short = list(input_pipeline.tokenize_pairs(pairs[:3], data["tokenizer"], max_length=8))
  assert all(max(s.size, t.size) <= 8 for s, t in short)


def test_shuffle_is_a_seeded_local_permutation():
  items = list(range(100))
  out = list(input_pipeline.shuffle(items, 10, seed=(3, 0)))
  assert sorted(out) == items and out != items
  assert out == list(input_pipeline.shuffle(items, 10, seed=(3, 0)))
  assert out != list(input_pipeline.shuffle(items, 10, seed=(3, 1)))
  # Output k comes from the first k + buffer inputs.
  assert all(value < k + 10 for k, value in enumerate(out))
  assert list(input_pipeline.shuffle(items, 1, seed=0)) == items


def _pairs(*pairs):
  return [(np.array(s, np.int32), np.array(t, np.int32)) for s, t in pairs]


def test_packing_matches_algoperf_docstring_example():
  rows = list(input_pipeline.pack_pairs(
      _pairs(([8, 7, 1], [4, 1]), ([2, 3, 4, 1], [5, 6, 1])), max_length=10))
  assert len(rows) == 1
  row = rows[0]
  np.testing.assert_array_equal(row["inputs"], [8, 7, 1, 2, 3, 4, 1, 0, 0, 0])
  np.testing.assert_array_equal(row["inputs_segmentation"], [1, 1, 1, 2, 2, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(row["inputs_position"], [0, 1, 2, 0, 1, 2, 3, 0, 0, 0])
  np.testing.assert_array_equal(row["targets"], [4, 1, 5, 6, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(row["targets_segmentation"], [1, 1, 2, 2, 2, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(row["targets_position"], [0, 1, 0, 1, 2, 0, 0, 0, 0, 0])
  assert all(v.dtype == np.int32 and v.shape == (10,) for v in row.values())


def test_packing_opens_a_new_row_when_either_side_overflows():
  pairs = _pairs(([3] * 3, [4] * 2), ([5] * 2, [6] * 3), ([7], [8]), ([9] * 4, [9]))
  rows = list(input_pipeline.pack_pairs(pairs, max_length=5))
  # Pairs 1 and 2 fill row 1 exactly (sources 3 + 2, targets 2 + 3), so
  # pair 3 opens row 2; pair 4 fits beside it (sources 1 + 4, targets 1 + 1).
  assert len(rows) == 2
  np.testing.assert_array_equal(rows[0]["inputs"], [3, 3, 3, 5, 5])
  np.testing.assert_array_equal(rows[1]["inputs"], [7, 9, 9, 9, 9])
  np.testing.assert_array_equal(rows[1]["targets_segmentation"], [1, 2, 0, 0, 0])


def test_packing_closes_rows_every_max_length_pairs_as_algoperf():
  # 8 pairs of one token each would fit one row of 8, but AlgoPerf packs
  # chunks of max_length (= 4) pairs: two rows.
  rows = list(input_pipeline.pack_pairs(_pairs(*[([3], [4])] * 8), max_length=4))
  assert len(rows) == 2
  np.testing.assert_array_equal(rows[0]["inputs_segmentation"], [1, 2, 3, 4])


def test_packing_strips_like_algoperf_when_a_pair_contains_id_0():
  # AlgoPerf keeps the first count(id != 0) ids: an unknown token (id 0)
  # inside a sentence costs the last id, and its position gets segment 0.
  (row,) = input_pipeline.pack_pairs(_pairs(([5, 0, 6, 2], [7, 2])), max_length=6)
  np.testing.assert_array_equal(row["inputs"], [5, 0, 6, 0, 0, 0])
  np.testing.assert_array_equal(row["inputs_segmentation"], [1, 0, 1, 0, 0, 0])


def test_train_batches_pack_real_pairs_shuffled_and_repeated(data):
  tokenizer = data["tokenizer"]
  batches = input_pipeline.train_batches(data["root"], tokenizer, 4, seed=1,
                                         max_length=64, shuffle_buffer_size=16)
  first = list(itertools.islice(batches, 100))  # more than one epoch
  batch = first[0]
  assert set(batch) == set(input_pipeline.TRAIN_KEYS)
  for key, value in batch.items():
    assert value.shape == (4, 64)
    assert value.dtype == (np.float32 if key == "weights" else np.int32)
  np.testing.assert_array_equal(batch["weights"], batch["targets"] > 0)
  stored = [tuple(t.tolist()) for _, t in input_pipeline.tokenize_pairs(
      data["train"], tokenizer)]
  known = set(stored)
  seen = []
  for b in first:
    for row in range(4):
      for segment in range(1, b["targets_segmentation"][row].max() + 1):
        ids = b["targets"][row][b["targets_segmentation"][row] == segment]
        positions = b["targets_position"][row][b["targets_segmentation"][row] == segment]
        np.testing.assert_array_equal(positions, np.arange(ids.size))
        seen.append(tuple(ids.tolist()))
  assert set(seen) <= known
  assert len(seen) > len(known)  # into the second epoch
  assert seen[:50] != stored[:50]
  again = next(input_pipeline.train_batches(data["root"], tokenizer, 4, seed=1,
                                            max_length=64, shuffle_buffer_size=16))
  np.testing.assert_array_equal(again["targets"], batch["targets"])
  other = next(input_pipeline.train_batches(data["root"], tokenizer, 4, seed=2,
                                            max_length=64, shuffle_buffer_size=16))
  assert not np.array_equal(other["targets"], batch["targets"])


def test_eval_batches_are_padded_in_stored_order(data):
  tokenizer = data["tokenizer"]
  batches = list(input_pipeline.eval_batches(data["root"], tokenizer, "validation", 16))
  assert [b["inputs"].shape for b in batches] == [(16, 256), (16, 256), (9, 256)]
  assert set(batches[0]) == {"inputs", "targets", "weights"}
  expected = [p for i, p in enumerate(data["validation"]) if i != 3]  # too long
  decoded = [metrics.ids_to_text(row, tokenizer) for b in batches for row in b["targets"]]
  assert decoded == [t for _, t in expected]
  row = batches[0]["inputs"][0]
  length = int(np.argmax(row == decode.EOS_ID)) + 1
  assert np.all(row[length:] == 0) and np.all(row[:length] > 0)
  padded = list(input_pipeline.eval_batches(data["root"], tokenizer, "validation", 16,
                                            pad_to_full=True))
  assert padded[-1]["inputs"].shape == (16, 256)
  assert padded[-1]["weights"][9:].sum() == 0
  assert (padded[-1]["weights"][:9].sum(-1) > 0).all()
  assert all(v == 0 for v in input_pipeline.PAD_VALUES.values())
  eval_train = list(input_pipeline.eval_batches(
      data["root"], tokenizer, "eval_train", 4, num_examples=10, max_length=64))
  assert sum(b["inputs"].shape[0] for b in eval_train) == 9  # pair 7 is too long
  shard = list(input_pipeline.eval_batches(data["root"], tokenizer, "test", 8,
                                           shard_index=1, num_shards=2))
  assert [metrics.ids_to_text(r, tokenizer) for r in shard[0]["targets"]] == (
      [t for _, t in data["test"][5:]])


def test_setup_data_skips_prepared_datasets_and_trains_the_missing_tokenizer(
    data, tmp_path):
  synthetic.write_tfds(tmp_path, input_pipeline.TRAIN_DATASET, {"train": data["train"]})
  synthetic.write_tfds(tmp_path, input_pipeline.EVAL_DATASET,
                       {"validation": data["validation"], "test": data["test"]})
  input_pipeline.setup_data(tmp_path, vocab_size=200, max_chars=10**6)  # no download
  input_pipeline.check_data(tmp_path)
  # Same corpus, same trainer: the same pieces as the fixture's (the files
  # differ only in the scratch paths they record).
  trained = input_pipeline.load_tokenizer(tmp_path)
  pieces = [trained.id_to_piece(i) for i in range(trained.get_piece_size())]
  assert pieces == [data["tokenizer"].id_to_piece(i) for i in range(200)]


def _same_batches(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_stream_is_shuffle_then_pack_then_batch_across_epochs(data):
  tokenizer = data["tokenizer"]
  pairs = lambda: input_pipeline.read_pairs(data["root"], "train")  # noqa: E731
  epochs = itertools.chain.from_iterable(
      input_pipeline.shuffle(input_pipeline.tokenize_pairs(pairs(), tokenizer, 64),
                             16, (1, epoch)) for epoch in itertools.count())
  expected = input_pipeline.stack_rows(input_pipeline.pack_pairs(epochs, 64), 4,
                                       drop_remainder=True)
  stream = input_pipeline.TrainStream(data["root"], tokenizer, 4, 1, max_length=64,
                                      shuffle_buffer_size=16)
  for want in itertools.islice(expected, 60):  # > 2 epochs
    got = next(stream)
    _same_batches(want, got)


@pytest.mark.parametrize("taken", [1, 17, 41])  # mid-epoch, across epoch ends
def test_train_stream_resumes_with_the_next_batch(data, tmp_path, taken, monkeypatch):
  tokenizer = data["tokenizer"]
  options = dict(max_length=64, shuffle_buffer_size=16, shard_index=1, num_shards=2)
  unbroken = input_pipeline.TrainStream(data["root"], tokenizer, 4, 3, **options)
  for _ in range(taken):
    next(unbroken)
  state = unbroken.checkpoint(str(tmp_path))
  expected = [next(unbroken) for _ in range(25)]
  skips = []
  real = input_pipeline.read_pairs
  monkeypatch.setattr(input_pipeline, "read_pairs",
                      lambda *a, **k: skips.append(k.get("skip", 0)) or real(*a, **k))
  resumed = input_pipeline.TrainStream(data["root"], tokenizer, 4, 3, start=state,
                                       **options)
  for want in expected:
    _same_batches(want, next(resumed))
  assert skips[0] == unbroken_read_at(state)  # reopened at the saved offset
  with pytest.raises(ValueError, match="another stream"):
    input_pipeline.TrainStream(data["root"], tokenizer, 4, 4, start=state, **options)


def unbroken_read_at(state):
  import json

  with np.load(state["file"]) as saved:
    return json.loads(str(saved["meta"]))["read"]


def test_train_stream_shards_split_the_pairs_as_tfds_even_splits(data):
  sizes = [input_pipeline.num_pairs(data["root"], "train", shard_index=i, num_shards=3)
           for i in range(3)]
  assert sizes == [100, 100, 100]
  assert list(input_pipeline.read_pairs(data["root"], "train", shard_index=1,
                                        num_shards=3, skip=98)) == data["train"][198:200]
  # The same shard as tfds.even_splits (which reads the split when skip is 0).
  shard = list(input_pipeline.read_pairs(data["root"], "test", shard_index=1, num_shards=2))
  assert list(input_pipeline.read_pairs(data["root"], "test", shard_index=1, num_shards=2,
                                        skip=1)) == shard[1:]
  assert input_pipeline._even_shard(10, 2, 3) == (7, 10)
  assert input_pipeline._even_shard(10, 0, 3) == (0, 4)
