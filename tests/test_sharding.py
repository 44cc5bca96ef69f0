"""Data parallelism: 1 and 8 simulated CPU devices train to the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from algoperf_avg import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, sys
import jax
from algoperf_avg import registry
from algoperf_avg.training import runner, sharding
from tests.toy import ToyWorkload
workload = ToyWorkload(validation_target=2.0)
sub = registry.load_submission(sys.argv[1])
hp = runner.resolve_hparams(workload, sub, {})
result = runner.train_once(workload, sub, hp, 0, None, None,
                           runner.RunOptions(max_global_steps=40, eval_every_steps=10))
batch = next(sharding.sharded_iterator(
    workload.build_input_queue(jax.random.key(0), "train", None, 32),
    sharding.make_mesh()))
print(json.dumps({"devices": jax.device_count(),
                  "batch_shards": len(batch["inputs"].addressable_shards),
                  "rows": result.eval_rows}))
"""


def run_child(num_devices, submission="nadamw"):
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  out = subprocess.run([sys.executable, "-c", CHILD, submission], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("submission", registry.submission_names())
def test_one_and_eight_devices_agree(submission):
  one, eight = run_child(1, submission), run_child(8, submission)
  assert one["devices"] == 1 and eight["devices"] == 8
  assert eight["batch_shards"] == 8  # the batch really is split
  assert [r["global_step"] for r in one["rows"]] == [10, 20, 30, 40]
  for a, b in zip(one["rows"], eight["rows"], strict=True):
    for key in ("train/loss", "validation/loss", "validation/accuracy"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_replicate_keeps_host_offloaded_buffers_on_the_host():
  import jax
  import jax.numpy as jnp

  from algoperf_avg.training import sharding

  mesh = sharding.make_mesh()
  kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
  if "pinned_host" not in kinds:
    pytest.skip(f"this backend has no pinned_host memory ({sorted(kinds)})")
  host = jax.device_put(jnp.ones(4), jax.memory.Space.Host)
  tree = sharding.replicate({"on_device": jnp.ones(4), "on_host": host}, mesh)
  assert tree["on_host"].sharding.memory_kind == "pinned_host"
  assert tree["on_device"].sharding.memory_kind == "device"


SHORT_BATCH_CHILD = """
import json
import jax, numpy as np
from algoperf_avg.training import sharding
from tests.toy import ToyWorkload
workload = ToyWorkload()
batch = next(workload.build_input_queue(jax.random.key(0), "train", None, 30))
params, _ = workload.init_model_fn(jax.random.key(1))
mesh = sharding.make_mesh()
sharded = sharding.shard_batch(batch, mesh)
def mean_loss(params, batch):
  logits, _ = workload.model_fn(params, batch, {}, None, None, False)
  loss = workload.loss_fn(batch["targets"], logits, batch["weights"])
  return loss["summed"] / loss["n_valid_examples"]
print(json.dumps({
    "shape": list(sharded["inputs"].shape),
    "shards": len(sharded["inputs"].addressable_shards),
    "weights": np.asarray(sharded["weights"]).tolist(),
    "loss_padded": float(jax.jit(mean_loss)(sharding.replicate(params, mesh), sharded)),
    "loss_plain": float(mean_loss(params, batch)),
}))
"""


def test_short_batch_is_padded_with_zero_weights():
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-c", SHORT_BATCH_CHILD], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["shape"] == [32, 8] and got["shards"] == 8
  assert got["weights"] == [1.0] * 30 + [0.0, 0.0]
  np.testing.assert_allclose(got["loss_padded"], got["loss_plain"], rtol=1e-6)


BUFFER_CHILD = """
import json, sys
import jax, numpy as np
from algoperf_avg import registry
from algoperf_avg.averaging import online
from algoperf_avg.training import runner, sharding
from tests.toy import ToyWorkload
workload = ToyWorkload(num_classes=8, dim=16)  # every leaf splits over 8 devices
sub = registry.load_submission(sys.argv[1])
hp = runner.resolve_hparams(workload, sub, {"lawa_every": 1, "swa_start_fraction": 0.0})
mesh = sharding.make_mesh()
with jax.set_mesh(mesh):
  params, state = sharding.replicate(workload.init_model_fn(jax.random.key(0)), mesh)
  opt = sharding.place_state(sub.init_optimizer_state(workload, params, state, hp,
                                                      jax.random.key(1)), mesh)
  placement = lambda tree: [str(x.sharding) for x in jax.tree.leaves(tree)]
  before = placement((params, opt))
  batches = workload.train_batches(jax.random.key(2), None, 32)
  for step in range(3):
    batch = sharding.shard_batch(next(batches), mesh)
    opt, params, state = sub.update_params(workload, params, None, state, hp, batch,
                                           None, opt, [], step, jax.random.key(step))
buffers = [leaf for name in ("LawaState", "EmaWeightsState", "SwaState")
           for _, s in online.optax.tree.get_all_with_path(opt, name)
           for leaf in jax.tree.leaves(s)[2:]]
print(json.dumps({
    "per_device": sum(b.addressable_shards[0].data.nbytes for b in buffers),
    "total": sum(b.nbytes for b in buffers),
    "shards": [len({s.device for s in b.addressable_shards}) for b in buffers],
    "placement_kept": placement((params, opt)) == before,
    "params_replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(params)),
}))
"""


@pytest.mark.parametrize("submission", ["nadamw_lawa", "nadamw_ema", "nadamw_swa"])
def test_averaging_buffers_are_split_over_the_devices(submission):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-c", BUFFER_CHILD, submission], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got["total"] > 0 and set(got["shards"]) == {8}
  assert got["per_device"] * 8 == got["total"]  # 1/8 of the replicated layout per device
  # Training keeps every placement it started with: the split buffers do not
  # pull the params into their layout (they did before the step's out_shardings).
  assert got["placement_kept"] and got["params_replicated"]
