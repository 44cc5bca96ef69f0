"""fastMRI knee single-coil h5 volumes -> batches of slices, as in AlgoPerf.

Layout of the dataset folder (``DATA/fastmri``, AlgoPerf's ``data_dir``)::

  knee_singlecoil_train/file*.h5   the official training volumes
  knee_singlecoil_val/file*.h5     the official validation volumes
  index.json                       written by `prepare`: slices and shapes

Each h5 file is one volume: ``kspace`` ``(slices, 640, cols)`` complex64,
``reconstruction_esc`` ``(slices, 320, 320)`` float32 and the attribute
``max`` (the volume's maximum, SSIM's data range). One example is one slice
(`preprocessing.process_slice`). The splits are AlgoPerf's: ``train`` (and
``eval_train``) are all training volumes, ``validation`` the first 100 sorted
validation files, ``test`` the other validation files. Files are read in
sorted order; h5py does the reading and TensorFlow is not needed.

A batch is a dict of numpy arrays::

  inputs, targets  (B, H, W) float32   normalised images (320 x 320 full)
  mean, std        (B,) float32        the input's statistics (de-normalise)
  volume_max       (B,) float32        the volume's ``max`` attribute
  weights          (B,) float32        1 (padding slices: 0)

Eval batches may be short; pad them with `PAD_VALUES`.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import h5py
import jax
import numpy as np

from algoperf_avg import spec
from workloads.fastmri import preprocessing

DATASET = "fastmri"
TRAIN_DIR = "knee_singlecoil_train"
VAL_DIR = "knee_singlecoil_val"
INDEX_FILE = "index.json"
NUM_VALIDATION_FILES = 100
SPLITS = ("train", "eval_train", "validation", "test")
# Padding slices are all zeros except these, which keep the SSIM of a padding
# slice finite (de-normalised with std 1, data range 1).
PAD_VALUES = {"std": 1.0, "volume_max": 1.0}
HOW_TO = (
    "prepare it once with: algoperf-avg setup-data fastmri --data_dir=DIR "
    "--manual_dir=FOLDER, where FOLDER holds knee_singlecoil_train.tar.xz and "
    "knee_singlecoil_val.tar.xz from https://fastmri.med.nyu.edu/ (or the "
    "folders they extract to)"
)
_OPEN_FILES = 16  # h5 handles kept open while reading in shuffled order

Example = dict[str, np.ndarray]


class Volume(NamedTuple):
  """One h5 file of the index."""

  path: str  # relative to the dataset folder
  num_slices: int
  kspace_shape: tuple[int, int]
  target_shape: tuple[int, int]


class SliceRef(NamedTuple):
  """One example to read: a slice of a volume and the seed of its mask."""

  path: str
  slice_index: int
  mask_seed: tuple[int, int]


def _describe_volume(dataset_dir: str, path: str) -> Volume:
  """Checks one h5 file's datasets and attributes; raises UsageError if wrong."""
  try:
    with h5py.File(os.path.join(dataset_dir, path), "r") as f:
      kspace, target = f.get("kspace"), f.get("reconstruction_esc")
      problem = None
      if kspace is None or target is None:
        problem = "lacks the kspace or reconstruction_esc dataset"
      elif kspace.ndim != 3 or not np.issubdtype(kspace.dtype, np.complexfloating):
        problem = f"has kspace {kspace.dtype}{kspace.shape}, not complex 3-D"
      elif target.ndim != 3 or target.shape[0] != kspace.shape[0]:
        problem = f"has reconstruction_esc {target.shape} for kspace {kspace.shape}"
      elif "max" not in f.attrs:
        problem = "lacks the 'max' attribute"
      if problem:
        raise spec.UsageError(f"{path} {problem}; is it a knee single-coil file?")
      return Volume(path, int(kspace.shape[0]), tuple(kspace.shape[1:]),
                    tuple(target.shape[1:]))
  except OSError as error:
    raise spec.UsageError(f"cannot read {path} as h5: {error}") from error


def index_volumes(dataset_dir: str) -> dict[str, list[Volume]]:
  """Every volume of both folders (sorted by name), each file checked."""
  index = {}
  for folder in (TRAIN_DIR, VAL_DIR):
    names = sorted(n for n in os.listdir(os.path.join(dataset_dir, folder))
                   if n.endswith(".h5"))
    if not names:
      raise spec.UsageError(f"no .h5 files in {os.path.join(dataset_dir, folder)}")
    index[folder] = [_describe_volume(dataset_dir, f"{folder}/{n}") for n in names]
  return index


def _gather_sources(dataset_dir: str, manual_dir: str | None) -> None:
  """Puts both folders into ``dataset_dir``: linked, or extracted from the tars.

  Both sources are found before anything is written, so a missing one leaves
  no half-made folder behind.
  """
  plans = []
  for folder in (TRAIN_DIR, VAL_DIR):
    target = os.path.join(dataset_dir, folder)
    if os.path.isdir(target):
      continue
    official = folder.removeprefix("knee_")  # the archives hold singlecoil_*/
    if manual_dir is None:
      raise spec.UsageError(f"no {folder}/ in {dataset_dir!r}; {HOW_TO}")
    folders = [os.path.join(manual_dir, name) for name in (folder, official)]
    archive = os.path.join(manual_dir, f"{folder}.tar.xz")
    if source := next((f for f in folders if os.path.isdir(f)), None):
      plans.append((target, official, source, None))
    elif os.path.isfile(archive):
      plans.append((target, official, None, archive))
    else:
      raise spec.UsageError(
          f"no {folder}/ in {dataset_dir!r}, nor {folder}.tar.xz, {folder}/ or "
          f"{official}/ in {manual_dir!r}; {HOW_TO}")
  os.makedirs(dataset_dir, exist_ok=True)
  for target, official, source, archive in plans:
    if source is not None:
      os.symlink(os.path.abspath(source), target)
      continue
    print(f"extracting {archive} (the training archive takes a while)")
    with tarfile.open(archive) as tar:
      tar.extractall(dataset_dir, filter="data")
    if not os.path.isdir(target):
      os.rename(os.path.join(dataset_dir, official), target)


def prepare(dataset_dir: str, manual_dir: str | None = None) -> str:
  """Gathers (extracts or links) the two folders, checks and indexes every file.

  Args:
    dataset_dir: the dataset folder, ``DATA/fastmri``.
    manual_dir: where the downloaded archives (or extracted folders) are;
      not needed when ``dataset_dir`` already holds both folders.

  Returns:
    ``dataset_dir``, with ``index.json`` written.

  Raises:
    spec.UsageError: a folder is missing, or a file is not in the format.
  """
  _gather_sources(dataset_dir, manual_dir)
  index = index_volumes(dataset_dir)
  temporary = os.path.join(dataset_dir, INDEX_FILE + ".tmp")
  with open(temporary, "w") as f:
    json.dump({k: [v._asdict() for v in vs] for k, vs in index.items()}, f, indent=1)
  os.replace(temporary, os.path.join(dataset_dir, INDEX_FILE))
  for folder, volumes in index.items():
    print(f"{folder}: {len(volumes)} volumes, "
          f"{sum(v.num_slices for v in volumes)} slices")
  return dataset_dir


def data_problem(dataset_dir: str) -> str | None:
  """What is missing in ``dataset_dir`` (None when prepared); cheap, reads no h5."""
  for folder in (TRAIN_DIR, VAL_DIR):
    if not os.path.isdir(os.path.join(dataset_dir, folder)):
      return f"no {folder}/ in {dataset_dir!r}; {HOW_TO}"
  if not os.path.isfile(os.path.join(dataset_dir, INDEX_FILE)):
    return f"{dataset_dir!r} is not indexed (no {INDEX_FILE}); {HOW_TO}"
  return None


def load_index(dataset_dir: str | None) -> dict[str, list[Volume]]:
  """The volumes of both folders, from ``index.json``.

  Raises:
    spec.UsageError: no folder given, or the data is not prepared.
  """
  if not dataset_dir:
    raise spec.UsageError(f"fastmri reads the knee single-coil h5 files; {HOW_TO}")
  if problem := data_problem(dataset_dir):
    raise spec.UsageError(problem)
  with open(os.path.join(dataset_dir, INDEX_FILE)) as f:
    raw = json.load(f)
  return {
      folder: [Volume(v["path"], v["num_slices"], tuple(v["kspace_shape"]),
                      tuple(v["target_shape"])) for v in raw[folder]]
      for folder in (TRAIN_DIR, VAL_DIR)
  }


def split_volumes(index: dict[str, list[Volume]], split: str,
                  num_validation_files: int = NUM_VALIDATION_FILES) -> list[Volume]:
  """The volumes of ``split``, sorted by file name (AlgoPerf's splits)."""
  if split not in SPLITS:
    raise spec.UsageError(f"unknown split {split!r}; choose from {list(SPLITS)}")
  if split in ("train", "eval_train"):
    return index[TRAIN_DIR]
  if split == "validation":
    return index[VAL_DIR][:num_validation_files]
  return index[VAL_DIR][num_validation_files:]


def shard_bounds(num_examples: int, shard_index: int, num_shards: int) -> tuple[int, int]:
  """``[start, stop)`` of contiguous shard ``shard_index`` of ``num_shards``."""
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard {shard_index} of {num_shards} does not exist")
  return (num_examples * shard_index // num_shards,
          num_examples * (shard_index + 1) // num_shards)


def _slices(volumes: Sequence[Volume]) -> list[tuple[str, int]]:
  return [(v.path, i) for v in volumes for i in range(v.num_slices)]


def mask_base_seed(rng: jax.Array) -> tuple[int, int]:
  """AlgoPerf's base seed of training masks: ``fold_in(rng, 0)`` as two int64."""
  words = np.asarray(jax.random.key_data(jax.random.fold_in(rng, 0)))
  return int(words[0]), int(words[1])


def _mask_seed(base: tuple[int, int] | None, position: int) -> tuple[int, int]:
  # AlgoPerf folds the slice's position in the training stream into the base
  # seed; eval slices (base None) all share one fixed mask per width.
  if base is None:
    return preprocessing.EVAL_MASK_SEED
  return preprocessing.stateless_fold_in(base, position)


def read_slices(dataset_dir: str, refs: Iterable[SliceRef],
                num_workers: int = 0) -> Iterator[Example]:
  """Examples of ``refs`` in order: read with h5py, then preprocessed.

  Up to 16 files stay open (shuffled reading revisits them); with
  ``num_workers`` threads the FFTs of the next slices run ahead in parallel.
  """
  # path -> (kspace dataset, target dataset, volume max); dropping the last
  # reference to a dataset and its file closes the file.
  handles: collections.OrderedDict[str, tuple[Any, Any, float]] = (
      collections.OrderedDict())

  def read(ref: SliceRef):
    if ref.path not in handles:
      if len(handles) >= _OPEN_FILES:
        handles.popitem(last=False)
      f = h5py.File(os.path.join(dataset_dir, ref.path), "r")
      handles[ref.path] = (f["kspace"], f["reconstruction_esc"],
                           float(f.attrs.get("max", 0.0)))
    handles.move_to_end(ref.path)
    kspace, target, volume_max = handles[ref.path]
    return (kspace[ref.slice_index], target[ref.slice_index], volume_max,
            ref.mask_seed)

  def process(raw) -> Example:
    example = preprocessing.process_slice(*raw)
    example["weights"] = np.float32(1.0)
    return example

  try:
    yield from _ordered_map(process, map(read, refs), num_workers)
  finally:
    handles.clear()


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any],
                 num_workers: int) -> Iterator[Any]:
  """``map(fn, items)``, with ``num_workers`` threads working ahead in order."""
  if num_workers <= 0:
    yield from map(fn, items)
    return
  items = iter(items)
  with ThreadPoolExecutor(num_workers) as pool:
    pending = collections.deque(
        pool.submit(fn, x) for x in itertools.islice(items, 2 * num_workers))
    while pending:
      result = pending.popleft().result()
      for x in itertools.islice(items, 1):
        pending.append(pool.submit(fn, x))
      yield result


def eval_examples(
    dataset_dir: str | None,
    split: str,
    *,
    num_examples: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    mask_base: tuple[int, int] | None = None,
    num_validation_files: int = NUM_VALIDATION_FILES,
    num_workers: int = 0,
) -> Iterator[Example]:
  """One pass over ``split`` in a fixed order (sorted files, slices in order).

  Args:
    dataset_dir: the prepared dataset folder.
    split: "eval_train", "validation" or "test" ("train" reads in order too).
    num_examples: keep the first ``num_examples`` slices (before sharding).
    shard_index: this process's contiguous shard ...
    num_shards: ... of this many.
    mask_base: None: every slice gets AlgoPerf's fixed eval mask; else the
      per-slice training masks of this base seed (`mask_base_seed`).
    num_validation_files: validation files taken from the official val set.
    num_workers: preprocessing threads (0: inline).
  """
  slices = _slices(split_volumes(load_index(dataset_dir), split, num_validation_files))
  slices = slices[:num_examples]
  start, stop = shard_bounds(len(slices), shard_index, num_shards)
  refs = (SliceRef(path, i, _mask_seed(mask_base, position))
          for position, (path, i) in enumerate(slices[start:stop], start))
  return read_slices(dataset_dir, refs, num_workers)


def train_examples(
    dataset_dir: str | None,
    *,
    shuffle_seed: int,
    mask_base: tuple[int, int],
    shard_index: int = 0,
    num_shards: int = 1,
    start: int = 0,
    num_workers: int = 0,
) -> Iterator[Example]:
  """Training slices forever: this shard, a fresh permutation per epoch.

  Epoch ``e`` of the shard follows ``np.random.default_rng([shuffle_seed,
  e]).permutation``; ``start`` skips that many examples of the stream without
  reading them (resuming). A slice's mask depends only on ``mask_base`` and
  its position in the full sorted training set, so it is the same every epoch
  and on any number of shards, as in AlgoPerf.
  """
  slices = _slices(split_volumes(load_index(dataset_dir), "train"))
  first, stop = shard_bounds(len(slices), shard_index, num_shards)
  if stop == first:
    raise ValueError(f"shard {shard_index} of {num_shards} holds no training slice")

  def refs() -> Iterator[SliceRef]:
    epoch, offset = divmod(start, stop - first)
    while True:
      order = np.random.default_rng([shuffle_seed, epoch]).permutation(stop - first)
      for k in order[offset:]:
        path, i = slices[first + k]
        yield SliceRef(path, i, _mask_seed(mask_base, first + k))
      epoch, offset = epoch + 1, 0

  return read_slices(dataset_dir, refs(), num_workers)


def batch_examples(examples: Iterable[Example], batch_size: int,
                   drop_remainder: bool = False) -> Iterator[Example]:
  """Examples stacked into batches; the last is short unless ``drop_remainder``."""
  iterator = iter(examples)
  while chunk := list(itertools.islice(iterator, batch_size)):
    if drop_remainder and len(chunk) < batch_size:
      return
    yield {key: np.stack([e[key] for e in chunk]) for key in chunk[0]}
