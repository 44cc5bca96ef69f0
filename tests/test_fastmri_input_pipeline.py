"""End-to-end tests of the fastMRI reader on small h5 files in the real format."""

from __future__ import annotations

import collections
import itertools
import os
import tarfile

import h5py
import jax
import numpy as np
import pytest

from algoperf_avg import spec
from workloads.fastmri import input_pipeline as ip
from workloads.fastmri import preprocessing

TRAIN_FILES = {"file1000003.h5": 4, "file1000001.h5": 3, "file1000007.h5": 5}
VAL_FILES = {f"file100{i:04d}.h5": 2 for i in (9, 2, 5, 4, 8)}
KEYS = {"inputs", "targets", "mean", "std", "volume_max", "weights"}


def _write_volume(path: str, rng: np.random.Generator, num_slices: int,
                  kspace_shape=(40, 36), target_shape=(32, 32), **skip) -> None:
  """A knee single-coil file: an ellipse phantom's k-space and its magnitude."""
  rows, cols = kspace_shape
  y, x = np.mgrid[:rows, :cols]
  images = []
  for _ in range(num_slices):
    inside = (((y - rows / 2) / rng.uniform(6, 12)) ** 2
              + ((x - cols / 2) / rng.uniform(6, 12)) ** 2) < 1
    image = inside * rng.uniform(1, 2) + 0.05 * rng.normal(size=(rows, cols))
    images.append(image * np.exp(0.3j * x / cols) * 1e-4)
  images = np.stack(images)
  kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(1, 2)),
                                       norm="ortho"), axes=(1, 2))
  top, left = (rows - target_shape[0]) // 2, (cols - target_shape[1]) // 2
  target = np.abs(images[:, top:top + target_shape[0], left:left + target_shape[1]])
  with h5py.File(path, "w") as f:
    f.create_dataset("kspace", data=kspace.astype(np.complex64))
    if "reconstruction_esc" not in skip:
      f.create_dataset("reconstruction_esc", data=target.astype(np.float32))
    f.create_dataset("ismrmrd_header", data=b"<ismrmrdHeader/>")
    if "max" not in skip:
      f.attrs["max"] = float(target.max())
    f.attrs["norm"] = float(np.linalg.norm(target))
    f.attrs["acquisition"] = "CORPD_FBK"
    f.attrs["patient_id"] = "0" * 16


def _write_folders(root: str, train_dir: str = ip.TRAIN_DIR,
                   val_dir: str = ip.VAL_DIR) -> None:
  rng = np.random.default_rng(0)
  for folder, files in ((train_dir, TRAIN_FILES), (val_dir, VAL_FILES)):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for name, slices in files.items():
      shape = (40, 36) if slices % 2 else (40, 40)  # widths vary, as in fastMRI
      _write_volume(os.path.join(root, folder, name), rng, slices, shape)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("data") / "fastmri")
  _write_folders(root)
  return ip.prepare(root)


def _expected(dataset_dir: str, folder: str, name: str, index: int, seed):
  with h5py.File(os.path.join(dataset_dir, folder, name), "r") as f:
    return preprocessing.process_slice(
        f["kspace"][index], f["reconstruction_esc"][index], f.attrs["max"], seed)


def _assert_same(example, expected):
  for key, value in expected.items():
    np.testing.assert_array_equal(example[key], value, err_msg=key)


def test_prepare_indexes_every_volume(dataset_dir):
  index = ip.load_index(dataset_dir)
  assert [v.path for v in index[ip.TRAIN_DIR]] == [
      f"{ip.TRAIN_DIR}/{n}" for n in sorted(TRAIN_FILES)]
  assert [v.num_slices for v in index[ip.TRAIN_DIR]] == [3, 4, 5]
  assert index[ip.TRAIN_DIR][0].kspace_shape == (40, 36)
  assert index[ip.VAL_DIR][0].target_shape == (32, 32)
  assert ip.data_problem(dataset_dir) is None


def test_validation_reads_sorted_files_with_the_fixed_eval_mask(dataset_dir):
  examples = list(ip.eval_examples(dataset_dir, "validation"))
  assert len(examples) == 10  # fewer than 100 files: all of them
  expected = [(name, i) for name in sorted(VAL_FILES) for i in range(2)]
  for example, (name, i) in zip(examples, expected, strict=True):
    assert set(example) == KEYS
    assert example["inputs"].dtype == np.float32 and example["inputs"].shape == (32, 32)
    assert example["weights"] == 1.0
    _assert_same(example, _expected(dataset_dir, ip.VAL_DIR, name, i,
                                    preprocessing.EVAL_MASK_SEED))


def test_validation_is_the_first_sorted_files_and_test_the_rest(dataset_dir):
  names = sorted(VAL_FILES)
  validation = list(ip.eval_examples(dataset_dir, "validation", num_validation_files=3))
  test = list(ip.eval_examples(dataset_dir, "test", num_validation_files=3))
  assert (len(validation), len(test)) == (6, 4)
  _assert_same(test[0], _expected(dataset_dir, ip.VAL_DIR, names[3], 0, (0, 0)))
  _assert_same(validation[-1], _expected(dataset_dir, ip.VAL_DIR, names[2], 1, (0, 0)))
  assert list(ip.eval_examples(dataset_dir, "test")) == []  # AlgoPerf's 100 files


def test_shards_partition_a_split_in_order(dataset_dir):
  whole = list(ip.eval_examples(dataset_dir, "eval_train", num_examples=11))
  shards = [list(ip.eval_examples(dataset_dir, "eval_train", num_examples=11,
                                  shard_index=i, num_shards=3)) for i in range(3)]
  assert [len(s) for s in shards] == [3, 4, 4]
  for example, expected in zip(itertools.chain(*shards), whole, strict=True):
    _assert_same(example, expected)


def _stream_ids(dataset_dir, examples, base):
  """Position in the sorted training set of each example (by its content)."""
  reference = ip.eval_examples(dataset_dir, "train", mask_base=base)
  lookup = {e["targets"].tobytes(): i for i, e in enumerate(reference)}
  return [lookup[e["targets"].tobytes()] for e in examples]


def test_training_shuffles_each_epoch_and_keeps_each_slices_mask(dataset_dir):
  base = (11, 22)
  stream = ip.train_examples(dataset_dir, shuffle_seed=3, mask_base=base)
  ids = _stream_ids(dataset_dir, itertools.islice(stream, 36), base)
  epochs = [ids[i:i + 12] for i in range(0, 36, 12)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(12))  # every slice once per epoch
  assert epochs[0] != list(range(12)) and epochs[0] != epochs[1] != epochs[2]
  # The lookup found every example: the same slice has the same mask (and so
  # the same normalised target) in every epoch, as in AlgoPerf.
  again = ip.train_examples(dataset_dir, shuffle_seed=3, mask_base=base)
  assert _stream_ids(dataset_dir, itertools.islice(again, 12), base) == epochs[0]
  other = ip.train_examples(dataset_dir, shuffle_seed=4, mask_base=base)
  assert _stream_ids(dataset_dir, itertools.islice(other, 12), base) != epochs[0]


def test_training_masks_are_folded_per_slice_position(dataset_dir):
  base = ip.mask_base_seed(jax.random.key(5))
  first = next(ip.train_examples(dataset_dir, shuffle_seed=0, mask_base=base))
  position = _stream_ids(dataset_dir, [first], base)[0]
  slices = [(n, i) for n in sorted(TRAIN_FILES) for i in range(TRAIN_FILES[n])]
  name, index = slices[position]
  seed = preprocessing.stateless_fold_in(base, position)
  _assert_same(first, _expected(dataset_dir, ip.TRAIN_DIR, name, index, seed))
  # AlgoPerf's base: tf.cast(jax.random.fold_in(rng, 0), tf.int64).
  words = jax.random.key_data(jax.random.fold_in(jax.random.key(5), 0))
  assert base == tuple(int(w) for w in words)


def test_training_resumes_at_any_position_and_shards_split_the_slices(dataset_dir):
  base = (1, 2)
  full = list(itertools.islice(
      ip.train_examples(dataset_dir, shuffle_seed=7, mask_base=base), 30))
  resumed = ip.train_examples(dataset_dir, shuffle_seed=7, mask_base=base, start=17)
  for example, expected in zip(itertools.islice(resumed, 13), full[17:], strict=True):
    _assert_same(example, expected)
  shard_ids = [
      set(_stream_ids(dataset_dir, itertools.islice(ip.train_examples(
          dataset_dir, shuffle_seed=7, mask_base=base, shard_index=i, num_shards=2),
          6), base)) for i in range(2)]
  assert shard_ids == [set(range(6)), set(range(6, 12))]


def test_threads_give_the_same_examples(dataset_dir):
  plain = list(ip.eval_examples(dataset_dir, "validation"))
  threaded = list(ip.eval_examples(dataset_dir, "validation", num_workers=2))
  for a, b in zip(plain, threaded, strict=True):
    _assert_same(a, b)


def test_batches_stack_examples_and_pad_values_name_batch_keys(dataset_dir):
  batches = list(ip.batch_examples(ip.eval_examples(dataset_dir, "validation"), 4))
  assert [len(b["inputs"]) for b in batches] == [4, 4, 2]
  batch = batches[0]
  assert set(batch) == KEYS
  assert batch["inputs"].shape == batch["targets"].shape == (4, 32, 32)
  for key in ("mean", "std", "volume_max", "weights"):
    assert batch[key].shape == (4,) and batch[key].dtype == np.float32
  assert set(ip.PAD_VALUES) <= KEYS
  dropped = ip.batch_examples(ip.eval_examples(dataset_dir, "validation"), 4,
                              drop_remainder=True)
  assert len(list(dropped)) == 2


def test_real_sizes(tmp_path):
  root = str(tmp_path / "fastmri")
  for folder in (ip.TRAIN_DIR, ip.VAL_DIR):
    os.makedirs(os.path.join(root, folder))
    _write_volume(os.path.join(root, folder, "file1.h5"), np.random.default_rng(1),
                  1, (640, 368), (320, 320))
  ip.prepare(root)
  (example,) = ip.eval_examples(root, "validation")
  assert example["inputs"].shape == (320, 320)
  _assert_same(example, _expected(root, ip.VAL_DIR, "file1.h5", 0, (0, 0)))


def test_prepare_extracts_the_official_archives(tmp_path):
  downloads = tmp_path / "downloads"
  _write_folders(str(downloads / "staging"), "singlecoil_train", "singlecoil_val")
  for split in ("train", "val"):
    with tarfile.open(downloads / f"knee_singlecoil_{split}.tar.xz", "w:xz") as tar:
      tar.add(downloads / "staging" / f"singlecoil_{split}", f"singlecoil_{split}")
  root = str(tmp_path / "fastmri")
  ip.prepare(root, manual_dir=str(downloads))
  assert len(list(ip.eval_examples(root, "validation"))) == 10
  assert sorted(os.listdir(os.path.join(root, ip.TRAIN_DIR))) == sorted(TRAIN_FILES)


def test_prepare_links_extracted_folders(tmp_path):
  downloads = str(tmp_path / "downloads")
  _write_folders(downloads, "singlecoil_train", ip.VAL_DIR)
  root = str(tmp_path / "fastmri")
  ip.prepare(root, manual_dir=downloads)
  assert os.path.islink(os.path.join(root, ip.TRAIN_DIR))
  assert len(list(ip.eval_examples(root, "eval_train"))) == 12


def test_missing_or_unprepared_data_says_how_to_prepare(tmp_path):
  root = str(tmp_path / "fastmri")
  for call in (lambda: ip.load_index(None), lambda: ip.load_index(root),
               lambda: ip.prepare(root)):
    with pytest.raises(spec.UsageError, match="setup-data fastmri"):
      call()
  assert "setup-data fastmri" in ip.data_problem(root)
  with pytest.raises(spec.UsageError, match="knee_singlecoil_train.tar.xz"):
    ip.prepare(root, manual_dir=str(tmp_path))
  _write_folders(root)
  assert "not indexed" in ip.data_problem(root)
  with pytest.raises(spec.UsageError, match="not indexed"):
    next(ip.eval_examples(root, "validation"))
  ip.prepare(root)
  with pytest.raises(spec.UsageError, match="unknown split"):
    ip.split_volumes(ip.load_index(root), "dev")


@pytest.mark.parametrize("skip", ["max", "reconstruction_esc"])
def test_files_in_another_format_are_named(tmp_path, skip):
  root = str(tmp_path / "fastmri")
  _write_folders(root)
  _write_volume(os.path.join(root, ip.VAL_DIR, "file_bad.h5"),
                np.random.default_rng(0), 1, **{skip: True})
  with pytest.raises(spec.UsageError, match="file_bad.h5"):
    ip.prepare(root)
  with open(os.path.join(root, ip.VAL_DIR, "file_junk.h5"), "w") as f:
    f.write("not h5")
  os.remove(os.path.join(root, ip.VAL_DIR, "file_bad.h5"))
  with pytest.raises(spec.UsageError, match="file_junk.h5"):
    ip.prepare(root)


def test_open_files_are_bounded(dataset_dir, monkeypatch):
  opened = collections.Counter()
  real_file = h5py.File

  def counting_file(path, *args, **kwargs):
    opened[os.path.basename(path)] += 1
    return real_file(path, *args, **kwargs)

  monkeypatch.setattr(ip, "_OPEN_FILES", 2)
  monkeypatch.setattr(ip.h5py, "File", counting_file)
  list(itertools.islice(ip.train_examples(dataset_dir, shuffle_seed=0,
                                          mask_base=(0, 0)), 24))
  assert set(opened) == set(TRAIN_FILES)
  assert sum(opened.values()) > 3  # files were closed and reopened
