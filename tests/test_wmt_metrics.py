"""Tests of WMT's BLEU: hand-computed cases and sacrebleu's command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from workloads.wmt import metrics

# Translations with what the 13a tokenizer treats specially: punctuation,
# quotes, entities, numbers with separators, dashes, umlauts, case.
HYPOTHESES = [
    "The cat sat on the mat.",
    "He said: \"It's 3,5 km away\" - and left.",
    "Prices rose by 2.5% in 2014 & fell in 2015.",
    "Die Katze ist nicht hier, sagte sie.",
    "We don't know why the U.S. economy slowed.",
    "A completely different sentence",
    "the meeting was postponed until next week",
    "Über 100 Menschen kamen zum Fest (trotz Regen).",
    "",
    "Short.",
]
REFERENCES = [
    "The cat sat on a mat.",
    "\"It is 3,5 km away\", he said, and left.",
    "Prices rose by 2.5 % in 2014 and fell in 2015.",
    "Die Katze ist nicht hier, sagte er.",
    "We do not know why the U.S. economy slowed down.",
    "Nothing in common here at all",
    "The meeting was postponed until next week.",
    "Über 100 Leute kamen zum Fest (trotz des Regens).",
    "An empty hypothesis.",
    "A short reference sentence.",
]


def _cli_bleu(tmp_path, hypotheses, references) -> float:
  hypothesis_file = tmp_path / "hyp.txt"
  reference_file = tmp_path / "ref.txt"
  hypothesis_file.write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
  reference_file.write_text("\n".join(references) + "\n", encoding="utf-8")
  out = subprocess.run(
      [sys.executable, "-m", "sacrebleu", str(reference_file), "-i",
       str(hypothesis_file), "-m", "bleu", "-b", "-w", "6"],
      capture_output=True, text=True, check=True)
  return float(out.stdout.strip())


def test_agrees_with_the_sacrebleu_command_line(tmp_path):
  ours = metrics.corpus_bleu(HYPOTHESES, REFERENCES)
  assert 10 < ours < 90
  assert ours == pytest.approx(_cli_bleu(tmp_path, HYPOTHESES, REFERENCES), abs=1e-5)
  subset = slice(0, 4)
  assert metrics.corpus_bleu(HYPOTHESES[subset], REFERENCES[subset]) == pytest.approx(
      _cli_bleu(tmp_path, HYPOTHESES[subset], REFERENCES[subset]), abs=1e-5)


def test_hand_computed_scores():
  assert metrics.corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100)
  # Precisions 5/6, 3/5, 2/4, 1/3, equal lengths: (1/12) ** (1/4).
  assert metrics.corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == (
      pytest.approx(100 * (1 / 12) ** 0.25))
  # No 4-gram matches: exponential smoothing counts the first zero as
  # 1 / (2 * total): precisions 3/4, 2/3, 1/2, 1/2.
  assert metrics.corpus_bleu(["the cat sat down"], ["the cat sat up"]) == (
      pytest.approx(100 * (1 / 8) ** 0.25))
  # All n-grams match but the hypothesis is short: brevity penalty e^(1-6/4).
  assert metrics.corpus_bleu(["the cat sat on"], ["the cat sat on the mat"]) == (
      pytest.approx(100 * np.exp(-0.5)))
  # Fewer than four tokens in the whole corpus: no 4-grams, BLEU 0.
  assert metrics.corpus_bleu(["the cat"], ["the cat"]) == 0.0


def test_corpus_statistics_are_pooled_not_averaged():
  pooled = metrics.corpus_bleu(["the cat sat on the mat", "the cat sat down"],
                               ["the cat sat on a mat", "the cat sat up"])
  # Pooled precisions (5+3)/(6+4), (3+2)/(5+3), (2+1)/(4+2), (1+0)/(3+1).
  expected = 100 * (0.8 * 5 / 8 * 0.5 * 0.25) ** 0.25
  assert pooled == pytest.approx(expected)


def test_tokenizer_is_13a_and_case_sensitive():
  assert metrics.corpus_bleu(["Hello, world! It's 5.5 km."],
                             ["Hello , world ! It's 5.5 km ."]) == pytest.approx(100)
  assert metrics.corpus_bleu(["The Cat Sat On The Mat"],
                             ["the cat sat on the mat"]) == 0.0


class _Recorder:
  """Stands in for SentencePiece: 'decodes' ids to their text."""

  def decode(self, ids):
    return " ".join(f"w{i}" for i in ids if i != metrics.EOS_ID)


def test_ids_are_cut_at_the_first_eos_as_in_algoperf():
  np.testing.assert_array_equal(metrics.cut_at_eos(np.array([5, 6, 2, 7, 2, 0])),
                                [5, 6, 2])
  # No EOS: AlgoPerf's argmax is 0, so only the first token is kept.
  np.testing.assert_array_equal(metrics.cut_at_eos(np.array([5, 6, 7])), [5])
  assert metrics.ids_to_text(np.array([9, 8, 2, 0, 0]), _Recorder()) == "w9 w8"


def test_bleu_from_ids_skips_padding_examples():
  targets = np.array([[3, 4, 5, 6, 7, 2, 0], [3, 4, 5, 6, 7, 2, 0],
                      [9, 9, 9, 9, 2, 0, 0]])
  predicted = np.array([[3, 4, 5, 6, 7, 2, 0], [3, 4, 5, 6, 7, 2, 0],
                        [1, 1, 1, 1, 1, 1, 1]])
  assert metrics.bleu_from_ids(predicted, targets, _Recorder(),
                               valid=np.array([1, 1, 0])) == pytest.approx(100)
  assert metrics.bleu_from_ids(predicted, targets, _Recorder()) < 100
  with pytest.raises(ValueError, match="hypotheses"):
    metrics.corpus_bleu(["a"], ["a", "b"])
