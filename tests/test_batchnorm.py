"""Batch statistics for averaged weights: keep the latest, or recompute them."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from algoperf_avg import registry, spec
from algoperf_avg.evaluation import batch_norm
from algoperf_avg.training import runner
from tests.toy import ToyBNWorkload, _BNNet


def exact_stats(workload, params, batch):
  """Mean and (biased) variance of the pre-BN activations of one batch."""
  h = batch["inputs"] @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
  return np.asarray(h.mean(0)), np.asarray(h.var(0))


def flax_batch_stats(workload, params, batch):
  """The batch statistics exactly as Flax computes them (momentum 0 keeps them)."""
  variables = {"params": params, "batch_stats": workload.init_model_fn(
      jax.random.key(0))[1]}
  _, updates = _BNNet(workload.num_classes, momentum=0.0).apply(
      variables, batch["inputs"], train=True, mutable=["batch_stats"])
  return updates["batch_stats"]


@pytest.mark.parametrize("momentum", [0.9, 0.999])
def test_batch_stats_fn_recovers_batch_statistics_at_both_momenta(momentum):
  workload = ToyBNWorkload(momentum=momentum)
  params, state = workload.init_model_fn(jax.random.key(0))
  params = jax.tree.map(lambda p: p + 0.3, params)
  batch = next(workload.build_input_queue(jax.random.key(1), "train", None, 64))
  stats = batch_norm.batch_stats_fn(workload)(params, state, batch, jax.random.key(2))
  # Exact to float32 rounding, whatever the momentum (the declared one is used).
  reference = flax_batch_stats(workload, params, batch)
  for name in ("mean", "var"):
    np.testing.assert_allclose(stats["BatchNorm_0"][name],
                               reference["BatchNorm_0"][name], rtol=3e-7, atol=0)
  mean, var = exact_stats(workload, params, batch)
  np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["BatchNorm_0"]["var"], var, rtol=1e-4, atol=1e-5)


def test_undeclared_momentum_is_measured_less_accurately_at_0999():
  errors = {}
  for momentum in (0.9, 0.999):
    workload = ToyBNWorkload(momentum=momentum, declare_momentum=False)
    params, state = workload.init_model_fn(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.3, params)
    batch = next(workload.build_input_queue(jax.random.key(1), "train", None, 64))
    stats = batch_norm.batch_stats_fn(workload)(params, state, batch, jax.random.key(2))
    reference = flax_batch_stats(workload, params, batch)["BatchNorm_0"]["mean"]
    errors[momentum] = float(np.max(np.abs(stats["BatchNorm_0"]["mean"] / reference - 1)))
  assert errors[0.9] < 5e-6  # measuring m costs ~eps / (1 - m) relative accuracy
  assert errors[0.999] < 5e-4


@pytest.mark.parametrize("policy", ["latest", "recompute"])
def test_ema_submission_bn_policies(policy):
  workload = ToyBNWorkload()
  sub = registry.load_submission("nadamw_ema")
  hp = runner.resolve_hparams(workload, sub, {"bn_policy": policy, "bn_batches": 3,
                                              "ema_decay": 0.9})
  params, state = workload.init_model_fn(jax.random.key(0))
  opt_state = sub.init_optimizer_state(workload, params, state, hp, jax.random.key(1))
  batches = list(itertools.islice(
      workload.build_input_queue(jax.random.key(2), "train", None, 32), 14))
  queue = iter(batches)
  for step in range(10):
    batch = sub.data_selection(workload, queue, opt_state, params, state, hp, step, None)
    opt_state, params, state = sub.update_params(
        workload, params, None, state, hp, batch, None, opt_state, [], step,
        jax.random.key(step))
  prepared = sub.prepare_for_eval(workload, params, None, state, hp, None, opt_state,
                                  [], 10, jax.random.key(3))
  assert isinstance(prepared, spec.PreparedForEval)
  assert prepared.eval_params is not None  # the EMA, not the training weights
  if policy == "latest":
    assert prepared.eval_model_state is None  # training statistics are used
    return
  # Recomputed: the mean over the next 3 training batches of the EMA weights'
  # batch statistics (the queue was consumed by exactly those batches).
  assert next(queue) is batches[13]
  stats = [exact_stats(workload, prepared.eval_params, b) for b in batches[10:13]]
  means, variances = [s[0] for s in stats], [s[1] for s in stats]
  got = prepared.eval_model_state["BatchNorm_0"]
  np.testing.assert_allclose(got["mean"], np.mean(means, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["var"], np.mean(variances, 0), rtol=1e-4, atol=1e-5)
  assert not np.allclose(got["mean"], state["BatchNorm_0"]["mean"], atol=1e-3)


def test_recompute_policy_trains_end_to_end():
  workload = ToyBNWorkload(validation_target=0.85)
  sub = registry.load_submission("nadamw_ema")
  hp = runner.resolve_hparams(workload, sub, {"bn_policy": "recompute"})
  result = runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(
      max_global_steps=200, eval_every_steps=50, save_checkpoints=False))
  assert result.reached_target and "validation_online/accuracy" in result.eval_rows[-1]


def test_unknown_bn_policy_is_a_usage_error():
  workload = ToyBNWorkload()
  sub = registry.load_submission("nadamw_ema")
  hp = runner.resolve_hparams(workload, sub, {"bn_policy": "guess"})
  params, state = workload.init_model_fn(jax.random.key(0))
  with pytest.raises(spec.UsageError, match="bn_policy"):
    sub.init_optimizer_state(workload, params, state, hp, jax.random.key(1))
