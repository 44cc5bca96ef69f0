"""A submission in the exact form of AlgoPerf's JAX reference submissions.

Our own code, written the way AlgoPerf's ``jax_nadamw_full_budget.py`` is:
``from algoperf import jax_sharding_utils, spec``, AlgoPerf's five functions
with their signatures, the optimizer state kept as ``(opt_state,
update_fn)``, parameters zeroed from ``workload.param_shapes`` (ShapeTuple),
a train step jitted with explicit in/out shardings, hyperparameters read as
attributes (``hasattr`` for optional ones), and ``get_batch_size`` keyed by
AlgoPerf's workload names. NadamW is built from optax pieces here (AlgoPerf's
formula: Adam moments, the Nesterov mix, decoupled weight decay).
"""

import jax
import jax.numpy as jnp
import optax
from algoperf import jax_sharding_utils, spec

_GRAD_CLIP_EPS = 1e-6


def _nadam_direction(b1, b2, eps):
  """The NadamW direction before the learning rate (AlgoPerf's scale_by_nadam)."""

  def init_fn(params):
    return {"count": jnp.zeros([], jnp.int32),
            "mu": jax.tree.map(jnp.zeros_like, params),
            "nu": jax.tree.map(jnp.zeros_like, params)}  # two trees: both are donated

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["mu"], updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state["nu"], updates)
    count = optax.safe_increment(state["count"])
    mu_nesterov = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, updates)
    mu_hat = jax.tree.map(lambda m: m / (1 - b1**count), mu_nesterov)
    nu_hat = jax.tree.map(lambda v: v / (1 - b2**count), nu)
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
    return direction, {"count": count, "mu": mu, "nu": nu}

  return optax.GradientTransformation(init_fn, update_fn)


def _schedule(step_hint, hyperparameters):
  warmup_steps = int(hyperparameters.warmup_factor * step_hint)
  warmup = optax.linear_schedule(0.0, hyperparameters.learning_rate, warmup_steps)
  cosine = optax.cosine_decay_schedule(hyperparameters.learning_rate,
                                       max(step_hint - warmup_steps, 1))
  return optax.join_schedules([warmup, cosine], [warmup_steps])


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
  del model_params, model_state, rng
  schedule = _schedule(workload.step_hint, hyperparameters)
  tx = optax.chain(
      _nadam_direction(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2, 1e-8),
      optax.add_decayed_weights(hyperparameters.weight_decay),
      optax.scale_by_learning_rate(schedule),
  )
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape_tuple), workload.param_shapes)
  return tx.init(zeros), tx.update


def _train_step(workload, opt_update_fn, model_state, optimizer_state, params, batch, rng,
                grad_clip, label_smoothing, dropout_rate):
  def loss_of(current):
    logits, new_model_state = workload.model_fn(
        current, batch, model_state, spec.ForwardPassMode.TRAIN, rng,
        update_batch_norm=True, dropout_rate=dropout_rate)
    losses = workload.loss_fn(label_batch=batch["targets"], logits_batch=logits,
                              mask_batch=batch.get("weights"),
                              label_smoothing=label_smoothing)
    return losses["summed"], (losses["n_valid_examples"], new_model_state)

  (summed, (n_valid, new_model_state)), grad = jax.value_and_grad(
      loss_of, has_aux=True)(params)
  loss = summed / n_valid
  grad = jax.tree.map(lambda g: g / n_valid, grad)
  grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grad)))
  if grad_clip is not None:
    factor = jax.lax.clamp(0.0, grad_clip / (grad_norm + _GRAD_CLIP_EPS), 1.0)
    grad = jax.tree.map(lambda g: g * factor, grad)
  updates, new_optimizer_state = opt_update_fn(grad, optimizer_state, params)
  return (new_optimizer_state, optax.apply_updates(params, updates), new_model_state,
          loss, grad_norm)


def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results,
                  global_step, rng, train_state=None):
  del current_params_types, loss_type, eval_results, global_step
  assert train_state is None or "accumulated_submission_time" in train_state
  optimizer_state, opt_update_fn = optimizer_state
  label_smoothing = (hyperparameters.label_smoothing
                     if hasattr(hyperparameters, "label_smoothing") else 0.0)
  grad_clip = hyperparameters.grad_clip if hasattr(hyperparameters, "grad_clip") else None
  replicated = jax_sharding_utils.get_replicate_sharding()
  sharded = jax_sharding_utils.get_batch_dim_sharding()
  step = jax.jit(
      _train_step, static_argnums=(0, 1), donate_argnums=(2, 3, 4),
      in_shardings=(replicated, replicated, replicated, sharded, replicated, replicated,
                    replicated, replicated),
      out_shardings=(replicated, replicated, replicated, replicated, replicated))
  new_optimizer_state, new_params, new_model_state, loss, grad_norm = step(
      workload, opt_update_fn, model_state, optimizer_state, current_param_container,
      batch, rng, grad_clip, label_smoothing, hyperparameters.dropout_rate)
  del loss, grad_norm
  return (new_optimizer_state, opt_update_fn), new_params, new_model_state


def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step,
                     rng):
  del workload, hyperparameters, current_params_types, loss_type, eval_results
  del global_step, rng
  return optimizer_state, current_param_container, model_state


def get_batch_size(workload_name):
  sizes = {"criteo1tb": 262_144, "fastmri": 32, "imagenet_resnet": 1024,
           "imagenet_vit": 1024, "librispeech_conformer": 256,
           "librispeech_deepspeech": 256, "ogbg": 128, "wmt": 128}
  if workload_name not in sizes:
    raise ValueError(f"Unsupported workload name: {workload_name}.")
  return sizes[workload_name]


def data_selection(workload, input_queue, optimizer_state, current_param_container,
                   model_state, hyperparameters, global_step, rng):
  del workload, optimizer_state, current_param_container, model_state
  del hyperparameters, global_step, rng
  return next(input_queue)

