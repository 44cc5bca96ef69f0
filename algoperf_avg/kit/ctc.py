"""Greedy CTC decoding and corpus word error rate (the LibriSpeech metric).

The loss is `kit.losses.ctc_loss` (`optax.ctc_loss`, blank 0, summed over
utterances and divided by the target tokens). Decoding takes the best label
per frame, merges repeats, drops blanks and padded frames, and packs the
result to the left, as AlgoPerf's ``greedy_decode`` does (lingvo's). The WER
is the corpus rate of AlgoPerf's ``compute_wer``: word edit distances summed
over a split, divided by the reference words summed over it (never a mean of
per-utterance rates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def greedy_decode(logits_BxTxK: jax.Array, paddings_BxT: jax.Array, blank_id: int = 0
                  ) -> tuple[jax.Array, jax.Array]:
  """Best-path labels ``(B, T)``, left-packed, and their paddings (1 = none).

  A label is kept where it differs from the previous frame's best label, is
  not the blank and its frame is not padding; a blank between two equal
  labels keeps both.
  """
  best = jnp.argmax(logits_BxTxK, axis=-1).astype(jnp.int32)
  previous = jnp.concatenate([jnp.full_like(best[:, :1], -1), best[:, :-1]], axis=1)
  keep = (best != previous) & (best != blank_id) & (paddings_BxT == 0)
  batch, time = best.shape
  position = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, time)  # time: dropped
  rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, time))
  decoded = jnp.zeros_like(best).at[rows, position].set(best, mode="drop")
  lengths = keep.sum(axis=1)
  paddings = (jnp.arange(time)[None, :] >= lengths[:, None]).astype(jnp.int32)
  return decoded, paddings


def word_edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
  """Levenshtein distance between two word lists (substitution, insertion, deletion)."""
  previous = list(range(len(reference) + 1))
  for i, word in enumerate(hypothesis, start=1):
    current = [i]
    for j, ref_word in enumerate(reference, start=1):
      current.append(min(previous[j] + 1, current[j - 1] + 1,
                         previous[j - 1] + (word != ref_word)))
    previous = current
  return previous[-1]


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
  """``(edits, reference words)`` of one utterance; words split on whitespace."""
  reference_words = reference.split()
  return word_edit_distance(hypothesis.split(), reference_words), len(reference_words)


def corpus_wer(hypotheses: Iterable[str], references: Iterable[str]) -> float:
  """Total word edits over total reference words."""
  edits = words = 0
  for hypothesis, reference in zip(hypotheses, references, strict=True):
    e, n = word_errors(hypothesis, reference)
    edits, words = edits + e, words + n
  return edits / max(words, 1)


def unpad(ids_BxN: np.ndarray, paddings_BxN: np.ndarray) -> list[list[int]]:
  """The non-padded ids of each row (padding is a suffix)."""
  lengths = np.sum(np.asarray(paddings_BxN) == 0, axis=-1)
  return [[int(t) for t in row[:n]] for row, n in zip(np.asarray(ids_BxN), lengths,
                                                       strict=True)]


def edit_counts(decoded: np.ndarray, decoded_paddings: np.ndarray,
                targets: np.ndarray, target_paddings: np.ndarray,
                detokenize: Callable[[list[int]], str]) -> tuple[int, int]:
  """``(word edits, reference words)`` summed over a batch of id sequences."""
  edits = words = 0
  hypotheses = unpad(decoded, decoded_paddings)
  references = unpad(np.asarray(targets).astype(np.int64), target_paddings)
  for hypothesis, reference in zip(hypotheses, references, strict=True):
    e, n = word_errors(detokenize(hypothesis), detokenize(reference))
    edits, words = edits + e, words + n
  return edits, words
