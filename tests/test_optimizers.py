"""NadamW and the schedules against plain numpy references of the update rule."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from algoperf_avg.training import optimizers, schedules
from submissions import nadamw as nadamw_submission


def numpy_nadamw(grads, params, lrs, b1, b2, eps, wd):
  """AlgoPerf's NadamW, written out with numpy, one step per gradient."""
  m = np.zeros_like(params)
  v = np.zeros_like(params)
  p = params.copy()
  for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = (b1 * m + (1 - b1) * g) / (1 - b1**t)  # Nesterov look-ahead
    v_hat = v / (1 - b2**t)
    step = m_hat / (np.sqrt(v_hat) + eps) + wd * p  # decay after Adam scaling
    p = p - lr * step  # ... and scaled by the learning rate
  return p


def numpy_warmup_cosine(step, peak, step_hint, warmup_factor):
  warmup = int(warmup_factor * step_hint)
  if step < warmup:
    return peak * step / warmup
  progress = min((step - warmup) / max(step_hint - warmup, 1), 1.0)
  return 0.5 * peak * (1 + np.cos(np.pi * progress))


class NadamWTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(b1=0.9, b2=0.999, wd=0.0),
      dict(b1=0.97, b2=0.995, wd=0.1),
      dict(b1=0.8, b2=0.9, wd=1.5),
  )
  def test_matches_numpy_reference_over_steps(self, b1, b2, wd):
    rng = np.random.default_rng(0)
    params = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) for _ in range(12)]
    lrs = [1e-2 * (0.9**i) for i in range(12)]
    tx = optimizers.nadamw(lambda count: 1e-2 * 0.9**count, b1, b2, 1e-8, wd)
    update = jax.jit(tx.update)
    p = jax.numpy.asarray(params, jax.numpy.float32)
    state = tx.init(p)
    for g in grads:
      updates, state = update(jax.numpy.asarray(g, jax.numpy.float32), state, p)
      p = optax.apply_updates(p, updates)
    expected = numpy_nadamw(grads, params, lrs, b1, b2, 1e-8, wd)
    np.testing.assert_allclose(np.asarray(p), expected, rtol=2e-5, atol=2e-6)

  def test_submission_schedule_and_clipping(self):
    hp = dict(learning_rate=0.1, one_minus_beta1=0.1, beta2=0.99, weight_decay=0.0,
              warmup_factor=0.25, grad_clip=1.0)
    tx = nadamw_submission.make_optimizer(hp, None, step_hint=8)
    p = jax.numpy.ones(4)
    state = tx.init(p)
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=4) * 10 for _ in range(8)]
    for g in grads:
      updates, state = tx.update(jax.numpy.asarray(g, jax.numpy.float32), state, p)
      p = optax.apply_updates(p, updates)
    clipped = [g * min(1.0, 1.0 / (np.linalg.norm(g) + 1e-6)) for g in grads]
    lrs = [numpy_warmup_cosine(t, 0.1, 8, 0.25) for t in range(8)]
    expected = numpy_nadamw(clipped, np.ones(4), lrs, 0.9, 0.99, 1e-8, 0.0)
    np.testing.assert_allclose(np.asarray(p), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 500, 999, 1000, 1500])
def test_warmup_cosine_matches_reference(step):
  sched = schedules.warmup_cosine(3e-3, step_hint=1000, warmup_factor=0.1)
  assert float(sched(step)) == pytest.approx(
      numpy_warmup_cosine(step, 3e-3, 1000, 0.1), abs=1e-9)


def test_warmup_starts_at_zero_and_wsd_shape():
  assert float(schedules.warmup_cosine(1.0, 100, 0.1)(0)) == 0.0
  wsd = schedules.warmup_stable_decay(1.0, 100, 0.1, decay_fraction=0.2)
  assert float(wsd(50)) == pytest.approx(1.0)
  assert float(wsd(90)) == pytest.approx(0.5)
  assert float(wsd(100)) == pytest.approx(0.0)
