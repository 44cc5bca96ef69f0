"""Greedy CTC decoding and corpus WER (kit.ctc): hand cases and jiwer."""

from __future__ import annotations

import jax.numpy as jnp
import jiwer
import numpy as np
import pytest

from algoperf_avg.kit import ctc


def _logits(best_ids, vocab=6):
  """Logits whose per-frame argmax is ``best_ids`` (B, T)."""
  return jnp.asarray(np.eye(vocab, dtype=np.float32)[np.asarray(best_ids)] * 5.0)


def test_greedy_decode_merges_repeats_drops_blanks_and_padding():
  best = [[1, 1, 0, 1, 2, 2, 0, 0, 3, 3],
          [0, 0, 4, 4, 4, 0, 5, 5, 1, 2]]
  paddings = np.zeros((2, 10), np.float32)
  paddings[1, 8:] = 1  # the last two frames of row 1 are padding
  decoded, decoded_paddings = ctc.greedy_decode(_logits(best), jnp.asarray(paddings))
  assert np.asarray(decoded).tolist() == [[1, 1, 2, 3, 0, 0, 0, 0, 0, 0],
                                          [4, 5, 0, 0, 0, 0, 0, 0, 0, 0]]
  assert np.asarray(decoded_paddings).sum(axis=1).tolist() == [6, 8]


def test_greedy_decode_all_blank_is_empty():
  decoded, paddings = ctc.greedy_decode(_logits([[0, 0, 0]]), jnp.zeros((1, 3)))
  assert np.asarray(decoded).tolist() == [[0, 0, 0]]
  assert np.asarray(paddings).tolist() == [[1, 1, 1]]


@pytest.mark.parametrize("hypothesis, reference, edits", [
    ("a b c", "a b c", 0),
    ("a x c", "a b c", 1),  # substitution
    ("a c", "a b c", 1),  # deletion
    ("a b b c", "a b c", 1),  # insertion
    ("", "a b", 2),
    ("c b a", "a b c", 2),
])
def test_word_errors_by_hand(hypothesis, reference, edits):
  assert ctc.word_errors(hypothesis, reference) == (edits, len(reference.split()))


def test_corpus_wer_is_total_edits_over_total_words_and_matches_jiwer():
  references = ["the cat sat on the mat", "hello world", "one two three four five"]
  hypotheses = ["the cat sat on mat", "hello there world", "one too three for five six"]
  # 1 deletion; 1 insertion; 2 substitutions + 1 insertion -> 5 edits / 13 words.
  assert ctc.corpus_wer(hypotheses, references) == pytest.approx(5 / 13)
  assert ctc.corpus_wer(hypotheses, references) == pytest.approx(
      jiwer.wer(references, hypotheses))
  rng = np.random.default_rng(0)
  words = ["a", "b", "c", "d"]
  references = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(50)]
  hypotheses = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(50)]
  assert ctc.corpus_wer(hypotheses, references) == pytest.approx(
      jiwer.wer(references, hypotheses))


def test_edit_counts_unpads_and_detokenizes():
  vocabulary = {1: "yes", 2: "no", 3: "up"}

  def detokenize(ids):
    return " ".join(vocabulary[i] for i in ids)

  decoded = np.array([[1, 3, 0], [2, 0, 0]])
  decoded_paddings = np.array([[0, 0, 1], [0, 1, 1]])
  targets = np.array([[1, 2, 3], [2, 2, 0]], np.float32)
  target_paddings = np.array([[0, 0, 0], [0, 0, 1]], np.float32)
  # "yes up" vs "yes no up": 1; "no" vs "no no": 1; 5 reference words.
  assert ctc.edit_counts(decoded, decoded_paddings, targets, target_paddings,
                         detokenize) == (2, 5)
