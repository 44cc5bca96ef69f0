"""Post-hoc weight averaging: sweep LAWA, EMA and SWA over a run's snapshots.

A run trained with ``RunOptions(snapshots=...)`` (``--save_params_every=N`` or
``--posthoc_grid=...``, `averaging.snapshots`) keeps its weights and model
state in ``<trial>/params/<step>``. `sweep` streams through them once, in step
order, keeps the average of every grid point up to date, and evaluates each
average at the run's eval steps on the validation split; each grid point gets
its own AlgoPerf trial folder, so ``algoperf-avg score OUT`` compares them as
submissions. This is how the paper swept the horizon without retraining::

    sweep(workload, "exp/study_0/ogbg_small_jax/trial_1", "posthoc",
          points=[GridPoint("lawa", 64, window=20), GridPoint("ema", 8, decay=0.99)])
    # -> posthoc/nadamw_lawa_every64_window20/study_0/ogbg_small_jax/trial_1/ ...

The averages are those of the online transforms (`averaging.lawa`, ``ema``,
``swa``) with the same ``every`` and ``start_step`` (`GridPoint.records_at`):
LAWA is the mean of the last ``window`` records, EMA starts at the step-0
weights, SWA is the (Kahan-summed) mean of every record; before the first
record the training weights are evaluated. Batch statistics follow the run's
``bn_policy`` (or ``bn_policy=`` here): ``latest`` evaluates with the model
state saved at the eval step, ``recompute`` recomputes them for each average
from the same keyed batches the runner uses (`evaluation.batch_norm`). A sweep
therefore gives the online transform's numbers, up to float rounding (and
exactly those of ``bfloat16`` snapshots' rounding when they were saved so).
Evaluation runs on all devices (params replicated on the mesh).

Memory: one float32 copy of the params per EMA point, two per SWA point, and
one per step that some LAWA point still averages, shared between the points.

`synthesize` is the other post-hoc route (Karras et al. 2024): a run that kept
two power EMAs (``--posthoc_grid=powerema:S:GAMMA1,powerema:S:GAMMA2``) gives,
after training, the power EMA of any width at each eval step, as the
least-squares combination of its snapshots (`averaging.synthesis`)::

    algoperf-avg posthoc TRIAL --ema_sigma_rel=0.05,0.1,0.2 --out=exp/posthoc
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from algoperf_avg import spec
from algoperf_avg.averaging import grid_averages, online, snapshots, synthesis
from algoperf_avg.averaging.snapshots import GridPoint
from algoperf_avg.evaluation import batch_norm
from algoperf_avg.training import checkpoints, logs, sharding


@dataclasses.dataclass
class _Source:
  """What a sweep reads from the trial that saved its snapshots."""

  log_dir: str
  params_dir: str
  meta: dict[str, Any]
  hparams: dict[str, Any]
  rows: dict[int, dict[str, Any]]  # its eval rows by global_step
  saved: list[int]  # saved steps, ascending (0 included when kept)
  items: tuple[str, ...]  # what each snapshot holds ("params", "model_state")
  dtype: str | None  # the snapshots' float dtype, None: the params' own
  study: int
  trial: int


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise spec.UsageError(f"cannot read {path} (is this a trial folder?): {e}") from e


def _read_source(log_dir: str) -> _Source:
  meta = _read_json(os.path.join(log_dir, "meta_data_0.json"))
  hparams = _read_json(os.path.join(log_dir, "hparams.json"))
  csv_path = os.path.join(log_dir, "eval_measurements.csv")
  rows = logs.read_rows(csv_path) if os.path.exists(csv_path) else []
  params_dir = os.path.join(log_dir, snapshots.PARAMS_DIR)
  saved = checkpoints.list_steps(params_dir)
  if not [s for s in saved if s > 0]:
    raise spec.UsageError(
        f"{params_dir}: no saved weights after step 0; train with "
        "--save_params_every=N or --posthoc_grid=... to sweep averages post hoc")
  info = checkpoints.read_metadata(params_dir, saved[-1])
  study, trial = logs.study_and_trial(log_dir)
  return _Source(
      log_dir=os.path.abspath(log_dir), params_dir=params_dir, meta=meta,
      hparams=hparams, rows={int(r["global_step"]): r for r in rows}, saved=saved,
      items=tuple(info.get("items", ["params"])), dtype=info.get("dtype"),
      study=study, trial=trial,
  )


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _pairs(lawa_grid: Iterable[Sequence[Any]], ema_grid: Iterable[Sequence[Any]]
           ) -> list[GridPoint]:
  """``(every, window)`` / ``(every, decay)`` pairs as grid points, validated."""
  points = []
  for method, grid in (("lawa", lawa_grid), ("ema", ema_grid)):
    for item in grid:
      if len(item) != 2:
        raise spec.UsageError(f"{method} grid point {item!r} is not a pair")
      every, value = item
      if not _is_int(every) or every < 1:
        raise spec.UsageError(f"{method}: every must be a positive integer, got {every!r}")
      if method == "lawa" and not (_is_int(value) and value >= 1):
        raise spec.UsageError(f"lawa: window must be a positive integer, got {value!r}")
      if method == "ema" and not (
          isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0.0 <= value <= 1.0):
        raise spec.UsageError(f"ema: decay must be a number in [0, 1], got {value!r}")
      points.append(GridPoint("lawa", every, window=value) if method == "lawa"
                    else GridPoint("ema", every, decay=float(value)))
  return points


def _eval_steps(eval_steps: Sequence[int] | None, source: _Source) -> list[int]:
  saved = set(source.saved)
  if eval_steps is not None and not eval_steps:
    raise spec.UsageError("eval_steps is empty: give steps, or None for the default")
  if eval_steps is None:
    # Where the run evaluated (and kept weights), and the last saved step.
    return sorted((set(source.rows) & saved) | {source.saved[-1]})
  wrong = [s for s in eval_steps if s not in saved and s != 0]
  if wrong:
    raise spec.UsageError(
        f"eval steps {wrong} have no saved weights; saved: {_ranges(source.saved)}")
  return sorted(set(eval_steps))


def _ranges(steps: Sequence[int]) -> str:
  shown = ", ".join(map(str, steps[:8]))
  return f"{shown}{' ...' if len(steps) > 8 else ''} ({len(steps)} steps)"


def _check_coverage(points: Sequence[GridPoint], source: _Source,
                    wanted: Sequence[int]) -> None:
  """Every record each point needs at each eval step must have been kept."""
  saved = set(source.saved)
  last = wanted[-1]
  for point in points:
    schedule = [s for s in range(1, last + 1) if point.records_at(s)]
    if point.method == "lawa":
      needed = {s for at in wanted for s in snapshots.lawa_window(point, schedule, at)}
    else:
      needed = set(schedule)
    missing = sorted(needed - saved)
    if missing:
      raise spec.UsageError(
          f"{point.label} needs the weights of steps {missing[:5]}"
          f"{' ...' if len(missing) > 5 else ''}, which {source.params_dir} does not "
          f"hold (saved: {_ranges(source.saved)}); save them with "
          f"--save_params_every or --posthoc_grid")


def _initial_state(workload: spec.Workload, source: _Source) -> tuple[Any, Any]:
  """The step-0 weights and model state (re-created from the seed if not saved)."""
  seed = int(source.meta.get("rng_seed", 0))
  _, _, model_rng, _ = jax.random.split(jax.random.key(seed), 4)
  params, model_state = workload.init_model_fn(model_rng)
  if 0 in source.saved:
    params, saved_state, _ = _restore(source, 0, params, model_state)
    model_state = saved_state if saved_state is not None else model_state
  return params, model_state


def _restore(source: _Source, step: int, params: Any, model_state: Any,
             directory: str | None = None) -> tuple[Any, Any | None, dict[str, Any]]:
  """A snapshot's params (in the template's dtypes), model state (or None), metadata.

  From ``directory`` (default: the raw snapshots, ``params/``).
  """
  stored = params
  if source.dtype is not None:
    dtype = snapshots.DTYPES[source.dtype]
    stored = jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
  template = {"params": stored}
  if "model_state" in source.items:
    template["model_state"] = model_state
  restored = checkpoints.restore_checkpoint(directory or source.params_dir, step, template)
  loaded = jax.tree.map(lambda r, p: r.astype(p.dtype), restored.state["params"], params)
  return loaded, restored.state.get("model_state"), restored.metadata


def _eval_rng(seed: int, step: int) -> jax.Array:
  """The key the runner evaluated step ``step`` with (see runner._train_loop)."""
  rng = jax.random.split(jax.random.key(seed), 4)[3]
  step_rng = jax.random.fold_in(rng, max(step - 1, 0))
  return jax.random.split(step_rng, 4)[3]


def _output(out_dir: str, point: GridPoint, source: _Source, workload: spec.Workload,
            policy: str, label: str | None = None) -> grid_averages.GridOutput:
  """The trial folder of one grid point, named and numbered as the source run."""
  name = f"{source.meta.get('submission', 'run')}_{label or point.label}"
  hparams = source.hparams | point.hparams(workload.step_hint)
  if "bn_policy" in source.hparams or policy != "latest":
    hparams["bn_policy"] = policy
  meta = source.meta | {"posthoc_of": source.log_dir,
                        "posthoc_saved_steps": len(source.saved), "posthoc_name": name}
  return grid_averages.GridOutput(out_dir, name, workload.workload_id, source.study,
                                  source.trial, hparams, meta)


def sweep(
    workload: spec.Workload,
    trial_log_dir: str,
    out_dir: str,
    lawa_grid: Iterable[Sequence[int]] = (),
    ema_grid: Iterable[Sequence[float]] = (),
    eval_steps: Sequence[int] | None = None,
    data_dir: str | None = None,
    *,
    points: Iterable[GridPoint] = (),
    bn_policy: str | None = None,
    bn_batches: int | None = None,
) -> list[str]:
  """Average a run's snapshots for every grid point and evaluate each.

  Reads every snapshot once, in step order; all grid points are updated from
  it before the next is read.

  Args:
    workload: the workload the run trained (its size too).
    trial_log_dir: the run's trial folder (with ``params/``).
    out_dir: where the grid points' folders go:
      ``out_dir/<submission>_<label>/study_<k>/<workload_id>_jax/trial_<i>/``
      (study and trial numbers as the run's).
    lawa_grid: ``(every, window)`` pairs (start step 0).
    ema_grid: ``(every, decay)`` pairs (start step 0).
    eval_steps: steps to evaluate at (saved ones); default: the steps the run
      evaluated at that have snapshots, and the last snapshot.
    data_dir: the data root (None for sizes that generate their data).
    points: further grid points (`GridPoint`: LAWA, EMA, SWA, any start).
    bn_policy: ``latest`` or ``recompute``; default: the run's ``bn_policy``.
    bn_batches: batches per recomputation; default: the run's, else 8.

  Returns:
    The written trial folders, in grid order (pairs first).

  Raises:
    spec.UsageError: unreadable trial folder, no snapshots, a bad grid point,
      a record a point needs that was not kept, or an eval step without a
      snapshot. Nothing is written then.
  """
  grid = []
  for point in [*_pairs(lawa_grid, ema_grid), *points]:
    if point not in grid:
      grid.append(point)
  if not grid:
    raise spec.UsageError("nothing to sweep: give at least one LAWA, EMA or SWA point")
  power = [p.label for p in grid if p.method == "powerema"]
  if power:
    raise spec.UsageError(f"{power[0]}: power EMAs are synthesised from their own "
                          "snapshots (posthoc --ema_sigma_rel / --ema_gamma), not swept")
  source = _read_source(trial_log_dir)
  if source.meta.get("workload_id", workload.workload_id) != workload.workload_id:
    raise spec.UsageError(f"{trial_log_dir} is a run of {source.meta['workload_id']}, "
                          f"not {workload.workload_id}")
  wanted = _eval_steps(eval_steps, source)
  _check_coverage(grid, source, wanted)
  policy = bn_policy or source.hparams.get("bn_policy") or "latest"
  stats = batch_norm.EvalStatistics(
      workload, policy, bn_batches or source.hparams.get("bn_batches") or 8,
      source.hparams.get("dropout_rate"))
  seed = int(source.meta.get("rng_seed", 0))
  batch_size = int(source.meta.get("global_batch_size") or workload.default_batch_size)
  mesh = sharding.make_mesh()
  init_params, init_state = _initial_state(workload, source)
  averages = [grid_averages.make_average(p, init_params) for p in grid]
  outputs = [_output(out_dir, p, source, workload, policy) for p in grid]
  for output in outputs:
    output.start()
  store: dict[int, Any] = {}  # step -> weights that some LAWA point still averages
  try:
    for step, weights, state, submission_time in _saved(source, init_params, init_state,
                                                        wanted[-1]):
      for average in averages:
        if average.point.records_at(step):
          average.record(step, weights)
      needed = {s for average in averages for s in average.steps}
      store = {s: w for s, w in store.items() if s in needed}
      if step in needed:
        store[step] = weights
      if step not in wanted:
        continue
      rng = _eval_rng(seed, step)
      for average, output in zip(averages, outputs, strict=True):
        params = sharding.replicate(average.value(store, weights), mesh)
        eval_state = sharding.replicate(state, mesh)
        t0 = time.perf_counter()
        eval_state = stats.state_for(params, eval_state, rng_seed=seed, step=step,
                                     data_dir=data_dir, batch_size=batch_size, mesh=mesh)
        metrics = workload.eval_model(workload.eval_batch_size, params, eval_state, rng,
                                      data_dir, splits=("validation",), metrics="target")
        original = source.rows.get(step, {})
        output.append(step, submission_time, metrics, time.perf_counter() - t0,
                      online=original,
                      preemption_count=original.get("preemption_count", 0))
  except BaseException as e:
    for output in outputs:
      output.status("failed", f"{type(e).__name__}: {e}")
    raise
  for output in outputs:
    output.status("completed")
  return [output.log_dir for output in outputs]


def _saved(source: _Source, init_params: Any, init_state: Any, last: int
           ) -> Iterator[tuple[int, Any, Any, float]]:
  """``(step, weights, model state, submission_time)`` to ``last``, each read once."""
  yield 0, init_params, init_state, 0.0
  for step in source.saved:
    if step == 0:
      continue
    if step > last:
      return
    params, state, metadata = _restore(source, step, init_params, init_state)
    yield (step, params, init_state if state is None else state,
           float(metadata.get("submission_time", float("nan"))))


def posthoc_command(trial_dir: str, out_dir: str, lawa: Sequence[str],
                    ema: Sequence[str], data_dir: str | None,
                    swa: Sequence[str] = (), bn_policy: str | None = None,
                    ema_sigma_rel: Sequence[str] = (), ema_gamma: Sequence[str] = ()
                    ) -> list[str]:
  """``algoperf-avg posthoc TRIAL_DIR --lawa=64:20 --ema=1:0.999 --swa=1:500 --out=DIR``.

  Resolves the workload (and its options) from the trial's
  ``meta_data_0.json`` and runs `sweep` (default eval steps); with
  ``--ema_sigma_rel`` / ``--ema_gamma``, `synthesize` (power EMAs).

  Raises:
    spec.UsageError: a malformed item, an unknown workload, missing data, or
      anything `sweep` rejects.
  """
  from algoperf_avg import registry

  points = [snapshots.parse_point(method, item)
            for method, items in (("lawa", lawa), ("ema", ema), ("swa", swa))
            for item in items]
  widths = [_number(v, "--ema_sigma_rel") for v in ema_sigma_rel]
  gammas = [_number(v, "--ema_gamma") for v in ema_gamma]
  if (widths or gammas) and points:
    raise spec.UsageError("give power-EMA widths (--ema_sigma_rel, --ema_gamma) or "
                          "LAWA / EMA / SWA points, not both")
  meta = _read_json(os.path.join(trial_dir, "meta_data_0.json"))
  if "workload" not in meta:
    raise spec.UsageError(f"{trial_dir}/meta_data_0.json names no workload")
  options = {k: v for k, v in (meta.get("workload_options") or {}).items()
             if v is not None}
  workload = registry.get_workload(meta["workload"], meta.get("size", "full"), **options)
  if widths or gammas:
    for width in widths:  # checked before the data
      _gamma_of(width)
    workload.check_data(data_dir)
    results = synthesize(workload, trial_dir, out_dir, sigma_rels=widths, gammas=gammas,
                         data_dir=data_dir, bn_policy=bn_policy)
    return [f"{r.log_dir}  (gamma {r.gamma:.4g}, sigma_rel {r.sigma_rel:.4g}: fit relative "
            f"error {r.max_relative_error:.2e} at worst, {r.final_relative_error:.2e} at "
            f"the last step)" for r in results]
  workload.check_data(data_dir)
  return sweep(workload, trial_dir, out_dir, data_dir=data_dir, points=points,
               bn_policy=bn_policy)


def _number(text: str, flag: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise spec.UsageError(f"{flag}: {text!r} is not a number") from None


def _gamma_of(sigma_rel: float) -> float:
  try:
    return online.sigma_rel_to_gamma(sigma_rel)
  except ValueError as e:
    raise spec.UsageError(f"--ema_sigma_rel: {e}") from None


@dataclasses.dataclass(frozen=True)
class Synthesised:
  """One synthesised power EMA's trial folder and the fit's relative errors."""

  log_dir: str
  gamma: float
  sigma_rel: float
  max_relative_error: float
  final_relative_error: float


@jax.jit
def _combine(weights: Sequence[Any], coefficients: jax.Array, like: Any) -> Any:
  """``sum_i coefficients[i] * weights[i]`` in float32, in the dtypes of ``like``."""
  def one(*leaves):
    *stack, template = leaves
    total = sum(c * leaf.astype(jnp.float32) for c, leaf in
                zip(coefficients, stack, strict=True))
    return total.astype(template.dtype)

  return jax.tree.map(one, *weights, like)


def _power_sources(source: _Source) -> list[tuple[str, float, list[int]]]:
  """``(folder, gamma, saved steps)`` of each power-EMA point the run kept."""
  root = os.path.join(source.log_dir, snapshots.POWER_DIR)
  found = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    folder = os.path.join(root, name)
    steps = checkpoints.list_steps(folder)
    if steps:
      gamma = float(checkpoints.read_metadata(folder, steps[0])["gamma"])
      found.append((folder, gamma, steps))
  if not found:
    raise spec.UsageError(
        f"{root}: no power-EMA snapshots; train with "
        "--posthoc_grid=powerema:S:GAMMA1,powerema:S:GAMMA2 to synthesise EMAs post hoc")
  return found


def synthesize(
    workload: spec.Workload,
    trial_log_dir: str,
    out_dir: str,
    sigma_rels: Sequence[float] = (),
    gammas: Sequence[float] = (),
    eval_steps: Sequence[int] | None = None,
    data_dir: str | None = None,
    *,
    bn_policy: str | None = None,
    bn_batches: int | None = None,
) -> list[Synthesised]:
  """Synthesise power EMAs of other widths from a run's power-EMA snapshots.

  At each eval step t, each requested profile is the least-squares
  combination (`synthesis.solve`) of the snapshots taken at or before t; the
  fit's relative error goes into each row (``posthoc_fit_relative_error``).
  Each profile gets an AlgoPerf trial folder, named
  ``<submission>_powerema_sigma<S>`` (or ``_gamma<G>``), scored like any other
  submission.

  Args:
    workload: the workload the run trained (its size too).
    trial_log_dir: the run's trial folder (with ``power_ema/`` and ``params/``).
    out_dir: where the profiles' folders go (as in `sweep`).
    sigma_rels: widths as relative standard deviations (Karras et al.).
    gammas: widths as exponents.
    eval_steps: steps to evaluate at; default: the run's eval steps that have
      both snapshots (the run keeps them at every eval).
    data_dir: the data root (None for sizes that generate their data).
    bn_policy: as in `sweep` (``latest``: the model state saved at the step).
    bn_batches: as in `sweep`.

  Returns:
    One `Synthesised` per profile, sigma_rels first.

  Raises:
    spec.UsageError: no widths, a bad width, no power-EMA snapshots, or an
      eval step without them. Nothing is written then.
  """
  widths = [(_gamma_of(s), s, f"powerema_sigma{s!r}") for s in sigma_rels]
  for gamma in gammas:
    if not gamma >= 0.0:
      raise spec.UsageError(f"--ema_gamma must be >= 0, got {gamma}")
    widths.append((float(gamma), online.gamma_to_sigma_rel(gamma),
                   f"powerema_gamma{float(gamma)!r}"))
  if not widths:
    raise spec.UsageError("nothing to synthesise: give --ema_sigma_rel or --ema_gamma")
  source = _read_source(trial_log_dir)
  powers = _power_sources(source)
  both = set(source.saved).intersection(*[set(steps) for _, _, steps in powers])
  if eval_steps is None:
    wanted = sorted(set(source.rows) & both)
  else:
    wanted = sorted(set(eval_steps))
    missing = [s for s in wanted if s not in both]
    if missing:
      raise spec.UsageError(f"eval steps {missing} lack raw or power-EMA snapshots")
  if not wanted:
    raise spec.UsageError(f"{trial_log_dir}: no eval step has power-EMA snapshots")
  policy = bn_policy or source.hparams.get("bn_policy") or "latest"
  stats = batch_norm.EvalStatistics(
      workload, policy, bn_batches or source.hparams.get("bn_batches") or 8,
      source.hparams.get("dropout_rate"))
  seed = int(source.meta.get("rng_seed", 0))
  batch_size = int(source.meta.get("global_batch_size") or workload.default_batch_size)
  mesh = sharding.make_mesh()
  init_params, init_state = _initial_state(workload, source)
  outputs = []
  for gamma, sigma_rel, label in widths:
    point = GridPoint("powerema", 1, gamma=gamma)
    output = _output(out_dir, point, source, workload, policy, label)
    output.hparams |= {"power_ema_gamma": gamma, "power_ema_sigma_rel": sigma_rel,
                       "power_ema_synthesised_from": [g for _, g, _ in powers]}
    outputs.append(output)
  for output in outputs:
    output.start()
  cache: dict[tuple[str, int], Any] = {}  # every power snapshot, read once
  errors: list[list[float]] = [[] for _ in widths]
  try:
    for step in wanted:
      stored = [(folder, s, g) for folder, g, steps in powers for s in steps if s <= step]
      for folder, s, _ in stored:
        if (folder, s) not in cache:
          cache[(folder, s)] = _restore(source, s, init_params, init_state, folder)[0]
      raw, state, metadata = _restore(source, step, init_params, init_state)
      state = init_state if state is None else state
      submission_time = float(metadata.get("submission_time", float("nan")))
      rng = _eval_rng(seed, step)
      for k, ((gamma, _, _), output) in enumerate(zip(widths, outputs, strict=True)):
        coefficients, error = synthesis.solve([(s, g) for _, s, g in stored], step, gamma)
        errors[k].append(error)
        averaged = _combine([cache[(f, s)] for f, s, _ in stored],
                            jnp.asarray(coefficients, jnp.float32), raw)
        params = sharding.replicate(averaged, mesh)
        t0 = time.perf_counter()
        eval_state = stats.state_for(params, sharding.replicate(state, mesh),
                                     rng_seed=seed, step=step, data_dir=data_dir,
                                     batch_size=batch_size, mesh=mesh)
        metrics = workload.eval_model(workload.eval_batch_size, params, eval_state, rng,
                                      data_dir, splits=("validation",), metrics="target")
        original = source.rows.get(step, {})
        output.append(step, submission_time,
                      dict(metrics) | {"posthoc_fit_relative_error": error},
                      time.perf_counter() - t0, online=original,
                      preemption_count=original.get("preemption_count", 0))
  except BaseException as e:
    for output in outputs:
      output.status("failed", f"{type(e).__name__}: {e}")
    raise
  for output in outputs:
    output.status("completed")
  return [Synthesised(output.log_dir, gamma, sigma_rel, max(errs), errs[-1])
          for output, (gamma, sigma_rel, _), errs in zip(outputs, widths, errors, strict=True)]
