"""Tests for algoperf_avg.training.checkpoints: round trips, pruning, crash safety."""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algoperf_avg import spec
from algoperf_avg.training import checkpoints

# When a corrupt checkpoint fails to restore, orbax leaves internal async work
# behind (an unawaited coroutine, a callback on a closed event loop); the
# warnings surface at a random later garbage collection, in whichever test runs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_state(step: int = 0):
  params = {
      "dense": {
          "kernel": jnp.arange(12, dtype=jnp.float32).reshape(4, 3) + step,
          "bias": jnp.linspace(-1, 1, 3, dtype=jnp.bfloat16),
      }
  }
  optimizer = optax.chain(optax.adam(1e-3), optax.ema(0.9))
  return {
      "params": params,
      "opt_state": optimizer.init(params),  # NamedTuples, int32 count, EmptyState
      "rng": jax.random.key(step),
      "rng_data": jax.random.key_data(jax.random.split(jax.random.key(7), 4)),
      "data_position": step * 128,
      "np_scalar": np.float32(0.25),
      "np_array": np.arange(5, dtype=np.int32),
      "nothing": None,
  }


def assert_bit_identical(expected, actual):
  assert jax.tree.structure(expected) == jax.tree.structure(actual)

  def check(a, b):
    if checkpoints._is_key(a):
      assert b.dtype == a.dtype
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert type(np.asarray(a)) is type(np.asarray(b))
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()

  jax.tree.map(check, expected, actual)


def test_round_trip_is_bit_identical(tmp_path):
  state = make_state(3)
  metadata = {"step": 3, "accumulated_submission_time": 12.5,
              "evals": [{"validation/loss": float("nan")}], "preemptions": 1}
  checkpoints.save_checkpoint(tmp_path, 3, state, metadata)
  step, restored, restored_metadata = checkpoints.restore_latest(tmp_path, state)
  assert step == 3
  assert_bit_identical(state, restored)
  assert type(restored["data_position"]) is int
  assert type(restored["np_scalar"]) is np.float32
  assert isinstance(restored["np_array"], np.ndarray)
  assert type(restored["opt_state"][0][0]) is optax.ScaleByAdamState
  assert restored_metadata["preemptions"] == 1
  assert np.isnan(restored_metadata["evals"][0]["validation/loss"])


def test_abstract_template_from_eval_shape(tmp_path):
  state = make_state(2)
  del state["data_position"], state["np_scalar"]  # eval_shape makes these arrays
  checkpoints.save_checkpoint(tmp_path, 2, state, {})
  template = jax.eval_shape(lambda: make_state(0))
  del template["data_position"], template["np_scalar"]
  restored = checkpoints.restore_latest(tmp_path, template)
  assert restored.step == 2
  assert restored.state["rng"].dtype == state["rng"].dtype
  assert jnp.array_equal(
      jax.random.key_data(restored.state["rng"]), jax.random.key_data(state["rng"]))
  assert restored.state["params"]["dense"]["bias"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      restored.state["params"]["dense"]["kernel"], state["params"]["dense"]["kernel"])


def test_empty_or_missing_directory_is_a_fresh_run(tmp_path):
  assert checkpoints.restore_latest(tmp_path / "missing", make_state()) is None
  assert checkpoints.restore_latest(tmp_path, make_state()) is None
  assert checkpoints.list_steps(tmp_path / "missing") == []


def test_keeps_latest_k(tmp_path):
  for step in range(1, 6):
    checkpoints.save_checkpoint(tmp_path, step * 10, make_state(step), {"s": step})
  assert checkpoints.list_steps(tmp_path) == [40, 50]
  for step in (60, 70):
    checkpoints.save_checkpoint(tmp_path, step, make_state(), {}, keep=3)
  assert checkpoints.list_steps(tmp_path) == [50, 60, 70]
  checkpoints.save_checkpoint(tmp_path / "all", 1, make_state(), {}, keep=None)
  checkpoints.save_checkpoint(tmp_path / "all", 2, make_state(), {}, keep=None)
  checkpoints.save_checkpoint(tmp_path / "all", 3, make_state(), {}, keep=None)
  assert checkpoints.list_steps(tmp_path / "all") == [1, 2, 3]


def test_resave_replaces_same_and_later_steps(tmp_path):
  for step in (1, 2, 3):
    checkpoints.save_checkpoint(tmp_path, step, make_state(step), {"v": "old"}, keep=5)
  checkpoints.save_checkpoint(tmp_path, 2, make_state(2), {"v": "new"}, keep=5)
  assert checkpoints.list_steps(tmp_path) == [1, 2]
  assert checkpoints.restore_latest(tmp_path, make_state()).metadata == {"v": "new"}


def test_restore_ignores_half_written_tmp_dir(tmp_path):
  checkpoints.save_checkpoint(tmp_path, 5, make_state(5), {"step": 5})
  # What a save killed before its final rename leaves behind.
  for step in (6, 9):
    partial = tmp_path / f"{step}.orbax-checkpoint-tmp" / "state"
    partial.mkdir(parents=True)
    (partial / "_METADATA").write_text("{trunc")
  assert checkpoints.list_steps(tmp_path) == [5]
  restored = checkpoints.restore_latest(tmp_path, make_state())
  assert restored.step == 5 and restored.metadata == {"step": 5}
  # Saving over the leftovers works and cleans them up.
  checkpoints.save_checkpoint(tmp_path, 6, make_state(6), {"step": 6})
  assert sorted(os.listdir(tmp_path)) == ["5", "6"]
  assert checkpoints.restore_latest(tmp_path, make_state()).step == 6


def big_state(step):
  return {"w": np.full((1024, 1024), step, np.float32), "rng": jax.random.key(step)}


def corrupt(directory, step):
  for path in glob.glob(f"{directory}/{step}/state/**/d/*", recursive=True):
    with open(path, "wb") as f:
      f.write(b"garbage")


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
  checkpoints.save_checkpoint(tmp_path, 1, big_state(1), {"step": 1})
  checkpoints.save_checkpoint(tmp_path, 2, big_state(2), {"step": 2})
  corrupt(tmp_path, 2)
  with caplog.at_level(logging.WARNING, logger=checkpoints.__name__):
    restored = checkpoints.restore_latest(tmp_path, big_state(0))
  assert restored.step == 1
  assert np.all(restored.state["w"] == 1)
  assert "checkpoint 2" in caplog.text and "cannot be restored" in caplog.text
  # Training continues from step 1; its next save supersedes the corrupt one.
  checkpoints.save_checkpoint(tmp_path, 2, big_state(22), {"step": 2})
  assert np.all(checkpoints.restore_latest(tmp_path, big_state(0)).state["w"] == 22)


def test_missing_metadata_item_falls_back(tmp_path):
  checkpoints.save_checkpoint(tmp_path, 1, big_state(1), {"step": 1})
  checkpoints.save_checkpoint(tmp_path, 2, big_state(2), {"step": 2})
  for path in glob.glob(f"{tmp_path}/2/metadata/*"):
    os.remove(path)
  assert checkpoints.restore_latest(tmp_path, big_state(0)).step == 1


def test_nothing_restorable_is_usage_error(tmp_path):
  checkpoints.save_checkpoint(tmp_path, 1, big_state(1), {})
  with pytest.raises(spec.UsageError, match="step 1: "):
    checkpoints.restore_latest(tmp_path, {"other": np.zeros(3)})
  corrupt(tmp_path, 1)
  with pytest.raises(spec.UsageError, match="no checkpoint in .* can be restored"):
    checkpoints.restore_latest(tmp_path, big_state(0))


def test_bad_arguments(tmp_path):
  with pytest.raises(TypeError, match="not JSON-serialisable"):
    checkpoints.save_checkpoint(tmp_path, 1, make_state(), {"x": np.float32(1)})
  with pytest.raises(ValueError, match="step"):
    checkpoints.save_checkpoint(tmp_path, -1, make_state(), {})
  with pytest.raises(ValueError, match="keep"):
    checkpoints.save_checkpoint(tmp_path, 1, make_state(), {}, keep=0)
  assert checkpoints.list_steps(tmp_path) == []


SAVE_FOREVER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import jax
    from algoperf_avg.training import checkpoints
    directory = sys.argv[1]
    step = 0
    while True:
      step += 1
      state = {"w": np.full((2048, 1024), step, np.float32),
               "rng": jax.random.key(step)}
      print("saving", step, time.perf_counter(), flush=True)
      checkpoints.save_checkpoint(directory, step, state, {"step": step})
      print("saved", step, time.perf_counter(), flush=True)
""")


@pytest.mark.parametrize("kill_at", [0.2, 0.5])
def test_sigkill_during_saves_leaves_restorable_checkpoint(tmp_path, kill_at):
  directory = str(tmp_path / "ckpt")
  with subprocess.Popen(
      [sys.executable, "-c", SAVE_FOREVER, directory],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      cwd=REPO_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
  ) as child:
    try:
      started, durations = {}, []
      while True:
        event, step, when = child.stdout.readline().split()
        if event == "saved":
          durations.append(float(when) - started[step])
        elif len(durations) < 3:
          started[step] = float(when)
        else:
          break
      # Aim the kill into the middle of writing step 4 (it usually lands there
      # and leaves a tmp directory; the assertions hold wherever it lands).
      time.sleep(kill_at * float(np.mean(durations)))
      child.send_signal(signal.SIGKILL)
      child.wait(timeout=30)
    finally:
      if child.poll() is None:
        child.kill()
  restored = checkpoints.restore_latest(directory, big_state(0))
  assert restored is not None and restored.step >= 3
  assert restored.metadata == {"step": restored.step}
  assert np.all(restored.state["w"] == restored.step)
  assert jnp.array_equal(
      jax.random.key_data(restored.state["rng"]),
      jax.random.key_data(jax.random.key(restored.step)))
  # Resuming saves over whatever the kill left and removes it.
  next_step = restored.step + 1
  checkpoints.save_checkpoint(directory, next_step, big_state(next_step), {})
  assert checkpoints.list_steps(directory) == [restored.step, next_step]
  assert not [name for name in os.listdir(directory) if "tmp" in name]


SHARDED_ROUND_TRIP = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from algoperf_avg.training import checkpoints
    mesh = jax.make_mesh((2,), ("data",))
    by_data = NamedSharding(mesh, P("data"))
    state = {
        "w": jax.device_put(jnp.arange(8.0), by_data),
        "replicated": jax.device_put(jnp.ones(4), NamedSharding(mesh, P())),
        "keys": jax.device_put(jax.random.split(jax.random.key(0), 2), by_data),
    }
    checkpoints.save_checkpoint(sys.argv[1], 1, state, {})
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    for template in (state, abstract):
      restored = checkpoints.restore_latest(sys.argv[1], template).state
      for name in state:
        assert restored[name].sharding == state[name].sharding, name
        assert restored[name].dtype == state[name].dtype, name
    try:
      checkpoints.restore_latest(sys.argv[1], jax.eval_shape(lambda: state))
    except ValueError as e:
      assert "abstract mesh" in str(e)
    else:
      raise AssertionError("abstract mesh accepted")
    print("ok")
""")


def test_sharded_round_trip_on_two_cpu_devices(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run(
      [sys.executable, "-c", SHARDED_ROUND_TRIP, str(tmp_path)],
      capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120,
  )
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_checkpoint_cadence_is_separate_from_evals(tmp_path):
  from algoperf_avg import registry
  from algoperf_avg.training import runner
  from tests.toy import ToyWorkload

  workload = ToyWorkload(validation_target=2.0)
  sub = registry.load_submission("nadamw")
  hp = runner.resolve_hparams(workload, sub, {})
  for interval, expected in ((1e9, [5]), (0.0, [25, 30])):
    log_dir = tmp_path / f"every_{interval}"
    runner.train_once(workload, sub, hp, 0, None, str(log_dir), runner.RunOptions(
        max_global_steps=30, eval_every_steps=5, checkpoint_every_sec=interval))
    assert checkpoints.list_steps(log_dir / "checkpoints") == expected  # keep-2 as before
    assert sorted(os.listdir(log_dir / "input_state")) == [str(s) for s in expected]
