"""Tests of the beam search (workloads/wmt/decode.py)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_wmt_model import TINY, golden_batch, golden_params
from workloads.wmt import decode, model


def _markov(table: np.ndarray):
  """A step function whose logits depend on (example, step, previous token).

  ``table`` is ``(steps, V, V)``, the same for every example, or
  ``(B, steps, V, V)``. The step counter and example index live in the cache
  with a batch axis, so the search copies and reorders them like a real
  decoder cache; the scalar entry checks that shared scalars pass through.
  """
  table = jnp.asarray(table, jnp.float32)

  def step_fn(ids, cache):
    step, row = cache["step"][:, 0], cache["row"][:, 0]
    logits = table[step, ids[:, 0]] if table.ndim == 3 else table[row, step, ids[:, 0]]
    return logits, {**cache, "step": cache["step"] + 1,
                    "shared": cache["shared"] + 1}

  return step_fn


def _search(table, batch_size, **kwargs):
  cache = {"step": jnp.zeros((batch_size, 1), jnp.int32), "shared": jnp.array(0),
           "row": jnp.arange(batch_size)[:, None]}
  return jax.jit(lambda c: decode.beam_search(
      batch_size, c, _markov(table), **kwargs))(cache)


def _all_finished(table: np.ndarray, max_tokens: int, eos: int = decode.EOS_ID):
  """Every sequence ending at its first EOS within ``max_tokens``, scored."""
  log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(table, jnp.float32)))
  tokens = [t for t in range(table.shape[-1]) if t != eos]
  results = []
  for length in range(1, max_tokens + 1):
    for prefix in itertools.product(tokens, repeat=length - 1):
      sequence = (*prefix, eos)
      previous, total = 0, 0.0
      for step, token in enumerate(sequence):
        total += log_probs[step, previous, token]
        previous = token
      results.append((total / float(decode.length_penalty(length, 0.6)), sequence))
  return sorted(results, key=lambda r: -r[0])


def test_length_penalty():
  assert float(decode.length_penalty(1, 0.6)) == pytest.approx(1.0)
  assert float(decode.length_penalty(7, 0.6)) == pytest.approx(2**0.6)
  assert float(decode.length_penalty(7, 0.0)) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_ranks_every_finished_sequence_exactly(seed):
  # Three tokens (EOS = 2) and four decoding steps: at most 8 live prefixes
  # and 15 finished sequences, so a beam of 16 keeps everything and must
  # return all finished sequences, ranked, with their scores.
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(5, 3, 3)) * 1.5
  ids, scores = _search(table, 2, beam_size=16, max_decode_len=5)
  expected = _all_finished(table, 4)
  assert len(expected) == 15
  for row in range(2):
    for rank, (score, sequence) in enumerate(expected):
      found = np.asarray(ids[row, rank])
      assert found[0] == 0
      assert tuple(found[1 : len(sequence) + 1]) == sequence
      assert np.all(found[len(sequence) + 1 :] == 0)
      assert float(scores[row, rank]) == pytest.approx(score, rel=1e-5)


def test_matches_algoperf_golden_values():
  # Computed with AlgoPerf's wmt_jax decode.beam_search (commit 2c90454f) on
  # the same table (beam 3, 7 positions); there the best beam is the last.
  table = np.random.default_rng(7).normal(size=(3, 8, 6, 6)) * 2.0
  table[..., 2] -= 0.5
  ids, scores = _search(table, 3, beam_size=3, max_decode_len=7)
  np.testing.assert_array_equal(ids[:, 0], GOLDEN_BEST_IDS)
  np.testing.assert_allclose(scores, GOLDEN_SCORES, rtol=1e-5)


GOLDEN_BEST_IDS = [[0, 1, 2, 0, 0, 0, 0],
                   [0, 3, 0, 1, 1, 4, 2],
                   [0, 5, 2, 0, 0, 0, 0]]
GOLDEN_SCORES = [[-1.2698712, -2.4039564, -3.1854935],
                 [-1.5278721, -1.6760792, -2.2147515],
                 [-0.988246, -1.6750255, -1.7221174]]


def test_certain_eos_ends_at_once_and_live_beams_are_returned_without_one():
  table = np.zeros((6, 4, 4))
  table[..., 2] = 50.0  # EOS is (almost) certain at every step
  ids, scores = _search(table, 2, beam_size=2, max_decode_len=6)
  np.testing.assert_array_equal(ids[:, 0], [[0, 2, 0, 0, 0, 0]] * 2)
  assert np.all(np.asarray(scores[:, 0]) > -1e-6)
  table[..., 2] = -1e9  # EOS never: the live hypotheses come back
  ids, scores = _search(table, 2, beam_size=2, max_decode_len=6)
  assert not np.any(np.asarray(ids) == 2)
  assert np.all(np.asarray(ids[:, :, 1:]) != 2)
  np.testing.assert_allclose(scores[:, 0], 5 * np.log(1 / 3), rtol=1e-5)


def test_translate_is_per_example_and_stops_at_eos():
  params = golden_params(TINY)
  # Shift the final LayerNorm towards EOS's embedding so that some
  # translations end before the limit.
  eos_direction = params["shared_embedding"]["embedding"][decode.EOS_ID]
  params["decoder"]["encoderdecoder_layernorm"]["bias"] += (
      eos_direction / np.linalg.norm(eos_direction))
  inputs = golden_batch(TINY, 4, 16)["inputs"]
  translate = jax.jit(lambda p, x: decode.translate(
      model.Transformer(TINY), p, x, max_decode_len=12))
  ids = np.asarray(translate(params, inputs))
  assert ids.shape == (4, 11) and ids.dtype == np.int32
  ended = 0
  for row in ids:
    eos = np.flatnonzero(row == decode.EOS_ID)
    if eos.size:
      ended += 1
      assert np.all(row[eos[0] + 1 :] == 0)
  assert ended >= 1
  reversed_ids = np.asarray(translate(params, inputs[::-1]))
  np.testing.assert_array_equal(reversed_ids, ids[::-1])


def test_init_cache_is_empty_and_shaped_for_the_batch():
  cache = decode.init_cache(model.Transformer(TINY), 3, 10)
  block = cache["decoder"]["encoderdecoderblock_1"]["MultiHeadDotProductAttention_0"]
  assert block["cached_key"].shape == (3, 10, 4, 8)
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(cache))
