"""The workload contract: every registered workload, every size, one set of checks.

A new workload is held to this without new test code: its small size always,
its full size when `tests/workload_data.FULL_SIZE` says how to write a tiny
dataset in its real format and which options make one step fit on a CPU.

Checked per (workload, size):
* ``init_model_fn`` is pure (works under `jax.eval_shape`) and `describe`'s
  parameter count is the model's; parameter types cover every leaf;
* one training step (NadamW through the runner) has a finite loss, and the
  evaluation after it reports the loss and target metric of every split;
* every eval split is seen exactly once (the engine's valid rows add up to
  the split size) and padded evaluation equals unpadded;
* evaluation (of the validation split: every split takes the same path) on 1
  and 2 simulated devices gives the same metrics, and a training step runs on 2;
* a run stopped mid-way and resumed from its checkpoint logs the same rows as
  an unbroken run (at the small size: checkpointing is the runner's and the
  same for every size, while a full-size model takes minutes per eval here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from algoperf_avg import registry
from algoperf_avg.training import runner
from tests import workload_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Checked in the default run; every other workload's cases take minutes each
# on 2 CPU cores (compiling their models), so they run with ``-m slow`` (CI).
DEFAULT_RUN = {"ogbg"}


def _cases():
  cases = []
  for name in sorted(registry.WORKLOADS):
    for size in registry.workload_class(name).sizes:
      marks = ()
      if size == "full" and name not in workload_data.FULL_SIZE:
        marks = pytest.mark.skip(reason=f"no tiny {name} dataset in tests/workload_data.py")
      elif name not in DEFAULT_RUN or (size == "full" and workload_data.FULL_SIZE[name].slow):
        marks = pytest.mark.slow
      cases.append(pytest.param(name, size, id=f"{name}-{size}", marks=marks))
  return cases


CASES = _cases()
SMALL_CASES = [case for case in CASES if case.values[1] == "small"]


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
  """Data root per workload with a full-size writer, written on first use."""
  roots: dict[str, str] = {}
  sizes: dict[str, dict[str, int]] = {}

  def root_for(name: str) -> str:
    if name not in roots:
      roots[name] = str(tmp_path_factory.mktemp(f"data_{name}"))
      written = workload_data.FULL_SIZE[name].write(roots[name])
      sizes[name] = {split: len(examples) for split, examples in written.items()}
    return roots[name]

  root_for.sizes = sizes
  return root_for


def _expected_counts(workload, name, size, data_roots):
  """Examples per eval split: the config's, or what the tiny dataset holds."""
  if size != "full":
    return {"eval_train": workload.num_eval_train_examples,
            "validation": workload.num_validation_examples,
            "test": workload.num_test_examples}
  written = data_roots.sizes[name]
  return {"eval_train": min(workload.num_eval_train_examples, written["train"]),
          "validation": written["validation"], "test": written.get("test", 0)}


def _setup(name, size, data_roots):
  """``(workload, data_dir, submission)`` for one case."""
  options, data_dir, batch_size = {}, None, None
  if size == "full":
    full = workload_data.FULL_SIZE[name]
    options, batch_size, data_dir = dict(full.options), full.batch_size, data_roots(name)
  workload = registry.get_workload(name, size, **options)
  submission = registry.load_submission("nadamw")
  if batch_size:
    submission = dataclasses.replace(submission, get_batch_size=lambda _: batch_size)
  return workload, data_dir, submission


def _splits(workload):
  return [s for s, n in (("train", workload.num_eval_train_examples),
                         ("validation", workload.num_validation_examples),
                         ("test", workload.num_test_examples)) if n]


@pytest.mark.parametrize("name, size", CASES)
def test_init_is_pure_and_describe_counts_the_params(name, size, data_roots):
  workload, _, _ = _setup(name, size, data_roots)
  shapes = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
  params, _ = workload.init_model_fn(jax.random.key(0))
  assert jax.tree.map(lambda p: (p.shape, p.dtype), params) == jax.tree.map(
      lambda s: (s.shape, s.dtype), shapes[0])
  assert workload.describe()["params"] == sum(int(np.size(p)) for p in jax.tree.leaves(params))
  assert jax.tree.structure(workload.model_params_types) == jax.tree.structure(params)


@pytest.mark.parametrize("name, size", CASES)
def test_one_step_then_eval_reports_every_split(name, size, data_roots):
  workload, data_dir, submission = _setup(name, size, data_roots)
  hparams = runner.resolve_hparams(workload, submission, {})
  result = runner.train_once(workload, submission, hparams, 0, data_dir, None,
                             runner.RunOptions(max_global_steps=1, save_checkpoints=False,
                                               log_online_metrics=False))
  assert result.status == "completed" and result.global_step == 1
  row = result.eval_rows[-1]
  for split in _splits(workload):
    for metric in ("loss", workload.target_metric_name):
      assert math.isfinite(row[f"{split}/{metric}"]), (split, metric, row)


@pytest.mark.parametrize("name, size", CASES)
def test_each_example_once_and_padding_changes_nothing(name, size, data_roots):
  workload, data_dir, _ = _setup(name, size, data_roots)
  params, state = workload.init_model_fn(jax.random.key(1))
  evaluator = workload.evaluator
  counts = _expected_counts(workload, name, size, data_roots)
  for split, n in counts.items():
    if not n:
      continue
    batches = list(evaluator.host_batches(split, data_dir, workload.eval_batch_size))
    valid = sum(float(np.sum(b["valid"])) for b in batches)
    assert valid == n, f"{split} has {n} examples, the engine saw {valid}"
  n = counts["validation"]
  whole = min(n, workload.eval_batch_size)
  ragged = max(1, whole // 3 + 1)  # leaves a short last batch to pad
  one = evaluator.evaluate("validation", params, state, None, data_dir, whole)
  other = evaluator.evaluate("validation", params, state, None, data_dir, ragged)
  for key, value in one.items():
    np.testing.assert_allclose(other[key], value, rtol=2e-5, err_msg=key)


@pytest.mark.parametrize("name, size", SMALL_CASES)
def test_resumed_run_equals_unbroken(name, size, data_roots, tmp_path):
  workload, data_dir, submission = _setup(name, size, data_roots)
  hparams = runner.resolve_hparams(workload, submission, {})

  def train(log_dir, steps):
    options = runner.RunOptions(max_global_steps=steps, eval_every_steps=2,
                                stop_at_target=False, log_online_metrics=False)
    return runner.train_once(workload, submission, hparams, 0, data_dir, log_dir, options)

  unbroken = train(str(tmp_path / "unbroken"), 4).eval_rows
  train(str(tmp_path / "resumed"), 2)  # "preempted" after its step-2 checkpoint
  resumed = train(str(tmp_path / "resumed"), 4).eval_rows
  assert [r["global_step"] for r in resumed] == [r["global_step"] for r in unbroken] == [2, 4]
  assert resumed[-1]["preemption_count"] == 1
  for a, b in zip(unbroken, resumed, strict=True):
    for key in a:
      if "/" in key:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-6, err_msg=key)


DEVICE_CHILD = """
import dataclasses, json, sys
import jax
from algoperf_avg import registry
from algoperf_avg.training import runner, sharding
cases = json.loads(sys.argv[1])
out = {}
for case in cases:
  workload = registry.get_workload(case["name"], case["size"], **case["options"])
  mesh = sharding.make_mesh()
  params, state = sharding.replicate(workload.init_model_fn(jax.random.key(1)), mesh)
  metrics = workload.eval_model(workload.eval_batch_size, params, state, None,
                                case["data_dir"], splits=("validation",))
  sub = registry.load_submission("nadamw")
  if case["batch_size"]:
    sub = dataclasses.replace(sub, get_batch_size=lambda _: case["batch_size"])
  hp = runner.resolve_hparams(workload, sub, {})
  result = runner.train_once(workload, sub, hp, 0, case["data_dir"], None, runner.RunOptions(
      max_global_steps=1, save_checkpoints=False, log_online_metrics=False))
  out[case["id"]] = {"devices": jax.device_count(), "eval": metrics,
                     "train_loss": result.eval_rows[-1]["train/loss"]}
print("RESULT " + json.dumps(out))
"""


def _run_devices(cases, *device_counts):
  """The child's results for each device count; the children run side by side
  (the small-size check took 358 s cold this way, 413 s one after the other)."""
  procs = []
  for devices in device_counts:
    env = dict(os.environ, PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    procs.append(subprocess.Popen([sys.executable, "-c", DEVICE_CHILD, json.dumps(cases)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=ROOT))
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    results.append(json.loads(line[len("RESULT "):]))
  return results


@pytest.mark.parametrize("scope", ["default", pytest.param("small", marks=pytest.mark.slow)])
def test_one_and_two_devices_evaluate_alike(data_roots, scope):
  """On 1 and 2 devices: the default run's cases, or (slow) every small size."""
  cases = []
  for param in CASES:
    if scope == "default" and param.marks:  # skipped, or slow
      continue
    if scope == "small" and param.values[1] != "small":
      continue
    name, size = param.values
    full = workload_data.FULL_SIZE.get(name) if size == "full" else None
    cases.append({"id": param.id, "name": name, "size": size,
                  "options": dict(full.options) if full else {},
                  "batch_size": full.batch_size if full else None,
                  "data_dir": data_roots(name) if full else None})
  one, two = _run_devices(cases, 1, 2)
  for case in cases:
    a, b = one[case["id"]], two[case["id"]]
    assert (a["devices"], b["devices"]) == (1, 2)
    assert math.isfinite(b["train_loss"]), case["id"]
    assert a["eval"].keys() == b["eval"].keys()
    for key, value in a["eval"].items():
      np.testing.assert_allclose(b["eval"][key], value, rtol=1e-5,
                                 err_msg=f"{case['id']} {key}")
