"""The runner's cost: a bare jitted loop vs `runner.train_once`, same step and data.

  .venv/bin/python benchmarks/runner_overhead.py [--steps 400] [--rounds 3]

Both run the optax shortcut's jitted, donating NadamW step of OGBG-small on
the same batches (the workload's training stream, sharded over the same
mesh). The bare loop dispatches step after step and waits once at the end; the
runner adds AlgoPerf's bookkeeping: data selection through the submission API,
the one-step-in-flight clock, eval-due checks. Only the second half of each
run is timed (the runner: the difference of its submission time between its
two evaluations), so compilation and evaluation are out of both. Rounds
alternate bare / runner; the ratio printed is median(bare) / median(runner)
seconds per step (1.0: no overhead; the goal is >= 0.97 on CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from algoperf_avg.training import sharding  # noqa: E402


def bare(workload, submission, hparams, steps: int) -> float:
  import jax

  from algoperf_avg.training import loop
  from algoperf_avg.training import trial as trial_lib
  from algoperf_avg.training.runner import RunOptions

  trial = trial_lib.Trial(workload, submission, hparams, 0, None, None,
                          RunOptions(save_checkpoints=False))
  trial.mesh = sharding.make_mesh()
  data_rng, opt_rng, model_rng, rng = jax.random.split(jax.random.key(0), 4)
  with jax.set_mesh(trial.mesh):
    state = loop.place_initial_state(trial, model_rng, opt_rng)
    step = submission.init_optimizer_state.__self__._step
    batches = sharding.sharded_iterator(
        workload.train_batches(data_rng, None, trial.batch_size), trial.mesh)
    params, model_state, opt = state["params"], state["model_state"], state["optimizer_state"]
    half = steps // 2
    for i in range(steps):
      if i == half:
        jax.block_until_ready(params)
        start = time.perf_counter()
      params, model_state, opt, _ = step(params, model_state, opt, next(batches),
                                         jax.random.fold_in(rng, i))
    jax.block_until_ready(params)
    return (time.perf_counter() - start) / (steps - half)


def with_runner(workload, submission, hparams, steps: int) -> float:
  from algoperf_avg.training import runner

  half = steps // 2
  result = runner.train_once(workload, submission, hparams, 0, None, None, runner.RunOptions(
      max_global_steps=steps, eval_every_steps=half, stop_at_target=False,
      save_checkpoints=False, log_online_metrics=False))
  first, last = result.eval_rows[0], result.eval_rows[-1]
  return (last["score"] - first["score"]) / (last["global_step"] - first["global_step"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  from algoperf_avg import registry
  from algoperf_avg.training import runner

  workload = registry.get_workload("ogbg", "small")
  times = {"bare": [], "runner": []}
  for _ in range(args.rounds):
    for name, fn in (("bare", bare), ("runner", with_runner)):
      submission = registry.load_submission("nadamw")
      hparams = runner.resolve_hparams(workload, submission, {})
      times[name].append(fn(workload, submission, hparams, args.steps))
      print(f"{name}: {times[name][-1] * 1e3:.2f} ms/step", flush=True)
  ratio = statistics.median(times["bare"]) / statistics.median(times["runner"])
  print(f"OGBG-small, {len(sharding.make_mesh().devices)} device(s), {args.steps} steps x "
        f"{args.rounds} rounds: bare {statistics.median(times['bare']) * 1e3:.2f} ms/step, "
        f"runner {statistics.median(times['runner']) * 1e3:.2f} ms/step, "
        f"ratio bare/runner {ratio:.3f}")


if __name__ == "__main__":
  sharding.cpu_device_flags()
  main()
