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


def test_recompute_averages_the_stats_of_its_own_keyed_batches():
  workload = ToyBNWorkload()
  params, state = workload.init_model_fn(jax.random.key(0))
  params = jax.tree.map(lambda p: p - 0.2, params)
  stats = batch_norm.EvalStatistics(workload, "recompute", num_batches=3)
  got = stats.state_for(params, state, rng_seed=5, step=40, data_dir=None, batch_size=32)
  batches = list(itertools.islice(workload.train_batches(
      batch_norm.bn_data_rng(5, 40), None, 32), 3))
  exact = [exact_stats(workload, params, b) for b in batches]
  np.testing.assert_allclose(got["BatchNorm_0"]["mean"], np.mean([m for m, _ in exact], 0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["BatchNorm_0"]["var"], np.mean([v for _, v in exact], 0),
                             rtol=1e-4, atol=1e-5)
  # Another step draws other batches; "latest" keeps the training statistics.
  other = stats.state_for(params, state, rng_seed=5, step=50, data_dir=None, batch_size=32)
  assert not np.allclose(other["BatchNorm_0"]["mean"], got["BatchNorm_0"]["mean"])
  latest = batch_norm.EvalStatistics(workload, "latest")
  assert latest.state_for(params, state, rng_seed=5, step=40, data_dir=None,
                          batch_size=32) is state


def test_recompute_never_changes_the_training_run():
  """The policy only changes what is evaluated: the online weights are identical."""
  workload = ToyBNWorkload(validation_target=2.0)
  sub = registry.load_submission("nadamw_ema")
  rows = {}
  for policy in ("latest", "recompute"):
    hp = runner.resolve_hparams(workload, sub, {"bn_policy": policy, "ema_decay": 0.9})
    rows[policy] = runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(
        max_global_steps=40, eval_every_steps=20, save_checkpoints=False)).eval_rows
  for a, b in zip(rows["latest"], rows["recompute"], strict=True):
    assert a["validation_online/loss"] == b["validation_online/loss"]
    assert a["validation/loss"] != b["validation/loss"]  # other statistics evaluated


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
  with pytest.raises(spec.UsageError, match="bn_policy"):
    runner.train_once(workload, sub, hp, 0, None, None, runner.RunOptions(max_global_steps=1))
