"""Weight averaging (LAWA, EMA, power EMA, SWA) as optax transformations.

Each transform is meant as the last link of a chain::

    tx = optax.chain(nadamw(1e-3), lawa(window=20, every=64))

It sees the final ``updates`` and the pre-update ``params``, records the
post-update weights ``optax.apply_updates(params, updates)`` on its schedule,
and returns ``updates`` unchanged: the average never feeds back into training.
`averaged_params` reads the average out of the optimizer state by the state's
name, wherever the transform sits in the chain.

Cost. The record decision is a `jax.lax.cond` inside the jitted step: with the
step's arguments donated, a step that does not record passes the buffers
through aliased, without a copy, so ordinary steps pay nothing and a submission
needs no hook in the train step. A LAWA record writes one slot of a
``(window, ...)`` ring in place and updates a running sum: O(P) per record,
O(P) to read the mean. XLA (CPU, jax 0.10) copies the whole ring when one step
both reads the oldest slot and overwrites it, unless the write visibly depends
on the read: `_after` adds that dependency, and the exact re-summation (once
per wrap) only reads the ring, before the write. SWA packs its sum and Kahan
compensation into one buffer for the same reason. Measurements behind each
choice: benchmarks/README.md.

Accuracy. Sums are kept in float32 (or wider) whatever the params' dtype. The
LAWA running sum is recomputed exactly each time the ring wraps, so rounding
cannot drift over many records; the SWA sum is Kahan-compensated.

Memory (P = one copy of the params): EMA and power EMA 1xP, LAWA (window+1)xP,
SWA 2xP.
With ``offload=True`` the ring / EMA / SWA buffers live in host memory
(``pinned_host``); only the LAWA sum stays on the device.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

_NO_PARAMS = "{} records the weights: call update(updates, state, params)."


class LawaState(NamedTuple):
  """State of `lawa`. ``lawa_ring[k % window]`` holds the k-th record."""

  count: jax.Array  # updates seen
  records: jax.Array  # checkpoints recorded
  lawa_ring: optax.Params  # (window, *shape) per leaf, in the params' dtypes
  lawa_sum: optax.Params  # float32 sum of the filled slots


class EmaWeightsState(NamedTuple):
  """State of `ema` (an EMA of the weights, unlike `optax.ema`'s EmaState)."""

  count: jax.Array
  records: jax.Array
  ema_weights: optax.Params  # float32


class PowerEmaState(NamedTuple):
  """State of `power_ema`: ``records`` is the t of the decay (1 - 1/t)^(gamma+1)."""

  count: jax.Array
  records: jax.Array
  power_ema_weights: optax.Params  # float32


class SwaState(NamedTuple):
  """State of `swa`: a Kahan-compensated float32 sum of the records."""

  count: jax.Array
  records: jax.Array
  # complex64 per leaf: real = the float32 sum, imag = its Kahan compensation.
  # One elementwise buffer XLA updates in place; as two buffers each depending
  # on both, XLA (CPU) copies them on every step.
  swa_sum: optax.Params


_STATE_TYPES = (LawaState, EmaWeightsState, PowerEmaState, SwaState)


@functools.cache
def _host_memory_available() -> bool:
  """Whether the default backend has ``pinned_host`` memory; warns once if not."""
  kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
  if "pinned_host" in kinds:
    return True
  warnings.warn(
      f"averaging: offload=True, but {jax.default_backend()} devices have no "
      f"'pinned_host' memory (memory kinds: {sorted(kinds)}); averaging buffers "
      "stay in device memory.",
      stacklevel=3,
  )
  return False


AXIS = "batch"  # the data-parallel mesh axis (training.sharding.AXIS)


class _Placement(NamedTuple):
  """How buffers are stored: sharded over the data axis, and/or in host memory.

  With an ambient mesh whose data axis has N > 1 devices (the runner trains
  under ``jax.set_mesh``), every buffer leaf is stored flat, padded to a
  multiple of N and split over the N devices: each device updates its own
  slice from its (replicated) copy of the weights, with no communication, and
  holds 1/N of the buffer; reading the average gathers it once. Without one
  (a single device, or no mesh), buffers have the params' shapes.
  """

  offload: bool
  shards: int = 1

  @classmethod
  def current(cls, offload: bool) -> _Placement:
    mesh = jax.sharding.get_abstract_mesh()
    shards = 1 if mesh.empty else dict(mesh.shape).get(AXIS, 1)
    return cls(offload and _host_memory_available(), shards)

  def pack(self, x: jax.Array) -> jax.Array:
    """A params-shaped value in the buffers' layout (flat and padded when sharded)."""
    if self.shards == 1:
      return x
    flat = x.reshape(-1)
    return jnp.pad(flat, (0, (-flat.size) % self.shards))

  def unpack(self, x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if self.shards == 1:
      return x
    return x[:math.prod(shape)].reshape(shape)

  def packed_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.shards == 1:
      return tuple(shape)
    size = math.prod(shape)
    return (size + (-size) % self.shards,)

  def shard(self, x: jax.Array, ring: bool = False) -> jax.Array:
    """Split a buffer over the data axis (a ring along its second axis)."""
    if self.shards == 1:
      return x
    spec = jax.sharding.PartitionSpec(None, AXIS) if ring else jax.sharding.PartitionSpec(AXIS)
    return jax.lax.with_sharding_constraint(x, spec)

  def store(self, x: jax.Array, ring: bool = False) -> jax.Array:
    """Place a buffer: its slice on each device (and in host memory if offloaded)."""
    x = self.shard(x, ring)
    return jax.device_put(x, jax.memory.Space.Host) if self.offload else x

  def load(self, x: jax.Array) -> jax.Array:
    return jax.device_put(x, jax.memory.Space.Device) if self.offload else x


def _unpack_like(x: jax.Array, like: Any) -> jax.Array:
  """A buffer leaf back in the shape of its param (any layout)."""
  if x.shape == like.shape:
    return x
  return x[:math.prod(like.shape)].reshape(like.shape)


def _accumulator_dtype(dtype: jnp.dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


def _pair_dtype(x: jax.Array) -> jnp.dtype:
  """complex64 for float32 accumulation (complex128 for float64)."""
  return jnp.result_type(_accumulator_dtype(x.dtype), jnp.complex64)


def _check_schedule(every: int, start_step: int) -> None:
  if every < 1:
    raise ValueError(f"every must be >= 1, got {every}")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")


def _record_if_due(state, every, start_step, record_fn, buffers):
  """``record_fn(buffers)`` on record steps, else ``buffers`` untouched.

  Under a donating jit the untouched branch aliases its inputs: no copy.
  Returns the buffers and the number of records after this step.
  """
  step = state.count + 1  # this update's number, 1-based
  due = (step >= start_step) & ((step - start_step) % every == 0)
  records = state.records + due.astype(jnp.int32)
  if every == 1 and start_step <= 1:  # every step records: no cond needed
    return record_fn(buffers), records
  return jax.lax.cond(due, record_fn, lambda b: b, buffers), records


def _after(x: jax.Array, dependency: jax.Array) -> jax.Array:
  """``x`` unchanged, but computed after ``dependency``.

  Adds a zero derived from one element of ``dependency`` (values are unchanged,
  but for -0.0 becoming 0.0); XLA cannot fold it away, so the in-place write of
  ``x`` is ordered after the read that produced ``dependency``.
  """
  if dependency.size == 0:
    return x
  element = dependency.reshape(-1)[0]
  zero = jnp.where(jnp.isfinite(element), element, 0) * 0
  return x + zero.astype(x.dtype)


def lawa(
    window: int, every: int, start_step: int = 0, *, offload: bool = False
) -> optax.GradientTransformation:
  """Latest weight averaging: the mean of the last ``window`` checkpoints.

  A checkpoint (the post-update weights) is recorded after update ``t``
  (1-based) when ``t >= start_step`` and ``(t - start_step) % every == 0``.
  Until ``window`` checkpoints exist, the mean is over those recorded.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from algoperf_avg import averaging
    >>> tx = optax.chain(optax.sgd(0.1), averaging.lawa(window=2, every=1))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update({"w": -jnp.ones(2)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> averaging.averaged_params(state, params)["w"]  # mean of 0.2 and 0.3
    Array([0.25, 0.25], dtype=float32)

  Args:
    window: number of checkpoints averaged (L).
    every: steps between checkpoints (nu).
    start_step: first update that may be recorded.
    offload: keep the ring in host memory; only the sum stays on the device.

  Returns:
    A `optax.GradientTransformation` that returns the updates unchanged.

  References:
    Kaddour, "Stop Wasting My Time! Saving Days of ImageNet and BERT Training
    with Latest Weight Averaging", 2022; Ajroldi, Orvieto & Geiping, "When,
    Where and Why to Average Weights?", ICML 2025.
  """
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  _check_schedule(every, start_step)
  if offload:
    _host_memory_available()  # warns once, here, where the backend has no host memory

  def init_fn(params):
    place = _Placement.current(offload)
    return LawaState(
        count=jnp.zeros([], jnp.int32),
        records=jnp.zeros([], jnp.int32),
        lawa_ring=jax.tree.map(
            lambda p: place.store(
                jnp.zeros((window, *place.packed_shape(p.shape)), p.dtype), ring=True),
            params,
        ),
        lawa_sum=jax.tree.map(
            lambda p: place.shard(
                jnp.zeros(place.packed_shape(p.shape), _accumulator_dtype(p.dtype))),
            params,
        ),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_NO_PARAMS.format("lawa"))
    place = _Placement.current(offload)
    slot = state.records % window
    # Outside the branches: XLA merges this with the train step's own
    # apply_updates, and the branches read the new weights, not the old params
    # (whose buffer the donated step overwrites in place).
    weights = jax.tree.map(place.pack, optax.apply_updates(params, updates))

    def new_sum(ring, total, w):
      oldest = place.load(jax.lax.dynamic_index_in_dim(ring, slot, 0, False))
      return total + (w.astype(total.dtype) - oldest.astype(total.dtype))

    def exact_sum(ring, total, w):
      # Once per wrap, so rounding in the running sum cannot drift. A loop:
      # one slot at a time on the device (offload), no (window, ...) temporary.
      def add_slot(i, acc):
        return acc + jnp.where(i == slot, w, place.load(ring[i])).astype(acc.dtype)

      return jax.lax.fori_loop(0, window, add_slot, jnp.zeros_like(total))

    def record(buffers):
      ring, total = buffers
      # Both branches only read the ring; the one in-place write follows.
      total = jax.lax.cond(
          slot == window - 1,
          lambda *b: jax.tree.map(exact_sum, *b),
          lambda *b: jax.tree.map(new_sum, *b),
          ring, total, weights,
      )
      ring = jax.tree.map(
          lambda r, t, w: place.shard(jax.lax.dynamic_update_index_in_dim(
              r, place.store(_after(w, t)), slot, 0
          ), ring=True),
          ring, total, weights,
      )
      return ring, jax.tree.map(place.shard, total)

    (ring, total), records = _record_if_due(
        state, every, start_step, record, (state.lawa_ring, state.lawa_sum)
    )
    return updates, LawaState(
        count=optax.safe_increment(state.count),
        records=records,
        lawa_ring=ring,
        lawa_sum=total,
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _ema_transform(name, decay_at, every, start_step, offload, state_type, field):
  """An EMA of the weights; ``decay_at(k)`` is ``(beta, 1 - beta)`` on record ``k`` (1-based).

  ``1 - beta`` comes separately so that a decay close to 1 keeps its precision.
  """
  _check_schedule(every, start_step)
  if offload:
    _host_memory_available()  # warns once, here

  def init_fn(params):
    place = _Placement.current(offload)
    return state_type(
        count=jnp.zeros([], jnp.int32),
        records=jnp.zeros([], jnp.int32),
        **{field: jax.tree.map(
            # A real copy, even under jit: a leaf aliasing a params buffer
            # would be donated twice by the train step.
            lambda p: place.store(
                place.pack(jnp.array(p, _accumulator_dtype(p.dtype), copy=True))),
            params,
        )},
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_NO_PARAMS.format(name))
    place = _Placement.current(offload)
    # Outside the cond: see lawa.
    weights = jax.tree.map(place.pack, optax.apply_updates(params, updates))

    def record(average):
      decay, weight = decay_at(state.records + 1)
      average = jax.tree.map(
          lambda w, a: decay * a + weight * w.astype(a.dtype),
          weights, jax.tree.map(place.load, average))
      return jax.tree.map(place.store, average)

    average, records = _record_if_due(
        state, every, start_step, record, getattr(state, field)
    )
    return updates, state_type(
        count=optax.safe_increment(state.count),
        records=records,
        **{field: average},
    )

  return optax.GradientTransformation(init_fn, update_fn)


def ema(
    decay: float, every: int = 1, start_step: int = 0, *, offload: bool = False
) -> optax.GradientTransformation:
  """Exponential moving average of the weights (not of the updates).

  On each record step (as in `lawa`), ``ema <- decay * ema + (1 - decay) * w``
  with ``w`` the post-update weights. The average starts at the weights given
  to ``init`` and is kept in float32.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from algoperf_avg import averaging
    >>> tx = optax.chain(optax.sgd(1.0), averaging.ema(decay=0.5))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": -jnp.ones(2)}, state, params)
    >>> averaging.averaged_params(state, params)["w"]  # 0.5 * 0 + 0.5 * 1
    Array([0.5, 0.5], dtype=float32)

  Args:
    decay: weight of the running average (beta).
    every: steps between records (nu).
    start_step: first update that may be recorded.
    offload: keep the average in host memory.

  Returns:
    A `optax.GradientTransformation` that returns the updates unchanged.

  References:
    Polyak & Juditsky, "Acceleration of Stochastic Approximation by
    Averaging", 1992; Ajroldi, Orvieto & Geiping, "When, Where and Why to
    Average Weights?", ICML 2025.
  """
  if not 0.0 <= decay <= 1.0:
    raise ValueError(f"decay must be in [0, 1], got {decay}")
  return _ema_transform("ema", lambda k: (decay, 1.0 - decay), every, start_step, offload,
                        EmaWeightsState, "ema_weights")


def sigma_rel_to_gamma(sigma_rel: float) -> float:
  """The exponent gamma of a power EMA whose profile has relative width ``sigma_rel``.

  Karras et al. (2024, eq. 3 and App. C) measure a power-function profile
  ``p(tau) ~ tau^gamma`` on ``[0, t]`` by its standard deviation relative to
  ``t``: ``sigma_rel = (gamma + 1)^(1/2) (gamma + 2)^(-1) (gamma + 3)^(-1/2)``.
  This inverts it: gamma is the largest real root of
  ``gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s)``, ``s = sigma_rel^-2``.
  ``sigma_rel`` must lie in (0, 12^-1/2 ~ 0.2887], which maps onto
  gamma >= 0 (12^-1/2: the uniform profile, gamma = 0), where sigma_rel
  decreases with gamma; below gamma = 0 the map is not one-to-one.
  """
  if not 0.0 < sigma_rel <= _SIGMA_REL_MAX:
    raise ValueError(f"sigma_rel must be in (0, {_SIGMA_REL_MAX:.4f}], got {sigma_rel}")
  s = sigma_rel ** -2.0
  roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
  return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
  """The relative standard deviation of a power EMA's profile (Karras et al. eq. 3)."""
  if gamma <= -1.0:
    raise ValueError(f"gamma must be > -1, got {gamma}")
  return float((gamma + 1) ** 0.5 / ((gamma + 2) * (gamma + 3) ** 0.5))


_SIGMA_REL_MAX = 12 ** -0.5 + 1e-12  # gamma = 0, the uniform profile (and rounding)


def power_ema(
    gamma: float, every: int = 1, start_step: int = 0, *, offload: bool = False
) -> optax.GradientTransformation:
  """Power-function EMA of the weights: its profile grows with training length.

  On record ``t`` (1-based, records taken as in `lawa`),
  ``ema <- beta_t * ema + (1 - beta_t) * w`` with
  ``beta_t = (1 - 1/t)^(gamma + 1)``. The product of the decays telescopes,
  so after ``T`` records record ``j`` has weight exactly
  ``(j^(gamma+1) - (j-1)^(gamma+1)) / T^(gamma+1)``: a discretised
  ``tau^gamma`` profile over the whole run, whose relative width
  (`gamma_to_sigma_rel`) does not change with ``T``. ``beta_1 = 0``: the
  average is the first record's weights, whatever ``init`` was given.
  Kept in float32; ``1 - beta_t`` is computed as
  ``-expm1((gamma+1) log1p(-1/t))``, accurate for long runs.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from algoperf_avg import averaging
    >>> tx = optax.chain(optax.sgd(1.0), averaging.power_ema(gamma=0.0))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> for _ in range(3):  # gamma=0: the uniform mean of the records 1, 2, 3
    ...   updates, state = tx.update({"w": -jnp.ones(2)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> averaging.averaged_params(state, params)["w"]
    Array([2., 2.], dtype=float32)

  Args:
    gamma: the exponent (> -1); from a relative width: `sigma_rel_to_gamma`.
    every: steps between records.
    start_step: first update that may be recorded.
    offload: keep the average in host memory.

  Returns:
    A `optax.GradientTransformation` that returns the updates unchanged.

  References:
    Karras et al., "Analyzing and Improving the Training Dynamics of
    Diffusion Models", CVPR 2024 (section 3.1, appendix C).
  """
  if not gamma > -1.0:
    raise ValueError(f"gamma must be > -1, got {gamma}")
  exponent = float(gamma) + 1.0

  def decay_at(t):
    log_beta = exponent * jnp.log1p(-1.0 / t.astype(jnp.float32))
    return jnp.exp(log_beta), -jnp.expm1(log_beta)

  return _ema_transform("power_ema", decay_at, every, start_step, offload, PowerEmaState,
                        "power_ema_weights")


def swa(
    start_step: int = 0, every: int = 1, *, offload: bool = False
) -> optax.GradientTransformation:
  """Stochastic weight averaging: the mean of every record since ``start_step``.

  Records are taken as in `lawa`; all of them are averaged uniformly (Polyak
  averaging when ``every=1``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from algoperf_avg import averaging
    >>> tx = optax.chain(optax.sgd(1.0), averaging.swa(start_step=2))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   updates, state = tx.update({"w": -jnp.ones(2)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> averaging.averaged_params(state, params)["w"]  # mean of 2 and 3
    Array([2.5, 2.5], dtype=float32)

  Args:
    start_step: first update that may be recorded.
    every: steps between records.
    offload: keep the sum (and its compensation) in host memory.

  Returns:
    A `optax.GradientTransformation` that returns the updates unchanged.

  References:
    Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018; Ajroldi, Orvieto & Geiping, "When, Where and Why
    to Average Weights?", ICML 2025.
  """
  _check_schedule(every, start_step)
  if offload:
    _host_memory_available()

  def init_fn(params):
    place = _Placement.current(offload)
    return SwaState(
        count=jnp.zeros([], jnp.int32),
        records=jnp.zeros([], jnp.int32),
        swa_sum=jax.tree.map(
            lambda p: place.store(jnp.zeros(place.packed_shape(p.shape), _pair_dtype(p))),
            params),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(_NO_PARAMS.format("swa"))
    place = _Placement.current(offload)
    # Outside the cond: see lawa.
    weights = jax.tree.map(place.pack, optax.apply_updates(params, updates))

    def kahan_add(pair, w):
      pair = place.load(pair)
      total, compensation = jnp.real(pair), jnp.imag(pair)
      y = w.astype(total.dtype) - compensation
      new_total = total + y
      return place.store(jax.lax.complex(new_total, (new_total - total) - y))

    pairs, records = _record_if_due(
        state, every, start_step,
        lambda pairs: jax.tree.map(kahan_add, pairs, weights), state.swa_sum,
    )
    return updates, SwaState(
        count=optax.safe_increment(state.count),
        records=records,
        swa_sum=pairs,
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _mean(state: Any, params: optax.Params) -> optax.Params:
  """The average held by one averaging state, in the params' dtypes."""
  load = lambda x: jax.device_put(x, jax.memory.Space.Device)  # noqa: E731
  if isinstance(state, LawaState):
    rings = jax.tree.leaves(state.lawa_ring)
    window = rings[0].shape[0] if rings else 1
    n = jnp.clip(state.records, 1, window)
    mean = jax.tree.map(lambda s: s / n, state.lawa_sum)
  elif isinstance(state, EmaWeightsState):
    mean = jax.tree.map(load, state.ema_weights)
  elif isinstance(state, PowerEmaState):
    mean = jax.tree.map(load, state.power_ema_weights)
  else:
    n = jnp.maximum(state.records, 1)
    mean = jax.tree.map(
        lambda pair: (jnp.real(load(pair)) - jnp.imag(load(pair))) / n, state.swa_sum
    )
  return jax.tree.map(
      lambda m, p: jnp.where(state.records > 0, _unpack_like(m, p).astype(p.dtype), p),
      mean, params,
  )


def has_average(opt_state: optax.OptState) -> bool:
  """Whether ``opt_state`` holds a `lawa`, `ema`, `power_ema` or `swa` state (by name)."""
  return any(
      isinstance(state, _STATE_TYPES)
      for t in _STATE_TYPES
      for _, state in optax.tree.get_all_with_path(opt_state, t.__name__)
  )


def averaged_params(
    opt_state: optax.OptState, params: optax.Params, name: str | None = None
) -> optax.Params:
  """The averaged weights held in ``opt_state``, or ``params`` if none yet.

  The averaging state is found by its name (`optax.tree.get_all_with_path`),
  anywhere in nested chains or `optax.inject_hyperparams`, never by position.
  Without an averaging transform in the chain, returns ``params``.

  Args:
    opt_state: the optimizer state of a chain containing `lawa`, `ema`,
      `power_ema` or `swa`.
    params: the current (training) weights: their dtypes are returned, and
      they are returned as is before the first record.
    name: ``"LawaState"``, ``"EmaWeightsState"``, ``"PowerEmaState"`` or
      ``"SwaState"``; needed
      only when the chain holds more than one averaging transform.

  Returns:
    A pytree like ``params``. Works eagerly and under `jax.jit`.
  """
  names = [name] if name else [t.__name__ for t in _STATE_TYPES]
  found = [
      (path, state)
      for n in names
      for path, state in optax.tree.get_all_with_path(opt_state, n)
      if isinstance(state, _STATE_TYPES)
  ]
  if not found and name:
    raise ValueError(f"no {name} in the optimizer state")
  if not found:
    return params
  if len(found) > 1:
    paths = ", ".join(jax.tree_util.keystr(path) for path, _ in found)
    raise ValueError(f"several averaging states ({paths}); pick one with name=")
  return _mean(found[0][1], params)
