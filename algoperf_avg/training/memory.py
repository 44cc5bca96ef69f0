"""Memory per device of a workload x submission x mesh, without training.

``algoperf-avg run --dry_run`` builds everything abstractly (`jax.eval_shape`,
`jax.ShapeDtypeStruct` with the shardings the runner would use), compiles the
train step of the optax shortcut for that mesh and reads XLA's memory
analysis of it: arguments (params, model and optimizer state, batch),
outputs, temporaries, what donation aliases, and the peak, all per device. The
state's bytes per device are computed from each leaf's sharding (host-offloaded
leaves counted as host memory). Nothing is allocated, so a 2 GB embedding
table with a 20-slot LAWA ring is reported on a laptop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from algoperf_avg import spec
from algoperf_avg.training import optax_submission, sharding

MiB = 2**20


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def _bytes_per_device(tree: Any) -> tuple[int, int]:
  """``(device, host)`` bytes of one device's shards of an abstract tree."""
  device = host = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    size = int(np.prod(shard)) * np.dtype(leaf.dtype).itemsize
    if getattr(leaf.sharding, "memory_kind", None) == "pinned_host":
      host += size
    else:
      device += size
  return device, host


@dataclasses.dataclass
class Report:
  """Bytes per device (see the module doc)."""

  workload: str
  submission: str
  devices: int
  batch_size: int
  params: int
  model_state: int
  optimizer_state: int
  optimizer_state_host: int
  batch: int
  step: dict[str, int]  # XLA's memory analysis of the train step

  def format(self) -> str:
    """A small table in MiB."""
    lines = [
        f"{self.workload} x {self.submission}, {self.devices} device(s), "
        f"global batch {self.batch_size} -- MiB per device",
        f"  params                 {self.params / MiB:12.1f}",
        f"  model state            {self.model_state / MiB:12.1f}",
        f"  optimizer state        {self.optimizer_state / MiB:12.1f}   "
        f"(+ {self.optimizer_state_host / MiB:.1f} in host memory)",
        f"  batch                  {self.batch / MiB:12.1f}",
    ]
    for key in ("argument", "output", "alias", "temp", "peak_memory"):
      if key in self.step:
        lines.append(f"  train step {key:<12}{self.step[key] / MiB:12.1f}")
    if {"argument", "output", "alias", "temp"} <= set(self.step):
      lines.append(f"  train step bound       {self.step_bound / MiB:12.1f}   "
                   "(argument + output - alias + temp)")
    return "\n".join(lines)

  @property
  def step_bound(self) -> int:
    """An upper bound of the step's live device memory.

    XLA's ``peak_memory`` is backend-defined: XLA:CPU reports only the live
    arguments there, leaving out its temporaries, so the bound is the figure
    to plan with on every backend.
    """
    s = self.step
    return s["argument"] + s["output"] - s["alias"] + s["temp"]


def report(workload: spec.Workload, submission: spec.Submission, hparams: Any,
           mesh: Any, batch_size: int, data_dir: str | None = None) -> Report:
  """The memory `Report` of one training configuration on ``mesh``.

  Raises:
    spec.UsageError: the submission is not an optax-shortcut submission (its
      train step is not known to the harness).
  """
  module = getattr(submission.init_optimizer_state, "__self__", None)
  if not isinstance(module, optax_submission.OptaxSubmission):
    raise spec.UsageError(
        f"--dry_run needs a make_optimizer submission; {submission.name} defines its "
        "own update_params, whose memory the harness cannot see without running it")
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(sharding.AXIS))
  with jax.set_mesh(mesh):
    params, model_state = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
    specs = workload.param_partition_specs()
    param_shardings = (jax.tree.map(lambda _: replicated, params) if specs is None else
                       jax.tree.map(lambda p, s: NamedSharding(mesh, s or PartitionSpec()),
                                    params, specs, is_leaf=lambda x: x is None))
    params = _abstract(params, param_shardings)
    model_state = _abstract(model_state, jax.tree.map(lambda _: replicated, model_state))
    tx = module.module.make_optimizer(hparams, workload, workload.step_hint)
    init = jax.jit(tx.init).lower(params).compile()
    follow = sharding.sharded_shapes(params)  # moments follow sharded params, as the runner
    opt_shardings = jax.tree.map(
        lambda x, s: follow.get(tuple(x.shape), s),
        jax.eval_shape(tx.init, params), init.output_shardings)
    opt_state = _abstract(jax.eval_shape(tx.init, params), opt_shardings)
    batch = workload.example_batch(batch_size, data_dir)
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                         sharding=batch_sharding), batch)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    step = optax_submission.make_train_step(
        workload, tx, hparams.get("dropout_rate"), hparams.get("label_smoothing", 0.0) or 0.0)
    analysis = step.lower(params, model_state, opt_state, batch, rng).compile().memory_analysis()
  step_bytes = {}
  for key in ("argument", "output", "alias", "temp", "peak_memory"):
    value = getattr(analysis, f"{key}_size_in_bytes", None)
    if value is None:
      value = getattr(analysis, f"{key}_in_bytes", None)
    if value is not None:
      step_bytes[key] = int(value)
  opt_device, opt_host = _bytes_per_device(opt_state)
  return Report(
      workload=workload.workload_id, submission=submission.name, devices=mesh.devices.size,
      batch_size=batch_size, params=_bytes_per_device(params)[0],
      model_state=_bytes_per_device(model_state)[0], optimizer_state=opt_device,
      optimizer_state_host=opt_host, batch=_bytes_per_device(batch)[0], step=step_bytes)
