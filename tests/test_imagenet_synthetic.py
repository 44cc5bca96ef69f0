"""Tests of the generated small-ImageNet images and their TFDS dataset."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from algoperf_avg.kit import imagenet
from algoperf_avg.kit import imagenet_synthetic as synthetic

TINY = synthetic.SyntheticConfig(num_train=40, num_validation=12, num_test=8, seed=3)


@pytest.mark.parametrize(("kind", "area"), [
    ("disk", np.pi), ("square", 1.6**2), ("ring", np.pi * (1 - 0.55**2)),
    ("cross", 2 * 0.6 * 2 - 0.6**2), ("triangle", 3 * np.sqrt(3) / 4),
])
def test_shape_areas(kind, area):
  radius = 90.0
  dy, dx = np.mgrid[-200:200, -200:200].astype(np.float64)
  mask = synthetic._shape_mask(kind, dy, dx, radius)
  assert mask.sum() / radius**2 == pytest.approx(area, rel=0.03)


def test_examples_are_deterministic_jpegs_in_imagenet_features():
  first = list(synthetic.examples(TINY, "validation"))
  assert [k for k, _ in first] == [f"validation_{i:06d}.JPEG" for i in range(12)]
  assert first == list(synthetic.examples(TINY, "validation"))
  _, example = first[0]
  assert set(example) == {"image", "label", "file_name"}
  image = np.asarray(Image.open(io.BytesIO(example["image"])))
  assert image.dtype == np.uint8 and image.shape[2] == 3
  assert TINY.min_side <= min(image.shape[:2]) <= max(image.shape[:2]) <= TINY.max_side
  other_seed = list(synthetic.examples(synthetic.SyntheticConfig(
      num_validation=12, seed=4), "validation"))
  assert other_seed[0][1]["image"] != example["image"]


def test_label_noise_changes_labels_only():
  config = synthetic.SyntheticConfig(num_train=2000, label_noise=0.0, seed=1)
  clean = [e for _, e in synthetic.examples(config, "train")]
  noisy = [e for _, e in synthetic.examples(
      synthetic.SyntheticConfig(num_train=2000, label_noise=0.2, seed=1), "train")]
  assert all(c["image"] == n["image"] for c, n in zip(clean[:20], noisy[:20], strict=True))
  changed = np.mean([c["label"] != n["label"] for c, n in zip(clean, noisy, strict=True)])
  assert changed == pytest.approx(0.2 * 0.9, abs=0.03)  # a redraw may hit the same class
  counts = np.bincount([c["label"] for c in clean], minlength=10)
  assert counts.min() > 150  # balanced classes


def test_classes_differ_in_shape_and_texture():
  config = synthetic.SyntheticConfig()
  rng = np.random.default_rng(0)

  def stripes(label):
    # Striped objects have many strong horizontal or vertical edges inside.
    image = synthetic.render(label, 48, 48, 0, config, rng).astype(float).mean(2)
    return np.abs(np.diff(image, axis=1)).mean() + np.abs(np.diff(image, axis=0)).mean()

  solid = np.mean([stripes(label) for label in range(5) for _ in range(10)])
  striped = np.mean([stripes(label) for label in range(5, 10) for _ in range(10)])
  assert striped > 1.3 * solid


def test_prepare_writes_once_and_reads_through_the_imagenet_pipeline(tmp_path):
  builder = synthetic.prepare(tmp_path, TINY)
  path = synthetic.dataset_dir(tmp_path, TINY)
  assert os.path.isfile(os.path.join(path, "dataset_info.json"))
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")
          } == {"train": 40, "validation": 12, "test": 8}
  written = os.path.getmtime(os.path.join(path, "dataset_info.json"))
  synthetic.prepare(tmp_path, TINY)
  assert os.path.getmtime(os.path.join(path, "dataset_info.json")) == written
  config = imagenet.VIT_PREPROCESSING.scaled(32, 36, num_classes=TINY.num_classes)
  batches = list(imagenet.eval_batches(builder, "validation", 5, config))
  labels = [int(t) for b in batches for t in b["targets"]]
  stored = sorted(e["label"] for _, e in synthetic.examples(TINY, "validation"))
  assert sorted(labels) == stored
  assert batches[0]["inputs"].shape == (5, 32, 32, 3)
  train = next(imagenet.train_batches(builder, 8, 0, config))
  assert train["targets"].shape == (8, TINY.num_classes)
  assert np.all(np.isfinite(train["inputs"]))


def test_config_name_tracks_every_field():
  names = {synthetic.SyntheticConfig().name, synthetic.SyntheticConfig(seed=1).name,
           synthetic.SyntheticConfig(label_noise=0.2).name}
  assert len(names) == 3
  with pytest.raises(ValueError, match="num_classes"):
    synthetic.SyntheticConfig(num_classes=11)


def test_prepare_survives_losing_a_race_to_another_process(tmp_path, monkeypatch):
  """Two processes preparing at once: TFDS's final rename fails in the second.

  The fake builder lets the "other process" (the real builder) finish first
  and then fails as TFDS does; `prepare` must open the finished dataset. A
  FileExistsError with no dataset behind it is still an error.
  """
  real_builder = synthetic._builder

  class LosesTheRace:
    def __init__(self, config, data_dir, finish_first):
      self.winner = real_builder(config, data_dir) if finish_first else None

    def download_and_prepare(self, **kwargs):
      if self.winner is not None:
        self.winner.download_and_prepare(**kwargs)
      raise FileExistsError("Cannot rename ... Destination ... already exists.")

  monkeypatch.setattr(synthetic, "_builder",
                      lambda config, data_dir: LosesTheRace(config, data_dir, True))
  builder = synthetic.prepare(tmp_path / "race", TINY)
  assert builder.info.splits["validation"].num_examples == 12

  monkeypatch.setattr(synthetic, "_builder",
                      lambda config, data_dir: LosesTheRace(config, data_dir, False))
  with pytest.raises(FileExistsError):
    synthetic.prepare(tmp_path / "no_dataset", TINY)
