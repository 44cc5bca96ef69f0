"""Images/s of the ImageNet input pipeline alone (no model), on this machine's CPUs.

Writes ILSVRC-layout archives of ImageNet-sized JPEGs (sides 300-500 px,
about as large in bytes as ImageNet's), builds them with the real TFDS
``imagenet2012`` builder (`algoperf_avg.kit.imagenet.setup_data`), then
times each stream as the workloads read it: ResNet-50 training (random crop
+ flip), ViT training (+ RandAugment + mixup), evaluation (central crop),
and the small variants' 32 px streams on the generated images. The first
batches (tf.data warm-up) are not timed. "per CPU-s" divides by this
process's CPU time instead of wall time: the pipeline's cost, which other
jobs on the machine do not change (with ``--cores`` free cores the wall rate
can reach about ``cores`` times it).

  .venv/bin/python benchmarks/imagenet_pipeline.py --cores 2 \\
      --out results/benchmarks/imagenet_pipeline.txt
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from algoperf_avg.kit import imagenet  # noqa: E402
from algoperf_avg.kit import imagenet_synthetic as synthetic  # noqa: E402


def photo_like_jpeg(rng: np.random.Generator) -> bytes:
  """A JPEG with ImageNet's typical size and detail (multi-scale noise, q=90)."""
  from PIL import Image

  height, width = (int(v) for v in rng.integers(300, 501, 2))
  image = np.zeros((height, width, 3))
  for cells, weight in ((4, 90.0), (16, 50.0), (64, 25.0), (256, 12.0)):
    field = rng.normal(size=(cells, cells, 3))
    layer = Image.fromarray(((field - field.min()) / np.ptp(field) * 255).astype(np.uint8))
    image += weight * (np.asarray(layer.resize((width, height), Image.BICUBIC)) / 255 - 0.5)
  image = np.clip(image + 128 + rng.normal(0, 22, image.shape), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def images_per_second(batches, batch_size: int, warmup: int, timed: int
                      ) -> tuple[float, float]:
  """Images per wall-clock second, and per second of this process's CPU time."""
  for _ in range(warmup):
    next(batches)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(timed):
    next(batches)
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  return timed * batch_size / wall, timed * batch_size / cpu


def endless_eval(builder, split, batch_size, config):
  while True:
    yield from imagenet.eval_batches(builder, split, batch_size, config)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cores", type=int, default=2, help="CPU cores the process may use")
  parser.add_argument("--images", type=int, default=512, help="train JPEGs to generate")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batches", type=int, default=12, help="timed batches per stream")
  parser.add_argument("--out", help="also write the table here")
  args = parser.parse_args()
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))

  rng = np.random.default_rng(0)
  jpegs = [photo_like_jpeg(rng) for _ in range(args.images)]
  synsets = ("n01440764", "n01443537", "n01484850", "n01491361")
  lines = []
  with tempfile.TemporaryDirectory() as root:
    synthetic.write_ilsvrc_archives(
        os.path.join(root, "manual"),
        {s: jpegs[i::len(synsets)] for i, s in enumerate(synsets)},
        jpegs[: args.images // 4])
    imagenet.setup_data(os.path.join(root, "imagenet"), os.path.join(root, "manual"))
    builder = imagenet.open_builder(os.path.join(root, "imagenet"))
    small = synthetic.prepare(os.path.join(root, "small"))
    small_resnet = imagenet.RESNET_PREPROCESSING.scaled(32, 36, 10)
    small_vit = imagenet.VIT_PREPROCESSING.scaled(32, 36, 10)
    streams = [
        ("imagenet_resnet train (crop, flip)", lambda b: imagenet.train_batches(
            builder, b, 0, imagenet.RESNET_PREPROCESSING)),
        ("imagenet_vit train (+RandAugment, mixup)", lambda b: imagenet.train_batches(
            builder, b, 0, imagenet.VIT_PREPROCESSING)),
        ("eval 224 (central crop)", lambda b: endless_eval(
            builder, "validation", b, imagenet.RESNET_PREPROCESSING)),
        ("imagenet_resnet_small train 32px", lambda b: imagenet.train_batches(
            small, b, 0, small_resnet)),
        ("imagenet_vit_small train 32px", lambda b: imagenet.train_batches(
            small, b, 0, small_vit)),
        ("small eval 32px", lambda b: endless_eval(small, "validation", b, small_vit)),
    ]
    mean_kb = np.mean([len(j) for j in jpegs]) / 1024
    lines.append(f"{len(jpegs)} generated JPEGs, 300-500 px a side, mean {mean_kb:.0f} KB "
                 f"(ImageNet: ~110 KB); batch {args.batch}; {args.cores} CPU cores; "
                 f"{os.getloadavg()[0]:.1f} load average at start")
    lines.append(f"{'stream':44s} {'images/s':>9s} {'per CPU-s':>9s}")
    for name, make in streams:
      rate, per_cpu = images_per_second(make(args.batch), args.batch, 3, args.batches)
      lines.append(f"{name:44s} {rate:9.0f} {per_cpu:9.0f}")
      print(lines[-1], flush=True)
  print("\n".join(lines[:2]))
  if args.out:
    with open(args.out, "w") as f:
      f.write(f"# python {' '.join(sys.argv)}\n")
      f.write(f"# {time.strftime('%Y-%m-%d')}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
