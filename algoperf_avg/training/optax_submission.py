"""The optax-native shortcut: a submission that only returns an optimizer.

A module defining ``make_optimizer(hparams, workload, step_hint)`` (returning an
`optax.GradientTransformation`) is turned into AlgoPerf's five-function API by
`OptaxSubmission`, which owns one jitted, donating train step:

    grads of (summed loss / n_valid) -> tx.update -> optax.apply_updates

Optional module attributes:
  ``get_batch_size(workload_id) -> int | None``: None means the workload's default.
  ``eval_params(opt_state, params) -> params``: weights to evaluate (default:
    `algoperf_avg.averaging.averaged_params`, i.e. the averaged weights when the
    chain contains an averaging transform, else the training weights).
  ``DEFAULT_HPARAMS``: defaults merged under the trial's hyperparameters.
  ``HPARAMS``: names the submission understands (unknown names are rejected).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import optax

from algoperf_avg import spec


def make_train_step(
    workload: spec.Workload,
    tx: optax.GradientTransformation,
    dropout_rate: float | None,
    label_smoothing: float,
) -> Callable:
  """A jitted step ``(params, model_state, opt_state, batch, rng) -> (..., loss)``.

  Params, model state and optimizer state are donated: the step updates them
  in place, so averaging buffers in the optimizer state are not copied.
  """

  def loss_of(params, model_state, batch, rng):
    logits, new_model_state = workload.model_fn(
        params, batch, model_state, spec.ForwardPassMode.TRAIN, rng,
        update_batch_norm=True, dropout_rate=dropout_rate,
    )
    loss = workload.loss_fn(
        batch["targets"], logits, batch.get("weights"), label_smoothing
    )
    n_valid = jnp.maximum(loss["n_valid_examples"], 1)
    return loss["summed"] / n_valid, new_model_state

  def step(params, model_state, opt_state, batch, rng):
    (loss, new_model_state), grads = jax.value_and_grad(loss_of, has_aux=True)(
        params, model_state, batch, rng
    )
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return new_params, new_model_state, new_opt_state, loss

  return _PlacementKeepingStep(step)


class _PlacementKeepingStep:
  """A jitted, donating step whose outputs keep the inputs' placements.

  Without the output shardings, XLA's sharding propagation lets a buffer split
  over the data axis (an averaging ring, EMA, SWA) pull the updated params into
  its split layout after the first step, and the next step then recompiles for
  that layout. The shardings are read from the first call's arguments (arrays,
  or `jax.ShapeDtypeStruct`s for `lower`).
  """

  def __init__(self, step: Callable):
    self._step = step
    self._jitted: Callable | None = None

  def _jit(self, params, model_state, opt_state) -> Callable:
    if self._jitted is None:
      keep = jax.tree.map(lambda x: getattr(x, "sharding", None),
                          (params, model_state, opt_state))
      self._jitted = jax.jit(self._step, donate_argnums=(0, 1, 2),
                             out_shardings=(*keep, None))
    return self._jitted

  def __call__(self, params, model_state, opt_state, batch, rng):
    return self._jit(params, model_state, opt_state)(params, model_state, opt_state,
                                                     batch, rng)

  def lower(self, params, model_state, opt_state, batch, rng):
    return self._jit(params, model_state, opt_state).lower(params, model_state, opt_state,
                                                           batch, rng)


class OptaxSubmission:
  """AlgoPerf's submission API around a module's ``make_optimizer``."""

  def __init__(self, module: ModuleType, name: str):
    self.module = module
    self.name = name
    self._step: Callable | None = None
    self._eval_params: Callable | None = None

  # --- AlgoPerf's five functions -------------------------------------------

  def get_batch_size(self, workload_id: str) -> int | None:
    fn = getattr(self.module, "get_batch_size", None)
    return fn(workload_id) if fn else None

  def init_optimizer_state(
      self, workload: spec.Workload, model_params: Any, model_state: Any,
      hyperparameters: Mapping[str, Any], rng: jax.Array,
  ) -> Any:
    del rng
    tx = self.module.make_optimizer(hyperparameters, workload, workload.step_hint)
    if not isinstance(tx, optax.GradientTransformation):
      raise spec.UsageError(
          f"submission {self.name}: make_optimizer must return an "
          f"optax.GradientTransformation, got {type(tx).__name__}"
      )
    self._step = make_train_step(
        workload, tx,
        dropout_rate=hyperparameters.get("dropout_rate"),
        label_smoothing=hyperparameters.get("label_smoothing", 0.0) or 0.0,
    )
    opt_state = jax.jit(tx.init)(model_params)
    self._pending = None  # (step, loss) not yet checked for divergence
    eval_fn = getattr(self.module, "eval_params", None)
    if eval_fn is None:
      from algoperf_avg import averaging

      # Without an averaging transform, eval uses the training weights as is.
      if averaging.has_average(opt_state):
        eval_fn = averaging.averaged_params
    self._eval_params = jax.jit(eval_fn) if eval_fn else None
    return opt_state

  def update_params(
      self, workload, current_param_container, current_params_types, model_state,
      hyperparameters, batch, loss_type, optimizer_state, eval_results,
      global_step, rng, train_state=None,
  ):
    del workload, current_params_types, hyperparameters, loss_type
    del eval_results, train_state
    params, model_state, optimizer_state, loss = self._step(
        current_param_container, model_state, optimizer_state, batch, rng
    )
    # Divergence is checked on the previous step's loss: the runner has waited
    # for that step already, so reading it does not stall the device (the
    # current step keeps running while the host prepares the next batch).
    self._check_pending()
    self._pending = (global_step, loss)
    return optimizer_state, params, model_state

  def _check_pending(self) -> None:
    pending, self._pending = getattr(self, "_pending", None), None
    if pending is not None and not math.isfinite(float(pending[1])):
      raise spec.DivergedError(f"training loss is {float(pending[1])} at step {pending[0]}")

  def prepare_for_eval(
      self, workload, current_param_container, current_params_types, model_state,
      hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng,
  ) -> spec.PreparedForEval:
    del workload, current_params_types, loss_type, eval_results, global_step
    if self._eval_params is None:
      return spec.PreparedForEval(optimizer_state, current_param_container, model_state)
    # Averaged weights are computed for evaluation only; the training weights
    # are neither copied nor replaced.
    eval_params = self._eval_params(optimizer_state, current_param_container)
    return spec.PreparedForEval(
        optimizer_state, current_param_container, model_state, eval_params=eval_params)

  def data_selection(
      self, workload, input_queue, optimizer_state, current_param_container,
      model_state, hyperparameters, global_step, rng,
  ):
    del workload, optimizer_state, current_param_container, model_state
    del hyperparameters, global_step, rng
    return next(input_queue)

  def as_submission(self, source: str = "") -> spec.Submission:
    """The `spec.Submission` record the runner consumes."""
    return spec.Submission(
        name=self.name,
        get_batch_size=self.get_batch_size,
        init_optimizer_state=self.init_optimizer_state,
        update_params=self.update_params,
        prepare_for_eval=self.prepare_for_eval,
        data_selection=self.data_selection,
        default_hparams=dict(getattr(self.module, "DEFAULT_HPARAMS", {})),
        source=source,
    )

