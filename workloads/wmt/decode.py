"""Beam search with a key/value cache, to translate with `model.Transformer`.

The search is the one AlgoPerf evaluates WMT with (the tensor2tensor / Flax
WMT beam search): each step extends every live hypothesis by every token,
keeps the ``2 * beam_size`` best extensions so that ``beam_size`` of them can
stay live even when the best ones end, moves those that emitted EOS into a
finished set ranked by ``log p / ((5 + length) / 6) ** alpha`` and stops
when no live hypothesis can still beat the worst finished one, or at
``max_decode_len``. Everything is a fixed-shape `jax.lax.while_loop`, so the
whole translation jits.

Beams are kept best first: index 0 of the beam axis is the best hypothesis.
Batch and beam axes are merged as ``batch * beam`` for the model, each
example's beams next to each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from workloads.wmt import model as model_lib

PAD_ID = 0
EOS_ID = 2
BEAM_SIZE = 4
LENGTH_PENALTY_ALPHA = 0.6
MAX_DECODE_LENGTH = 256
# A finite "minus infinity": adding it to a score rules the hypothesis out
# without producing NaNs in later arithmetic.
NEG_INF = -1.0e7

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT's ``((5 + length) / 6) ** alpha``; a finished score is log p over it."""
  return jnp.power((5.0 + length) / 6.0, alpha)


# Cache leaves with fewer than two axes (the decoding position) are shared by
# all examples and beams; every other array has the batch axis first.
def _has_batch_axis(x: jax.Array) -> bool:
  return x.ndim >= 2


def repeat_beams(tree: Any, beam_size: int) -> Any:
  """``(B, ...) -> (B, beam_size, ...)``, copying each example to its beams."""
  def repeat(x):
    return jnp.repeat(x[:, None], beam_size, axis=1) if _has_batch_axis(x) else x
  return jax.tree.map(repeat, tree)


def merge_beams(tree: Any) -> Any:
  """``(B, K, ...) -> (B * K, ...)``."""
  def merge(x):
    return x.reshape((-1,) + x.shape[2:]) if _has_batch_axis(x) else x
  return jax.tree.map(merge, tree)


def split_beams(tree: Any, batch_size: int) -> Any:
  """``(B * K, ...) -> (B, K, ...)``."""
  def split(x):
    return x.reshape((batch_size, -1) + x.shape[1:]) if _has_batch_axis(x) else x
  return jax.tree.map(split, tree)


def take_beams(tree: Any, beam_indices_BxN: jax.Array) -> Any:
  """Selects beams: ``out[b, n] = x[b, beam_indices[b, n]]`` for every leaf."""
  batch_BxN = jnp.arange(beam_indices_BxN.shape[0])[:, None]
  def take(x):
    return x[batch_BxN, beam_indices_BxN] if _has_batch_axis(x) else x
  return jax.tree.map(take, tree)


class BeamState(NamedTuple):
  """Search state; sequences hold a leading 0 then the decoded tokens.

  Attributes:
    step: tokens decoded so far; the last one is at ``ids[..., step]``.
    live_log_probs: ``(B, K)`` log-probabilities of the live hypotheses.
    live_ids: ``(B, K, T)`` live hypotheses.
    finished_scores: ``(B, K)`` length-penalised scores of finished ones.
    finished_ids: ``(B, K, T)`` finished hypotheses (ending in EOS).
    finished: ``(B, K)`` bool, whether a finished slot holds a hypothesis.
    cache: the decoder cache of the live hypotheses, leaves ``(B, K, ...)``.
  """

  step: jax.Array
  live_log_probs: jax.Array
  live_ids: jax.Array
  finished_scores: jax.Array
  finished_ids: jax.Array
  finished: jax.Array
  cache: Any


def _initial_state(batch_size: int, beam_size: int, length: int, cache) -> BeamState:
  # Only beam 0 starts live: the others would duplicate it.
  live = jnp.full((batch_size, beam_size), NEG_INF).at[:, 0].set(0.0)
  ids = jnp.zeros((batch_size, beam_size, length), jnp.int32)
  return BeamState(
      step=jnp.array(0), live_log_probs=live, live_ids=ids,
      finished_scores=jnp.full((batch_size, beam_size), NEG_INF),
      finished_ids=ids, finished=jnp.zeros((batch_size, beam_size), bool),
      cache=repeat_beams(cache, beam_size),
  )


def beam_search(
    batch_size: int,
    cache: Any,
    step_fn: StepFn,
    *,
    beam_size: int = BEAM_SIZE,
    alpha: float = LENGTH_PENALTY_ALPHA,
    eos_id: int = EOS_ID,
    max_decode_len: int = MAX_DECODE_LENGTH,
) -> tuple[jax.Array, jax.Array]:
  """Beam search over ``step_fn``'s next-token logits.

  Args:
    batch_size: number of examples ``B``.
    cache: the decoder cache for ``B`` examples (leaves ``(B, ...)``, or
      scalars shared by all); it is copied to every beam.
    step_fn: ``(ids (B*K, 1), cache (B*K, ...)) -> (logits (B*K, V), cache)``,
      one decoding step given each hypothesis's last token.
    beam_size: hypotheses kept per example, ``K``.
    alpha: length-penalty exponent (`length_penalty`).
    eos_id: the token that ends a hypothesis.
    max_decode_len: length ``T`` of the returned sequences, the leading 0
      included (so at most ``T - 1`` tokens are decoded).

  Returns:
    ``(ids (B, K, T), scores (B, K))``, best first. ``ids[..., 0]`` is 0 and
    positions after EOS are 0. An example with no finished hypothesis returns
    its live ones and their log-probabilities.
  """
  def keep_going(state: BeamState) -> jax.Array:
    # The best a live hypothesis can still score: its log-probability only
    # falls, and the penalty is largest at the longest length.
    best_live = state.live_log_probs[:, :1] / length_penalty(max_decode_len, alpha)
    worst_finished = jnp.where(
        state.finished, state.finished_scores.min(axis=1, keepdims=True), NEG_INF)
    settled = jnp.all(worst_finished > best_live)
    return (state.step < max_decode_len - 1) & ~settled

  def advance(state: BeamState) -> BeamState:
    last_ids = jax.lax.dynamic_slice_in_dim(state.live_ids, state.step, 1, axis=2)
    logits, cache = step_fn(merge_beams(last_ids), merge_beams(state.cache))
    cache = split_beams(cache, batch_size)
    log_probs_BxKxV = (jax.nn.log_softmax(split_beams(logits, batch_size))
                       + state.live_log_probs[:, :, None])
    vocab_size = log_probs_BxKxV.shape[-1]
    # 2K candidates: even if K of them end here, K can stay live.
    top_log_probs, flat_indices = jax.lax.top_k(
        log_probs_BxKxV.reshape(batch_size, -1), 2 * beam_size)
    parent_beams = flat_indices // vocab_size
    new_tokens = flat_indices % vocab_size
    candidates = take_beams(state.live_ids, parent_beams)
    candidates = jax.lax.dynamic_update_slice_in_dim(
        candidates, new_tokens[:, :, None].astype(jnp.int32), state.step + 1,
        axis=2)
    ended = new_tokens == eos_id

    # Live set: the K best candidates that did not end, with their caches.
    live_log_probs = top_log_probs + ended * NEG_INF
    live_log_probs, keep = jax.lax.top_k(live_log_probs, beam_size)
    live_ids = take_beams(candidates, keep)
    live_cache = take_beams(cache, take_beams(parent_beams, keep))

    # Finished set: the K best of the old finished and the candidates that
    # ended now (the others are ruled out by NEG_INF).
    scores = top_log_probs / length_penalty(state.step + 1, alpha)
    scores = scores + (~ended) * NEG_INF
    pool_scores = jnp.concatenate([state.finished_scores, scores], axis=1)
    pool_ids = jnp.concatenate([state.finished_ids, candidates], axis=1)
    pool_finished = jnp.concatenate([state.finished, ended], axis=1)
    finished_scores, best = jax.lax.top_k(pool_scores, beam_size)
    return BeamState(
        step=state.step + 1, live_log_probs=live_log_probs, live_ids=live_ids,
        finished_scores=finished_scores, finished_ids=take_beams(pool_ids, best),
        finished=take_beams(pool_finished, best), cache=live_cache,
    )

  state = jax.lax.while_loop(
      keep_going, advance,
      _initial_state(batch_size, beam_size, max_decode_len, cache))
  any_finished = state.finished.any(axis=1)
  ids = jnp.where(any_finished[:, None, None], state.finished_ids, state.live_ids)
  scores = jnp.where(any_finished[:, None], state.finished_scores,
                     state.live_log_probs)
  return ids, scores


def init_cache(model: model_lib.Transformer, batch_size: int,
               max_decode_len: int) -> Any:
  """An empty decoding cache for ``batch_size`` examples (all zeros).

  Its shapes come from `jax.eval_shape` of the decoding model's ``init``, so
  nothing is computed and no parameters are made.
  """
  decoder = model_lib.Transformer(model.config, decode=True)
  ids = jnp.ones((batch_size, max_decode_len), jnp.int32)
  shapes = jax.eval_shape(
      lambda: decoder.init(jax.random.key(0), ids, ids, train=False))["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def translate(
    model: model_lib.Transformer,
    params: Any,
    inputs: jax.Array,
    *,
    beam_size: int = BEAM_SIZE,
    alpha: float = LENGTH_PENALTY_ALPHA,
    eos_id: int = EOS_ID,
    max_decode_len: int = MAX_DECODE_LENGTH,
) -> jax.Array:
  """Best beam-search translation ``(B, max_decode_len - 1)`` of ``inputs``.

  The encoder runs once; the decoder runs one token per step on the cached
  keys and values. Tokens after EOS are 0. Jit it with the keyword arguments
  static (or use `make_translate_fn`).

  Args:
    model: the (training or evaluation) `model.Transformer`; its decoding
      twin is built from ``model.config``.
    params: its parameters.
    inputs: ``(B, L)`` source ids, 0 = padding.
    beam_size: hypotheses per example.
    alpha: length-penalty exponent.
    eos_id: end-of-sentence id.
    max_decode_len: decoded length plus one (AlgoPerf: 256).
  """
  decoder = model_lib.Transformer(model.config, decode=True)
  encoded = model.apply({"params": params}, inputs, method=model_lib.Transformer.encode)
  encoded = merge_beams(repeat_beams(encoded, beam_size))
  source = merge_beams(repeat_beams(inputs, beam_size))

  def step_fn(ids, cache):
    logits, variables = decoder.apply(
        {"params": params, "cache": cache}, encoded, source, ids,
        mutable=["cache"], method=model_lib.Transformer.decode_logits)
    return logits[:, 0], variables["cache"]

  ids, _ = beam_search(
      inputs.shape[0], init_cache(model, inputs.shape[0], max_decode_len), step_fn,
      beam_size=beam_size, alpha=alpha, eos_id=eos_id,
      max_decode_len=max_decode_len)
  return ids[:, 0, 1:]


def make_translate_fn(
    model: model_lib.Transformer,
    *,
    beam_size: int = BEAM_SIZE,
    max_decode_len: int = MAX_DECODE_LENGTH,
) -> Callable[[Any, jax.Array], jax.Array]:
  """A jitted ``(params, inputs) -> ids`` running `translate`."""
  return jax.jit(
      lambda params, inputs: translate(
          model, params, inputs, beam_size=beam_size,
          max_decode_len=max_decode_len))
