"""Generated knee-like phantom volumes as fastMRI single-coil h5 files (small).

Each volume is a stack of slices through random ellipsoids: an outer
"tissue" ellipsoid, two large low-signal "bones" and a few small bright or
dark structures, each with its own intensity and a texture of random 3-D
cosines (smooth blobs or fine stripes). A slowly varying phase makes the
image complex, as MRI images are. Its centred orthonormal FFT plus complex
Gaussian noise is the k-space; the fully sampled noisy magnitude, cropped to
the image size, is ``reconstruction_esc``, as the real target is a fully
sampled reconstruction. The k-space has more rows than the image (readout
oversampling) and a few columns more (the real files have 640 x 368 for a
320 x 320 target), and the width varies between files.

Files carry the real format (``kspace`` complex64, ``reconstruction_esc``
float32, the attributes ``max``, ``norm``, ``acquisition``, ``patient_id``
and an ``ismrmrd_header``), in the real folder layout, so the small variant
goes through the same reader, mask, inverse FFT, normalisation and SSIM.
The real data's scale (about 1e-4) is kept too. Everything is drawn from
``Config.seed``; the default dataset takes a few seconds and about 60 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import tempfile

import h5py
import numpy as np

from workloads.fastmri import input_pipeline

STAMP_FILE = "generated.json"  # the Config a generated folder was written with


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes and noise of the generated dataset (defaults: the small workload)."""

  image_size: int = 64
  kspace_rows: int = 80
  kspace_cols: tuple[int, ...] = (72, 76)
  slices_per_volume: int = 16
  num_train_volumes: int = 48
  num_val_volumes: int = 16
  num_validation_files: int = 8  # the rest of the val files are "test"
  noise: float = 0.04  # image-domain noise std, relative to tissue intensity 1
  scale: float = 1e-4  # overall intensity, the order of the real data's
  seed: int = 0

  def __post_init__(self):
    if self.kspace_rows < self.image_size or min(self.kspace_cols) < self.image_size:
      raise ValueError("k-space must be at least as large as the image")
    if not 0 < self.num_validation_files < self.num_val_volumes:
      raise ValueError("need validation files and test files")


def _ellipsoid_params(rng: np.random.Generator, size: int) -> list[dict]:
  """Random ellipsoids (centres and semi-axes in pixels, z in [-1, 1])."""
  shapes = [dict(  # tissue: fills most of the image
      centre=(rng.uniform(-0.05, 0.05) * size, rng.uniform(-0.05, 0.05) * size, 0),
      axes=(rng.uniform(0.36, 0.46) * size, rng.uniform(0.3, 0.44) * size,
            rng.uniform(1.1, 1.6)),
      intensity=rng.uniform(0.8, 1.2), texture=rng.uniform(0.1, 0.25),
      frequency=rng.uniform(0.5, 2.0))]
  for side in (-1, 1):  # femur and tibia: large, dark, finely textured
    shapes.append(dict(
        centre=(side * rng.uniform(0.15, 0.22) * size,
                rng.uniform(-0.08, 0.08) * size, rng.uniform(-0.3, 0.3)),
        axes=(rng.uniform(0.1, 0.16) * size, rng.uniform(0.2, 0.3) * size,
              rng.uniform(0.8, 1.4)),
        intensity=rng.uniform(0.2, 0.5), texture=rng.uniform(0.2, 0.5),
        frequency=rng.uniform(4.0, 8.0)))
  for _ in range(rng.integers(3, 8)):  # fluid, fat, ligaments
    shapes.append(dict(
        centre=(rng.uniform(-0.3, 0.3) * size, rng.uniform(-0.3, 0.3) * size,
                rng.uniform(-0.8, 0.8)),
        axes=(rng.uniform(0.03, 0.12) * size, rng.uniform(0.03, 0.12) * size,
              rng.uniform(0.2, 0.8)),
        intensity=rng.choice([-1, 1]) * rng.uniform(0.3, 1.0),
        texture=rng.uniform(0.0, 0.3), frequency=rng.uniform(1.0, 6.0)))
  for shape in shapes:
    shape["angle"] = rng.uniform(0, np.pi)
    # Texture: a few random 3-D cosines of the ellipsoid's own frequency.
    directions = rng.normal(size=(4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shape["waves"] = directions * shape["frequency"] * 2 * np.pi / size
    shape["phases"] = rng.uniform(0, 2 * np.pi, 4)
  return shapes


def phantom_volume(rng: np.random.Generator, config: Config, cols: int) -> np.ndarray:
  """Complex images ``(slices, kspace_rows, cols)`` of one random volume."""
  slices, rows = config.slices_per_volume, config.kspace_rows
  z = np.linspace(-0.9, 0.9, slices)[:, None, None]
  y = (np.arange(rows) - rows / 2)[None, :, None]
  x = (np.arange(cols) - cols / 2)[None, None, :]
  magnitude = np.zeros((slices, rows, cols))
  for shape in _ellipsoid_params(rng, config.image_size):
    cx, cy, cz = shape["centre"]
    ax, ay, az = shape["axes"]
    cos, sin = np.cos(shape["angle"]), np.sin(shape["angle"])
    u, v = (x - cx) * cos + (y - cy) * sin, -(x - cx) * sin + (y - cy) * cos
    inside = (u / ax) ** 2 + (v / ay) ** 2 + ((z - cz) / az) ** 2 <= 1
    # z is scaled to pixels for the texture so it varies slowly across slices.
    z_pixels = z * config.image_size / 4
    texture = sum(
        np.cos(w[0] * x + w[1] * y + w[2] * z_pixels + phase)
        for w, phase in zip(shape["waves"], shape["phases"], strict=True)
    ) / len(shape["phases"])
    magnitude += inside * shape["intensity"] * (1 + shape["texture"] * texture)
  magnitude = np.maximum(magnitude, 0.0)
  coeffs = rng.normal(0, 1, 4) * np.array([np.pi, 1.5, 1.5, 1.0])
  ys, xs = y / rows, x / cols
  phase = coeffs[0] + coeffs[1] * xs + coeffs[2] * ys + coeffs[3] * xs * ys
  return magnitude * np.exp(1j * phase)


def simulate(rng: np.random.Generator, config: Config, cols: int):
  """One volume: noisy k-space ``(S, rows, cols)`` complex64, target ``(S, n, n)``."""
  images = phantom_volume(rng, config, cols)
  noise = rng.normal(size=(2, *images.shape)) * config.noise
  images = (images + noise[0] + 1j * noise[1]) * config.scale
  shifted = np.fft.ifftshift(images, axes=(-2, -1))
  kspace = np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))
  n, rows = config.image_size, config.kspace_rows
  top, left = (rows - n) // 2, (cols - n) // 2
  target = np.abs(images[:, top : top + n, left : left + n])
  return kspace.astype(np.complex64), target.astype(np.float32)


def _header(rows: int, cols: int, n: int) -> bytes:
  """A minimal ISMRMRD header (the reader ignores it; real files have one)."""
  return (
      '<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader><encoding>'
      f"<encodedSpace><matrixSize><x>{rows}</x><y>{cols}</y><z>1</z></matrixSize>"
      f"</encodedSpace><reconSpace><matrixSize><x>{n}</x><y>{n}</y><z>1</z>"
      "</matrixSize></reconSpace></encoding></ismrmrdHeader>"
  ).encode()


def write_volume(path: str, kspace: np.ndarray, target: np.ndarray,
                 rng: np.random.Generator) -> None:
  """Writes one volume as a fastMRI knee single-coil h5 file."""
  with h5py.File(path, "w") as f:
    f.create_dataset("kspace", data=kspace)
    f.create_dataset("reconstruction_esc", data=target)
    f.create_dataset("ismrmrd_header", data=_header(*kspace.shape[1:], target.shape[1]))
    f.attrs["max"] = float(target.max())
    f.attrs["norm"] = float(np.linalg.norm(target))
    f.attrs["acquisition"] = str(rng.choice(["CORPD_FBK", "CORPDFS_FBK"]))
    f.attrs["patient_id"] = f"{rng.integers(2**63):016x}"


def write_dataset(dataset_dir: str, config: Config = Config()) -> str:
  """Writes and indexes a generated dataset in the real layout; returns the folder.

  ``dataset_dir`` gets ``knee_singlecoil_train/`` and ``knee_singlecoil_val/``
  (files named like the real ones), the reader's ``index.json`` and
  ``generated.json`` (the config, see `ensure_dataset`).
  """
  counts = {input_pipeline.TRAIN_DIR: config.num_train_volumes,
            input_pipeline.VAL_DIR: config.num_val_volumes}
  for split_id, (folder, count) in enumerate(counts.items()):
    os.makedirs(os.path.join(dataset_dir, folder), exist_ok=True)
    for i in range(count):
      rng = np.random.default_rng([config.seed, split_id, i])
      cols = int(rng.choice(config.kspace_cols))
      kspace, target = simulate(rng, config, cols)
      name = f"file{1_000_000 * (split_id + 1) + i}.h5"
      write_volume(os.path.join(dataset_dir, folder, name), kspace, target, rng)
  input_pipeline.prepare(dataset_dir)
  with open(os.path.join(dataset_dir, STAMP_FILE), "w") as f:
    json.dump(dataclasses.asdict(config), f)
  return dataset_dir


def ensure_dataset(dataset_dir: str, config: Config = Config()) -> str:
  """``dataset_dir`` holding the dataset of ``config``, generated if it is not.

  A missing folder is written beside it and renamed into place, so processes
  that generate it at once never read a half-written one (the first rename
  wins; the others drop their copy).
  """
  stamp = os.path.join(dataset_dir, STAMP_FILE)
  if os.path.isfile(stamp):
    with open(stamp) as f:
      if json.load(f) == json.loads(json.dumps(dataclasses.asdict(config))):
        return dataset_dir
    raise ValueError(f"{dataset_dir} holds data generated with another config")
  if os.path.exists(dataset_dir):
    return write_dataset(dataset_dir, config)  # an existing folder of the caller's
  parent = os.path.dirname(os.path.abspath(dataset_dir))
  os.makedirs(parent, exist_ok=True)
  partial = tempfile.mkdtemp(prefix=os.path.basename(dataset_dir) + ".", dir=parent)
  try:
    with contextlib.redirect_stdout(io.StringIO()):  # prepare's per-folder counts
      write_dataset(partial, config)
    os.rename(partial, dataset_dir)
  except OSError:
    if not os.path.isfile(stamp):
      raise
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  return dataset_dir
