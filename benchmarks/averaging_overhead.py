"""What weight averaging adds to a training step: time, memory, XLA copies.

Every variant is NadamW, alone or chained with an averaging transform, in one
jitted train step that donates params and optimizer state (as the harness
does). Variants are timed side by side in one process, interleaved: each round
runs every variant for ``--period`` steps (a full LAWA period, so its one
record per period is amortized), and the ratio to NadamW is taken within the
round; the median over rounds is printed.

    python benchmarks/averaging_overhead.py                   # 4.2M-param MLP
    python benchmarks/averaging_overhead.py --workload ogbg --size small
    python benchmarks/averaging_overhead.py --naive           # + the design check
    python benchmarks/averaging_overhead.py --only ema,lawa --rounds 40

Variants: ``nadamw``; ``ema`` (decay 0.999, every step); ``ema_every64``;
``power_ema`` (gamma 6.94, i.e. sigma_rel 0.10, every step); ``power_ema2``
(two power EMAs, gamma 6.94 and 16.97: what a run kept for post-hoc synthesis
holds on the device); ``lawa`` (L=20, nu=64); ``lawa_offload``;
``swa_every64``; ``lawa_naive``.

Columns: step time ratio to NadamW (median and range of the per-round ratios;
"best": fastest round over NadamW's fastest; "cpu": median per-round ratio of
this process's CPU time, all threads); state memory added, in units of P (one copy of the params), on
the device and in host memory; XLA temporaries added to the step; MB written
by XLA ``copy`` ops beyond NadamW's, on an ordinary step and on a record step
(from the compiled HLO). ``--naive`` adds LAWA without the ordering dependency
that lets XLA update the ring in place.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

from algoperf_avg import averaging
from algoperf_avg.training.optimizers import nadamw


class Problem(NamedTuple):
  """Params plus a train-step factory ``tx -> (jitted step, extra args)``.

  The step maps ``(params, opt_state, *extra)`` to ``(params, opt_state)`` and
  donates its first two arguments.
  """

  name: str
  params: Any
  make_step: Callable[[optax.GradientTransformation], tuple[Callable, tuple]]


def mlp_problem(batch_size: int, widths=(784, 2048, 1024, 512, 10)) -> Problem:
  """A ReLU MLP on a fixed random batch (4.2M params with the default widths)."""
  keys = jax.random.split(jax.random.key(0), len(widths))
  params = {
      f"dense{i}": {
          "kernel": jax.random.normal(k, (a, b)) / np.sqrt(a),
          "bias": jnp.zeros((b,)),
      }
      for i, (k, a, b) in enumerate(zip(keys[:-1], widths[:-1], widths[1:], strict=True))
  }
  inputs = jax.random.normal(keys[-1], (batch_size, widths[0]))
  labels = jnp.arange(batch_size) % widths[-1]

  def loss_fn(params, inputs, labels):
    h = inputs
    for i in range(len(widths) - 1):
      layer = params[f"dense{i}"]
      h = h @ layer["kernel"] + layer["bias"]
      h = jax.nn.relu(h) if i < len(widths) - 2 else h
    return optax.softmax_cross_entropy_with_integer_labels(h, labels).mean()

  def make_step(tx):
    def step(params, opt_state, inputs, labels):
      grads = jax.grad(loss_fn)(params, inputs, labels)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0, 1)), (inputs, labels)

  return Problem(f"mlp{'-'.join(map(str, widths))}", params, make_step)


def workload_problem(name: str, size: str, batch_size: int | None) -> Problem:
  """A registered workload, trained by the harness's own train step."""
  from algoperf_avg import registry
  from algoperf_avg.training import optax_submission

  workload = registry.get_workload(name, size)
  params, model_state = workload.init_model_fn(jax.random.key(0))
  batch = next(
      workload.build_input_queue(
          jax.random.key(1), "train", None, batch_size or workload.default_batch_size
      )
  )
  rng = jax.random.key(2)

  def make_step(tx):
    train_step = optax_submission.make_train_step(workload, tx, None, 0.0)

    def step(params, opt_state, model_state, batch, rng):
      # The harness's step, inlined; batch statistics are not carried over.
      params, _, opt_state, _ = train_step(params, model_state, opt_state, batch, rng)
      return params, opt_state

    return jax.jit(step, donate_argnums=(0, 1)), (model_state, batch, rng)

  return Problem(f"{name}-{size}", params, make_step)


def variants(naive: bool) -> dict[str, Callable[[], optax.GradientTransformation]]:
  """NadamW alone and chained with each averaging transform."""
  base = lambda: nadamw(1e-3)  # noqa: E731
  out = {
      "nadamw": base,
      "ema": lambda: optax.chain(base(), averaging.ema(0.999)),  # every step
      "ema_every64": lambda: optax.chain(base(), averaging.ema(0.999, every=64)),
      "power_ema": lambda: optax.chain(base(), averaging.power_ema(6.94)),
      "power_ema2": lambda: optax.chain(base(), averaging.power_ema(6.94),
                                        averaging.power_ema(16.97)),
      "lawa": lambda: optax.chain(base(), averaging.lawa(20, 64)),  # L=20, nu=64
      "lawa_offload": lambda: optax.chain(base(), averaging.lawa(20, 64, offload=True)),
      "swa_every64": lambda: optax.chain(base(), averaging.swa(0, 64)),
  }
  if naive:
    out["lawa_naive"] = out["lawa"]
  return out


def _nbytes(tree: Any) -> dict[str, int]:
  """Bytes of a pytree's arrays by memory kind ("device", "pinned_host")."""
  out: dict[str, int] = {}
  for x in jax.tree.leaves(tree):
    kind = getattr(x.sharding, "memory_kind", None) or "device"
    out[kind] = out.get(kind, 0) + x.nbytes
  return out


def _copied_bytes(hlo: str) -> tuple[int, int]:
  """Bytes written by XLA ``copy`` ops: (on an ordinary step, on a record step).

  An ordinary step runs the entry computation and branch 0 (the false branch,
  no record) of its conditionals; a record step runs everything else.
  """
  per_computation: dict[str, int] = {}
  name = None
  for line in hlo.splitlines():
    header = re.match(r"(ENTRY )?%(\S+) \(.*\{$", line)
    if header:
      name = "ENTRY" if header.group(1) else header.group(2)
      continue
    copy = re.search(r"= [a-z]+(\d+)\[([\d,]+)\]\S* copy\(", line)  # e.g. f32[20,784]
    if copy and name:
      size = int(np.prod([int(d) for d in copy.group(2).split(",")]))
      per_computation[name] = per_computation.get(name, 0) + int(copy.group(1)) // 8 * size
  entry = hlo[hlo.index("\nENTRY"):]
  skips = set(re.findall(r"conditional\(.*branch_computations=\{%([^,}]+)", entry))
  ordinary = per_computation.get("ENTRY", 0) + sum(per_computation.get(s, 0) for s in skips)
  total = sum(per_computation.values())
  return ordinary, total - sum(per_computation.get(s, 0) for s in skips)


class Variant:
  """One compiled train step and its live state."""

  def __init__(self, name: str, tx: optax.GradientTransformation, problem: Problem):
    self.name = name
    # `_after` orders the ring write after the read of the oldest slot; the
    # naive variant drops it to show what XLA does without it.
    patch = (
        mock.patch.object(averaging, "_after", lambda x, dependency: x)
        if name == "lawa_naive"
        else contextlib.nullcontext()
    )
    params = jax.tree.map(jnp.copy, problem.params)
    opt_state = jax.jit(tx.init)(params)
    self.step, self.extra = problem.make_step(tx)
    with patch:
      compiled = self.step.lower(params, opt_state, *self.extra).compile()
    self.temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    self.copied_ordinary, self.copied_record = _copied_bytes(compiled.as_text())
    self.step = compiled
    averages = [
        s
        for t in (averaging.LawaState, averaging.EmaWeightsState,
                  averaging.PowerEmaState, averaging.SwaState)
        for _, s in optax.tree.get_all_with_path(opt_state, t.__name__)
    ]
    self.state_bytes = _nbytes(averages)
    self.carry = (params, opt_state)
    self.run(1)

  def run(self, steps: int) -> tuple[float, float]:
    """Wall and CPU (all threads of this process) seconds per step."""
    start, start_cpu = time.perf_counter(), time.process_time()
    params, opt_state = self.carry
    for _ in range(steps):
      params, opt_state = self.step(params, opt_state, *self.extra)
    jax.block_until_ready((params, opt_state))
    self.carry = (params, opt_state)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall / steps, cpu / steps


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", default="mlp", help="mlp, or a registered name")
  parser.add_argument("--size", default="small", help="workload size (not mlp)")
  parser.add_argument("--batch-size", type=int, default=None)
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--period", type=int, default=64, help="steps per timing")
  parser.add_argument("--naive", action="store_true", help="add lawa_naive")
  parser.add_argument(
      "--only", default="", help="comma-separated variant names (nadamw always runs)"
  )
  args = parser.parse_args(argv)

  if args.workload == "mlp":
    problem = mlp_problem(args.batch_size or 256)
  else:
    problem = workload_problem(args.workload, args.size, args.batch_size)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(problem.params))
  n_params = sum(x.size for x in jax.tree.leaves(problem.params))
  print(
      f"{problem.name}: {n_params / 1e6:.2f}M params (P = {param_bytes / 1e6:.1f} MB), "
      f"jax {jax.__version__} on {jax.devices()[0].device_kind}, "
      f"{args.rounds} rounds x {args.period} steps"
  )

  chosen = variants(args.naive)
  if args.only:
    keep = {"nadamw", *args.only.split(",")}
    unknown = keep - set(chosen)
    if unknown:
      parser.error(f"unknown variants {sorted(unknown)}; have {sorted(chosen)}")
    chosen = {name: make for name, make in chosen.items() if name in keep}
  runs = {name: Variant(name, make(), problem) for name, make in chosen.items()}
  times: dict[str, list[float]] = {name: [] for name in runs}
  cpu_times: dict[str, list[float]] = {name: [] for name in runs}
  for round_index in range(args.rounds):
    names = list(runs)
    shift = round_index % len(names)  # rotate the order: no variant always first
    for name in names[shift:] + names[:shift]:
      wall, cpu = runs[name].run(args.period)
      times[name].append(wall)
      cpu_times[name].append(cpu)

  base = runs["nadamw"]
  base_times = np.array(times["nadamw"])
  base_cpu = np.array(cpu_times["nadamw"])
  print(
      f"\n{'variant':18s} {'ms/step':>7s} {'ratio':>6s} {'(min..max)':>13s} {'best':>6s}"
      f" {'cpu':>6s}"
      f" {'dev +P':>6s} {'host +P':>7s} {'temp +MB':>8s} {'copy MB/step':>12s}"
      f" {'copy MB/record':>14s}"
  )
  for name, run in runs.items():
    ratios = np.array(times[name]) / base_times
    device = run.state_bytes.get("device", 0) / param_bytes
    host = run.state_bytes.get("pinned_host", 0) / param_bytes
    print(
        f"{name:18s} {np.median(times[name]) * 1e3:7.2f} {np.median(ratios):6.3f} "
        f"({ratios.min():5.3f}..{ratios.max():5.3f}) "
        f"{min(times[name]) / base_times.min():6.3f} "
        f"{np.median(np.array(cpu_times[name]) / base_cpu):6.3f} {device:6.2f} {host:7.2f} "
        f"{(run.temp_bytes - base.temp_bytes) / 1e6:8.1f} "
        f"{(run.copied_ordinary - base.copied_ordinary) / 1e6:12.1f} "
        f"{(run.copied_record - base.copied_record) / 1e6:14.1f}"
    )


if __name__ == "__main__":
  main()
