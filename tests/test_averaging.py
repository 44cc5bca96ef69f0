"""LAWA / EMA / SWA transforms against numpy references, jitted and donated."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from algoperf_avg.averaging import online as averaging
from algoperf_avg.training.optimizers import nadamw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(dtypes=("float32", "float32"), offset=0.0):
  keys = jax.random.split(jax.random.key(0), 2)
  return {
      "w": (offset + jax.random.normal(keys[0], (3, 4))).astype(dtypes[0]),
      "b": (offset + jax.random.normal(keys[1], (5,))).astype(dtypes[1]),
  }


def _train(tx, params, num_steps, lr=0.1):
  """Runs chain(sgd, tx) under one jit (a scan) on random gradients.

  Returns the post-update weights and `averaged_params` after every step, as
  float64 numpy trees with a leading step axis, and the final state.
  """
  opt = optax.chain(optax.sgd(lr), tx)

  def step(carry, key):
    params, state = carry
    grads = jax.tree.map(
        lambda p: jax.random.normal(key, p.shape, p.dtype), params
    )
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), (params, averaging.averaged_params(state, params))

  keys = jax.random.split(jax.random.key(1), num_steps)
  (_, state), (weights, averages) = jax.jit(
      lambda p: jax.lax.scan(step, (p, opt.init(p)), keys)
  )(params)
  as64 = lambda t: jax.tree.map(lambda x: np.asarray(x, np.float64), t)  # noqa: E731
  return as64(weights), as64(averages), state


def _recorded(step, every, start_step):
  """The 1-based steps recorded up to ``step`` (the documented schedule)."""
  return [s for s in range(1, step + 1) if s >= start_step and (s - start_step) % every == 0]


def _reference(kind, weights, params0, every, start_step, window=None, decay=None):
  """numpy float64 average after each step (a tree with a leading step axis)."""

  def one_leaf(w, p0):
    out = []
    for t in range(1, len(w) + 1):
      steps = _recorded(t, every, start_step)
      if not steps:
        out.append(w[t - 1])
      elif kind == "lawa":
        out.append(np.mean([w[s - 1] for s in steps[-window:]], axis=0))
      elif kind == "swa":
        out.append(np.mean([w[s - 1] for s in steps], axis=0))
      else:
        average = np.asarray(p0, np.float64)
        for s in steps:
          average = decay * average + (1 - decay) * w[s - 1]
        out.append(average)
    return np.stack(out)

  return jax.tree.map(one_leaf, weights, params0)


_TRANSFORMS = {  # name -> (factory, reference kwargs)
    "lawa": (lambda **kw: averaging.lawa(3, 2, **kw), dict(window=3, every=2, start_step=0)),
    "ema": (lambda **kw: averaging.ema(0.9, **kw), dict(decay=0.9, every=1, start_step=0)),
    "swa": (lambda **kw: averaging.swa(4, 1, **kw), dict(every=1, start_step=4)),
}


class ScheduleTest(parameterized.TestCase):
  """Each transform, jitted, against its numpy reference after every step."""

  @parameterized.parameters(
      (3, 1, 0), (4, 2, 0), (5, 3, 7), (1, 1, 0), (20, 1, 0), (2, 4, 5)
  )
  def test_lawa_window_mean(self, window, every, start_step):
    # (20, 1, 0) over 30 steps covers the partially filled ring.
    params = _params()
    weights, averages, _ = _train(averaging.lawa(window, every, start_step), params, 30)
    expected = _reference("lawa", weights, params, every, start_step, window=window)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
                 averages, expected)

  @parameterized.parameters((0.9, 1, 0), (0.5, 3, 0), (0.8, 2, 5))
  def test_ema_recursion(self, decay, every, start_step):
    params = _params()
    weights, averages, _ = _train(averaging.ema(decay, every, start_step), params, 25)
    expected = _reference("ema", weights, params, every, start_step, decay=decay)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
                 averages, expected)

  @parameterized.parameters((0, 1), (6, 1), (3, 4))
  def test_swa_mean(self, start_step, every):
    params = _params()
    weights, averages, _ = _train(averaging.swa(start_step, every), params, 25)
    expected = _reference("swa", weights, params, every, start_step)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
                 averages, expected)

  @parameterized.parameters("lawa", "ema", "swa")
  def test_updates_unchanged_and_training_unaffected(self, name):
    params = _params()
    plain, _, _ = _train(optax.identity(), params, 12)
    averaged, _, state = _train(_TRANSFORMS[name][0](), params, 12)
    jax.tree.map(np.testing.assert_array_equal, averaged, plain)
    records = {"lawa": 6, "ema": 12, "swa": 9}[name]  # every=2; every=1; from step 4
    self.assertEqual(int(optax.tree.get(state, "records")), records)

  def test_bad_arguments(self):
    with self.assertRaises(ValueError):
      averaging.lawa(0, 1)
    with self.assertRaises(ValueError):
      averaging.ema(0.9, every=0)
    with self.assertRaises(ValueError):
      averaging.swa(-1)
    with self.assertRaisesRegex(ValueError, "params"):
      tx = averaging.lawa(2, 1)
      tx.update(_params(), tx.init(_params()))


class AccuracyTest(parameterized.TestCase):
  """10,000 records: no drift from running sums in float32."""

  def _long_run(self, tx):
    params = {"w": 10.0 + jax.random.normal(jax.random.key(3), (64,))}
    return _train(tx, params, 10_000, lr=0.01)

  def test_lawa_10000_records(self):
    weights, averages, _ = self._long_run(averaging.lawa(20, 1))
    w = weights["w"]
    expected = w[-20:].mean(axis=0)
    error = np.abs(averages["w"][-1] - expected).max() / np.abs(expected).max()
    self.assertLess(error, 1e-6)
    # The test can fail: a plain float32 running sum drifts past the bound.
    w32, total = w.astype(np.float32), np.zeros(64, np.float32)
    for k in range(len(w32)):
      total += w32[k] - (w32[k - 20] if k >= 20 else 0)
    self.assertGreater(np.abs(total / 20 - expected).max() / np.abs(expected).max(), 1e-6)

  def test_swa_10000_records(self):
    weights, averages, _ = self._long_run(averaging.swa(0, 1))
    expected = weights["w"].mean(axis=0)
    error = np.abs(averages["w"][-1] - expected).max() / np.abs(expected).max()
    self.assertLess(error, 1e-6)


class DtypeTest(parameterized.TestCase):

  @parameterized.parameters("lawa", "ema", "swa")
  def test_bf16_params_average_in_float32(self, name):
    make, kwargs = _TRANSFORMS[name]
    params = _params(("float32", "bfloat16"), offset=3.0)
    weights, averages, state = _train(make(), params, 15)
    kind = "ema" if name == "ema" else name
    expected = _reference(kind, weights, params, **kwargs)
    # The mean is taken in float32, then rounded once to bfloat16.
    np.testing.assert_allclose(averages["b"], expected["b"], rtol=2**-8)
    np.testing.assert_allclose(averages["w"], expected["w"], rtol=1e-6)
    final = averaging.averaged_params(state, params)
    self.assertEqual(final["b"].dtype, jnp.bfloat16)
    self.assertEqual(final["w"].dtype, jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
      if "lawa_ring" not in jax.tree_util.keystr(path) and leaf.ndim:
        self.assertIn(leaf.dtype, (jnp.float32, jnp.complex64), jax.tree_util.keystr(path))


def _copied_bytes_on_ordinary_steps(hlo: str) -> int:
  """Bytes XLA ``copy`` ops write on a step that records nothing.

  That is, copies in the entry computation and in branch 0 (the false, i.e.
  no-record, branch) of each of its conditionals.
  """
  per_computation, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r"(ENTRY )?%(\S+) \(.*\{$", line)
    if header:
      name = "ENTRY" if header.group(1) else header.group(2)
      continue
    copy = re.search(r"= [a-z]+(\d+)\[([\d,]+)\]\S* copy\(", line)  # not scalars
    if copy and name:
      size = int(np.prod([int(d) for d in copy.group(2).split(",") if d]))
      per_computation[name] = per_computation.get(name, 0) + int(copy.group(1)) // 8 * size
  entry = hlo[hlo.index("\nENTRY"):]
  skips = re.findall(r"conditional\(.*branch_computations=\{%([^,}]+)", entry)
  return per_computation.get("ENTRY", 0) + sum(per_computation.get(s, 0) for s in skips)


class DonationTest(parameterized.TestCase):
  """The harness's pattern: jit(init), then a train step donating everything."""

  def _step(self, opt):
    def step(params, state, grads):
      updates, state = opt.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    return step

  @parameterized.product(name=("lawa", "ema", "swa"), jit_init=(True, False))
  def test_donated_step_matches_reference(self, name, jit_init):
    opt = optax.chain(optax.sgd(0.1), _TRANSFORMS[name][0]())
    step = jax.jit(self._step(opt), donate_argnums=(0, 1))
    params = _params()
    state = jax.jit(opt.init)(params) if jit_init else opt.init(params)
    reference_params = _params()
    reference_state = opt.init(reference_params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(7):
      previous = jax.tree.leaves((params, state))
      params, state = step(params, state, grads)
      self.assertTrue(all(x.is_deleted() for x in previous))  # really donated
      reference_params, reference_state = self._step(opt)(
          reference_params, reference_state, grads
      )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        averaging.averaged_params(state, params),
        averaging.averaged_params(reference_state, reference_params),
    )

  @parameterized.parameters(
      ("lawa", lambda: averaging.lawa(8, 16)),
      ("ema", lambda: averaging.ema(0.99)),
      ("ema every", lambda: averaging.ema(0.99, every=16)),
      ("swa", lambda: averaging.swa(0, 16)),
  )
  def test_ordinary_steps_copy_no_buffers(self, name, make):
    # The crux of the design: with donation, a step that records nothing
    # must not copy the averaging buffers (a ring copy costs L x P a step).
    params = {"w": jnp.zeros((256, 384)), "v": jnp.zeros((384, 128))}
    grads = jax.tree.map(jnp.ones_like, params)

    def copied(opt):
      step = jax.jit(self._step(opt), donate_argnums=(0, 1))
      hlo = step.lower(params, opt.init(params), grads).compile().as_text()
      return _copied_bytes_on_ordinary_steps(hlo)

    baseline = copied(nadamw(1e-3))
    self.assertEqual(copied(optax.chain(nadamw(1e-3), make())), baseline, name)


class AveragedParamsTest(absltest.TestCase):
  """`averaged_params` finds the state by name, never by position."""

  def _run(self, opt, steps=3):
    params, weights = _params(), []
    state = opt.init(params)
    for _ in range(steps):
      updates, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
      params = optax.apply_updates(params, updates)
      weights.append(params)
    self.weights = weights
    return params, state

  def test_nested_chain(self):
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.chain(nadamw(0.1), averaging.lawa(2, 1)),
    )
    params, state = self._run(opt)
    expected = jax.tree.map(lambda a, b: (a + b) / 2, *self.weights[-2:])
    jax.tree.map(np.testing.assert_allclose, averaging.averaged_params(state, params),
                 expected)

  def test_inside_inject_hyperparams(self):
    opt = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(optax.sgd(learning_rate), averaging.ema(0.5))
    )(learning_rate=0.1)
    params, state = self._run(opt, steps=1)
    initial = _params()
    expected = jax.tree.map(lambda p0, p: 0.5 * p0 + 0.5 * p, initial, params)
    jax.tree.map(np.testing.assert_allclose,
                 jax.jit(averaging.averaged_params)(state, params), expected)

  def test_no_averaging_and_no_record_yet(self):
    params, state = self._run(nadamw(0.1))
    self.assertIs(averaging.averaged_params(state, params), params)
    params, state = self._run(optax.chain(nadamw(0.1), averaging.swa(start_step=10)))
    jax.tree.map(np.testing.assert_array_equal,
                 averaging.averaged_params(state, params), params)

  def test_several_averages_need_a_name(self):
    opt = optax.chain(nadamw(0.1), averaging.lawa(2, 1), averaging.swa(0, 1))
    params, state = self._run(opt)
    with self.assertRaisesRegex(ValueError, "name="):
      averaging.averaged_params(state, params)
    lawa = averaging.averaged_params(state, params, name="LawaState")
    swa = averaging.averaged_params(state, params, name="SwaState")
    self.assertFalse(np.allclose(lawa["w"], swa["w"]))
    with self.assertRaisesRegex(ValueError, "no EmaWeightsState"):
      averaging.averaged_params(state, params, name="EmaWeightsState")


class OffloadTest(parameterized.TestCase):

  def tearDown(self):
    averaging._host_memory_available.cache_clear()
    super().tearDown()

  @parameterized.parameters("lawa", "ema", "swa")
  def test_offloaded_buffers_give_the_same_average(self, name):
    make, _ = _TRANSFORMS[name]
    kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
    if "pinned_host" not in kinds:
      self.skipTest("no pinned_host memory on this backend")
    results = []
    for offload in (False, True):
      opt = optax.chain(optax.sgd(0.1), make(offload=offload))
      step = jax.jit(DonationTest._step(None, opt), donate_argnums=(0, 1))
      params = _params()
      state = jax.jit(opt.init)(params)
      for k in range(9):
        params, state = step(params, state, jax.tree.map(lambda p, k=k: p * 0 + k, params))
      results.append(averaging.averaged_params(state, params))
      if offload:
        buffers = [x for x in jax.tree.leaves(state) if x.ndim]
        on_host = [x.sharding.memory_kind == "pinned_host" for x in buffers]
        # LAWA keeps its running sum on the device; all else goes to the host.
        self.assertEqual(sum(on_host), len(buffers) - (2 if name == "lawa" else 0))
    jax.tree.map(np.testing.assert_allclose, *results)

  def test_fallback_without_host_memory_warns_once(self):
    class Memory:
      kind = "device"

    class Device:
      def addressable_memories(self):
        return [Memory()]

    averaging._host_memory_available.cache_clear()
    with mock.patch.object(jax, "devices", lambda *a: [Device()]):
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        txs = [averaging.lawa(2, 1, offload=True), averaging.ema(0.9, offload=True)]
    self.assertLen(caught, 1)
    self.assertIn("pinned_host", str(caught[0].message))
    state = txs[0].init(_params())
    self.assertTrue(all(
        x.sharding.memory_kind != "pinned_host" for x in jax.tree.leaves(state)
    ))
    _, state = txs[0].update(_params(), state, _params())  # runs on the device


SHARDED_CHILD = """
import json
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec
from algoperf_avg.averaging import online as averaging
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))  # as algoperf_avg.training.sharding
def replicate(x):  # as the runner does, keeping offloaded buffers on the host
  kind = x.sharding.memory_kind if isinstance(x, jax.Array) else None
  return jax.device_put(x, NamedSharding(mesh, PartitionSpec(), memory_kind=kind))
out = {}
for name, tx in [("lawa", averaging.lawa(3, 2)), ("ema", averaging.ema(0.9)),
                 ("swa", averaging.swa(1, 1)), ("lawa_offload", averaging.lawa(3, 2, offload=True))]:
  opt = optax.chain(optax.sgd(0.1), tx)
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  averages = []
  for sharded in (False, True):
    params = {"w": jnp.arange(12.0).reshape(3, 4)}
    state = jax.jit(opt.init)(params)
    if sharded:
      params, state = jax.tree.map(replicate, (params, state))
    fn = jax.jit(step, donate_argnums=(0, 1))
    for k in range(7):
      grads = jax.tree.map(lambda p: p * 0 + k, params)
      params, state = fn(params, state, grads)
    averages.append(np.asarray(averaging.averaged_params(state, params)["w"]))
  devices = {len(x.sharding.device_set) for x in jax.tree.leaves(state) if x.ndim}
  kinds = {x.sharding.memory_kind for x in jax.tree.leaves(state) if x.ndim}
  out[name] = {"equal": bool(np.allclose(*averages)), "devices": sorted(devices),
               "kinds": sorted(kinds)}
print(json.dumps(out))
"""


class ShardingTest(absltest.TestCase):

  def test_replicated_params_on_two_devices(self):
    env = dict(os.environ, PYTHONPATH=ROOT,
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", SHARDED_CHILD], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, check in result.items():
      self.assertTrue(check["equal"], name)
      self.assertEqual(check["devices"], [2], name)  # state replicated like params
    self.assertEqual(result["lawa_offload"]["kinds"], ["device", "pinned_host"])


if __name__ == "__main__":
  absltest.main()


class HasAverageTest(absltest.TestCase):

  def test_found_by_name_in_nested_chains_only_when_present(self):
    params = {"w": jnp.zeros(3)}
    plain = optax.chain(optax.sgd(0.1), optax.scale(1.0))
    self.assertFalse(averaging.has_average(plain.init(params)))
    for avg in (averaging.ema(0.9), averaging.lawa(2, 1), averaging.swa()):
      nested = optax.chain(optax.clip(1.0), optax.chain(optax.sgd(0.1), avg))
      self.assertTrue(averaging.has_average(nested.init(params)))


def _power_ema_reference(weights, gamma, every=1, start_step=0):
  """numpy float64: the recursion with beta_t = (1 - 1/t)^(gamma+1), after each step."""

  def one_leaf(w):
    out, average, t = [], None, 0
    for step in range(1, len(w) + 1):
      if step >= start_step and (step - start_step) % every == 0:
        t += 1
        beta = (1.0 - 1.0 / t) ** (gamma + 1.0)
        average = w[step - 1] if average is None else beta * average + (1 - beta) * w[step - 1]
      out.append(w[step - 1] if average is None else average)
    return np.stack(out)

  return jax.tree.map(one_leaf, weights)


class PowerEmaTest(parameterized.TestCase):

  @parameterized.parameters((0.0, 1, 0), (6.94, 1, 0), (16.97, 3, 4), (2.5, 2, 0))
  def test_matches_numpy_recursion(self, gamma, every, start_step):
    weights, averages, state = _train(
        averaging.power_ema(gamma, every, start_step), _params(), 40)
    expected = _power_ema_reference(weights, gamma, every, start_step)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6),
                 averages, expected)
    assert int(state[1].records) == len(_recorded(40, every, start_step))

  @parameterized.parameters(0.0, 1.0, 6.94)
  def test_weights_are_the_telescoped_power_profile(self, gamma):
    # After T records, record j weighs (j^(g+1) - (j-1)^(g+1)) / T^(g+1).
    steps = 30
    weights, averages, _ = _train(averaging.power_ema(gamma), _params(), steps)
    j = np.arange(1, steps + 1, dtype=np.float64)
    profile = (j ** (gamma + 1) - (j - 1) ** (gamma + 1)) / steps ** (gamma + 1)
    assert abs(profile.sum() - 1.0) < 1e-12
    jax.tree.map(
        lambda a, w: np.testing.assert_allclose(
            a[-1], np.tensordot(profile, w, axes=1), rtol=2e-5, atol=2e-6),
        averages, weights)

  def test_gamma_zero_is_the_uniform_mean(self):
    weights, averages, _ = _train(averaging.power_ema(0.0), _params(), 25)
    jax.tree.map(lambda a, w: np.testing.assert_allclose(a[-1], w.mean(0), rtol=1e-5,
                                                         atol=1e-6), averages, weights)

  def test_long_run_decay_is_accurate_in_float32(self):
    # 1 - beta_t from log1p/expm1: still exact to float32 after 10^6 records.
    tx = averaging.power_ema(6.94)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    state = state._replace(records=jnp.asarray(10**6 - 1, jnp.int32),
                           power_ema_weights={"w": jnp.zeros(())})
    _, state = tx.update({"w": jnp.ones(())}, state, params)
    got = float(state.power_ema_weights["w"])
    want = 1.0 - (1.0 - 1e-6) ** 7.94
    self.assertAlmostEqual(got / want, 1.0, delta=1e-5)

  @parameterized.parameters(0.05, 0.1, 0.2, 12 ** -0.5)
  def test_sigma_rel_round_trip(self, sigma_rel):
    gamma = averaging.sigma_rel_to_gamma(sigma_rel)
    self.assertAlmostEqual(averaging.gamma_to_sigma_rel(gamma), sigma_rel, places=10)

  def test_sigma_rel_is_the_profile_standard_deviation(self):
    # Karras et al.: sigma_rel is the std of p(tau) ~ tau^gamma on [0, 1].
    for gamma in (0.0, 1.8, 6.94, 16.97):
      tau = (np.arange(200_000) + 0.5) / 200_000
      p = tau ** gamma
      p /= p.sum()
      mean = (p * tau).sum()
      std = np.sqrt((p * (tau - mean) ** 2).sum())
      self.assertAlmostEqual(averaging.gamma_to_sigma_rel(gamma), std, places=5)
    # The values Karras et al. quote: sigma_rel 0.05 <-> gamma 16.97, 0.10 <-> 6.94.
    self.assertAlmostEqual(averaging.sigma_rel_to_gamma(0.05), 16.97, places=2)
    self.assertAlmostEqual(averaging.sigma_rel_to_gamma(0.10), 6.94, places=2)

  def test_bad_arguments(self):
    with self.assertRaises(ValueError):
      averaging.power_ema(-1.0)
    with self.assertRaises(ValueError):
      averaging.sigma_rel_to_gamma(0.3)
    with self.assertRaises(ValueError):
      averaging.sigma_rel_to_gamma(0.0)
    with self.assertRaises(ValueError):
      averaging.power_ema(1.0).update({"w": jnp.ones(1)}, None)

  def test_found_by_averaged_params_in_a_chain(self):
    opt = optax.chain(nadamw(1e-2), averaging.power_ema(2.0))
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.ones(3)}, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(averaging.averaged_params(state, params)["w"], new["w"])
    assert averaging.has_average(state)
