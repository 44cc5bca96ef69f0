"""Tests of the generated phantom volumes of small fastMRI."""

from __future__ import annotations

import dataclasses
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from workloads.fastmri import input_pipeline as ip
from workloads.fastmri import metrics, model, preprocessing, synthetic

TINY = synthetic.Config(image_size=32, kspace_rows=40, kspace_cols=(36, 38),
                        slices_per_volume=8, num_train_volumes=8,
                        num_val_volumes=4, num_validation_files=2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
  return synthetic.write_dataset(str(tmp_path_factory.mktemp("small")), TINY)


def test_files_have_the_real_format(tiny_dir):
  names = sorted(os.listdir(os.path.join(tiny_dir, ip.TRAIN_DIR)))
  assert len(names) == TINY.num_train_volumes and names[0] == "file1000000.h5"
  widths = set()
  for name in names:
    with h5py.File(os.path.join(tiny_dir, ip.TRAIN_DIR, name), "r") as f:
      kspace, target = f["kspace"], f["reconstruction_esc"]
      assert kspace.dtype == np.complex64 and target.dtype == np.float32
      assert kspace.shape[:2] == (8, 40) and target.shape == (8, 32, 32)
      assert f.attrs["max"] == pytest.approx(float(target[()].max()))
      assert {"norm", "acquisition", "patient_id"} <= set(f.attrs)
      assert b"ismrmrdHeader" in f["ismrmrd_header"][()]
      widths.add(kspace.shape[2])
  assert widths == {36, 38}
  assert ip.data_problem(tiny_dir) is None


def test_target_is_the_fully_sampled_magnitude(tiny_dir):
  path = os.path.join(tiny_dir, ip.VAL_DIR, "file2000000.h5")
  with h5py.File(path, "r") as f:
    kspace, target = f["kspace"][3], f["reconstruction_esc"][3]
  full = np.ones(kspace.shape[1], bool)
  image = preprocessing.zero_filled_image(kspace, full)
  np.testing.assert_allclose(
      np.abs(preprocessing.center_crop(image, target.shape)), target,
      rtol=1e-4, atol=1e-6 * target.max())
  # The object sits inside the crop, on a noise-only background.
  assert 1e-5 < target.max() < 1e-3
  assert np.median(target[:, :2]) < 0.2 * np.median(target[12:20, 12:20])


def test_generation_is_deterministic_and_seeded():
  rng = np.random.default_rng([0, 0, 0])
  kspace, target = synthetic.simulate(rng, TINY, 36)
  again = synthetic.simulate(np.random.default_rng([0, 0, 0]), TINY, 36)
  np.testing.assert_array_equal(kspace, again[0])
  np.testing.assert_array_equal(target, again[1])
  other = synthetic.simulate(np.random.default_rng([1, 0, 0]), TINY, 36)
  assert not np.allclose(target, other[1])


def test_slices_of_a_volume_change_smoothly():
  _, target = synthetic.simulate(np.random.default_rng(0), TINY, 36)
  neighbours = np.abs(target[1:] - target[:-1]).mean()
  far = np.abs(target[:4] - target[4:]).mean()
  assert neighbours < far


def test_splits_flow_through_the_real_reader(tiny_dir):
  validation = list(ip.eval_examples(tiny_dir, "validation",
                                     num_validation_files=TINY.num_validation_files))
  test = list(ip.eval_examples(tiny_dir, "test",
                               num_validation_files=TINY.num_validation_files))
  assert len(validation) == len(test) == 16
  assert validation[0]["inputs"].shape == (32, 32)


def test_ensure_dataset_reuses_and_refuses_another_config(tiny_dir):
  assert synthetic.ensure_dataset(tiny_dir, TINY) == tiny_dir
  with pytest.raises(ValueError, match="another config"):
    synthetic.ensure_dataset(tiny_dir, dataclasses.replace(TINY, seed=1))


def test_config_rejects_kspace_smaller_than_the_image():
  with pytest.raises(ValueError):
    synthetic.Config(image_size=64, kspace_cols=(60,))


def _ssim(predict, batches) -> float:
  statistics = jax.jit(lambda batch: metrics.eval_statistics(
      predict(batch["inputs"]), batch, batch["weights"]))
  totals = {}
  for batch in batches:
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in statistics(batch).items()}
  return metrics.finalize(totals)["ssim"]


def test_a_small_unet_learns_beyond_the_zero_filled_input(tiny_dir):
  validation = list(ip.batch_examples(ip.eval_examples(
      tiny_dir, "validation", num_validation_files=TINY.num_validation_files), 16))
  train = ip.batch_examples(
      ip.train_examples(tiny_dir, shuffle_seed=0, mask_base=(0, 1)), 8)
  net = model.UNet(num_channels=4, num_pool_layers=2)
  shapes = jax.eval_shape(lambda: net.init(
      {"params": jax.random.key(0)}, validation[0]["inputs"], train=False))["params"]
  # Drawn with numpy (lecun-uniform scale): compiling Flax's init costs more
  # than this whole test otherwise.
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda leaf: rng.uniform(-1, 1, leaf.shape).astype(np.float32)
      * np.sqrt(3.0 / np.prod(leaf.shape[:-1])), shapes)
  optimizer = optax.adam(3e-3)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, inputs, targets):
    def loss(p):
      return jnp.mean(jnp.abs(net.apply({"params": p}, inputs, train=True) - targets))
    grads = jax.grad(loss)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(150):
    batch = next(train)
    params, state = step(params, state, batch["inputs"], batch["targets"])
  zero_filled = _ssim(lambda inputs: inputs, validation)
  learned = _ssim(lambda inputs: net.apply({"params": params}, inputs, train=False),
                  validation)
  assert learned > zero_filled + 0.05, (learned, zero_filled)


def test_ensure_dataset_writes_a_missing_folder_whole(tmp_path):
  target = str(tmp_path / "cache" / "fastmri_small")
  assert synthetic.ensure_dataset(target, TINY) == target
  assert sorted(os.listdir(tmp_path / "cache")) == ["fastmri_small"]  # no leftovers
  assert len(list(ip.eval_examples(target, "test",
                                   num_validation_files=TINY.num_validation_files))) == 16
