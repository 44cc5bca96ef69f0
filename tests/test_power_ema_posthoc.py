"""Power-EMA snapshots and post-hoc synthesis (Karras et al. 2024, App. C)."""

from __future__ import annotations

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algoperf_avg import averaging, spec
from algoperf_avg.averaging import posthoc, snapshots, synthesis
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.training import checkpoints
from tests.test_snapshots import _rows, _train
from tests.toy import ToyWorkload

GAMMA_WIDE, GAMMA_NARROW = 1.0, 6.94  # sigma_rel 0.19 and 0.10


def test_parse_and_label():
  [point] = snapshots.parse_grid(["powerema:50:6.94"])
  assert point == GridPoint("powerema", 50, gamma=6.94)
  assert point.label == "powerema_every50_gamma6.94"
  assert not point.records_at(50)  # it keeps its own average, not the raw weights
  for bad in ("powerema:50", "powerema:0:1.0", "powerema:5:-1", "powerema:5:x"):
    with pytest.raises(spec.UsageError, match="powerema"):
      snapshots.parse_grid([bad])


def test_stored_profiles_are_reproduced_exactly():
  stored = [(s, g) for s in range(10, 101, 10) for g in (GAMMA_WIDE, GAMMA_NARROW)]
  for step, gamma in stored:
    coefficients, error = synthesis.solve([x for x in stored if x[0] <= step], step, gamma)
    assert error < 1e-7
    assert abs(coefficients.sum() - 1.0) < 1e-7
  weights = synthesis.profile(3.0, 7, 9)
  assert abs(weights.sum() - 1.0) < 1e-12 and not weights[7:].any()


def _power_trajectory(gammas, steps, every):
  """Noisy SGD on a quadratic; online power EMAs of ``gammas`` and the snapshots."""
  dim = 16
  curvature = jnp.linspace(0.05, 1.0, dim)
  params = {"w": jnp.full((dim,), 3.0)}
  txs = [averaging.power_ema(g) for g in gammas]
  states = [tx.init(params) for tx in txs]
  sgd = optax.sgd(0.05)
  sgd_state = sgd.init(params)
  snaps = {g: {} for g in gammas}

  @jax.jit
  def step_fn(params, sgd_state, states, key):
    grads = {"w": curvature * params["w"] + jax.random.normal(key, (dim,))}
    updates, sgd_state = sgd.update(grads, sgd_state, params)
    states = [tx.update(updates, s, params)[1] for tx, s in zip(txs, states, strict=True)]
    return optax.apply_updates(params, updates), sgd_state, states

  keys = jax.random.split(jax.random.key(0), steps)
  for t in range(1, steps + 1):
    params, sgd_state, states = step_fn(params, sgd_state, states, keys[t - 1])
    if t % every == 0:
      for g, s in zip(gammas, states, strict=True):
        snaps[g][t] = np.asarray(s.power_ema_weights["w"], np.float64)
  final = {g: np.asarray(s.power_ema_weights["w"], np.float64)
           for g, s in zip(gammas, states, strict=True)}
  return snaps, final


def test_quadratic_toy_in_between_width_matches_the_online_power_ema():
  # 2000 steps of noisy SGD; two power EMAs kept every 20 steps. The EMA of
  # sigma_rel 0.15 (between 0.10 and 0.19) synthesised at the last step is
  # within 1e-4 of its distance to the neighbouring stored EMA (the documented
  # tolerance; measured 5e-6: float32 rounding of the snapshots), and the
  # profile fit's relative error is below 1e-3 (measured 4.5e-5).
  gamma_mid = averaging.sigma_rel_to_gamma(0.15)
  steps, every = 2000, 20
  snaps, final = _power_trajectory((GAMMA_WIDE, GAMMA_NARROW, gamma_mid), steps, every)
  stored = [(s, g) for g in (GAMMA_WIDE, GAMMA_NARROW) for s in sorted(snaps[g])]
  coefficients, error = synthesis.solve(stored, steps, gamma_mid)
  synthesised = sum(c * snaps[g][s] for c, (s, g) in zip(coefficients, stored, strict=True))
  online = final[gamma_mid]
  gap = np.linalg.norm(online - final[GAMMA_NARROW])
  miss = np.linalg.norm(synthesised - online)
  assert error < 1e-3
  assert gap > 0.1
  assert miss < 1e-4 * gap, (miss, gap)


def test_run_keeps_power_snapshots_and_synthesis_equals_the_online_run(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  grid = (GridPoint("powerema", 4, gamma=GAMMA_WIDE),
          GridPoint("powerema", 4, gamma=GAMMA_NARROW))
  run = _train(tmp_path, workload, "nadamw", {}, posthoc_grid=grid)
  # Raw weights at step 0 and the evals; power EMAs every 4 steps and at the evals.
  assert checkpoints.list_steps(os.path.join(run, snapshots.PARAMS_DIR)) == [0, 6, 12, 18, 24]
  for point in grid:
    assert checkpoints.list_steps(snapshots.power_dir(run, point)) == [
        4, 6, 8, 12, 16, 18, 20, 24]
  online = {g: _train(tmp_path, workload, "nadamw_power_ema", {"power_ema_gamma": g})
            for g in (GAMMA_NARROW, 3.0)}
  results = posthoc.synthesize(workload, run, str(tmp_path / "out"),
                               gammas=[GAMMA_NARROW, 3.0])
  # A stored width is reproduced to float tolerance.
  got, want = _rows(results[0].log_dir), _rows(online[GAMMA_NARROW])
  assert sorted(got) == sorted(want) == [6, 12, 18, 24]
  for step in got:
    np.testing.assert_allclose(got[step]["validation/loss"], want[step]["validation/loss"],
                               rtol=1e-5)
    assert got[step]["posthoc_fit_relative_error"] < 1e-6
  assert results[0].max_relative_error < 1e-6
  # An in-between width: close, with the fit's error reported.
  got, want = _rows(results[1].log_dir), _rows(online[3.0])
  assert 0 < results[1].final_relative_error < 0.2
  np.testing.assert_allclose(got[24]["validation/loss"], want[24]["validation/loss"],
                             rtol=0.05)
  with open(os.path.join(results[1].log_dir, "hparams.json")) as f:
    hparams = json.load(f)
  assert hparams["averaging"] == "power_ema" and hparams["power_ema_gamma"] == 3.0


def test_resume_into_a_folder_with_power_snapshots_is_refused(tmp_path):
  policy = snapshots.Policy(grid=(GridPoint("powerema", 2, gamma=1.0),))
  store = snapshots.Store(str(tmp_path), policy)
  params = {"w": jnp.ones(3)}
  for step in range(3):
    store.save(step, params, {}, 0.0)
  with pytest.raises(spec.UsageError, match="cannot resume"):
    snapshots.Store(str(tmp_path), policy)


def test_bad_widths_and_missing_snapshots(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  run = _train(tmp_path, workload, "nadamw", {}, save_params_every=6)
  with pytest.raises(spec.UsageError, match="no power-EMA snapshots"):
    posthoc.synthesize(workload, run, str(tmp_path / "out"), sigma_rels=[0.1])
  with pytest.raises(spec.UsageError, match="sigma_rel"):
    posthoc.synthesize(workload, run, str(tmp_path / "out"), sigma_rels=[0.5])
  with pytest.raises(spec.UsageError, match="nothing to synthesise"):
    posthoc.synthesize(workload, run, str(tmp_path / "out"))


def test_in_run_sweep_power_ema_equals_the_online_submission(tmp_path):
  workload = ToyWorkload(validation_target=2.0)
  point = GridPoint("powerema", 1, gamma=GAMMA_NARROW)
  run = _train(tmp_path, workload, "nadamw", {}, sweep_averages=(point,),
               sweep_dir=str(tmp_path / "sweep"))
  del run
  [swept] = [os.path.dirname(p) for p in
             glob.glob(f"{tmp_path}/sweep/**/eval_measurements.csv", recursive=True)]
  online = _train(tmp_path, workload, "nadamw_power_ema", {"power_ema_gamma": GAMMA_NARROW})
  got, want = _rows(swept), _rows(online)
  assert sorted(got) == sorted(want) == [6, 12, 18, 24]
  for step in got:
    np.testing.assert_allclose(got[step]["validation/loss"], want[step]["validation/loss"],
                               rtol=1e-5)
  with pytest.raises(spec.UsageError, match="synthesised from their own snapshots"):
    posthoc.sweep(workload, online, str(tmp_path / "bad"), points=[point])
