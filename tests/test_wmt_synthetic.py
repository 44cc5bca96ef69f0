"""Tests of the generated language pair (workloads/wmt/synthetic.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from workloads.wmt import input_pipeline, synthetic

TINY = synthetic.Config(num_train=400, num_validation=60, num_test=40, vocab_size=200)


@pytest.fixture(scope="module")
def splits():
  return synthetic.generate_splits(synthetic.Config(num_train=3000, num_validation=500,
                                                    num_test=10))


def test_generation_is_deterministic_in_the_seeds():
  first = synthetic.generate_splits(TINY)
  assert first == synthetic.generate_splits(TINY)
  assert [len(first[s]) for s in ("train", "validation", "test")] == [400, 60, 40]
  reseeded = synthetic.generate_splits(dataclasses.replace(TINY, seed=1))
  assert reseeded["train"] != first["train"]
  assert synthetic.make_lexicon(0) == synthetic.make_lexicon(0)
  assert synthetic.make_lexicon(0) != synthetic.make_lexicon(1)


def _clauses(text: str) -> list[list[str]]:
  return [clause.split() for clause in text.rstrip(".").split(",")]


def test_sie_is_she_or_they_by_the_verb_ending(splits):
  counts = {"She": 0, "They": 0}
  for source, target in splits["validation"]:
    words = source.split()
    if words[0] == "Sie":
      expected = "They" if words[1].endswith("en") else "She"
      assert target.split()[0] == expected, (source, target)
      counts[expected] += 1
  assert min(counts.values()) >= 5


def test_negation_and_verb_agreement(splits):
  negated = 0
  for source, target in splits["validation"]:
    for source_clause, target_clause in zip(_clauses(source), _clauses(target),
                                            strict=True):
      assert ("nicht" in source_clause) == ("not" in target_clause)
      if "not" in target_clause:
        negated += 1
        auxiliary = target_clause[target_clause.index("not") - 1]
        subject = target_clause[1] if target_clause[0] in (
            "because", "that", "if") else target_clause[0]
        if subject.lower() in ("i", "you", "we", "they"):
          assert auxiliary == "do"
        elif subject.lower() in ("he", "she", "it"):
          assert auxiliary == "does"
  assert negated >= 20


def test_a_and_an_follow_the_next_word(splits):
  uses = 0
  for _, target in splits["validation"]:
    words = target.lower().rstrip(".").replace(",", "").split()
    for article, following in zip(words[:-1], words[1:], strict=True):
      if article in ("a", "an"):
        uses += 1
        assert (article == "an") == (following[0] in "aeiou")
  assert uses >= 100


def _noun_dictionary_holds(lexicon, source: str, target: str) -> bool:
  """Every singular source noun's translation appears in the target."""
  source_words, target_words = set(source.rstrip(".").split()), target.rstrip(".").split()
  target_words = {w.strip(",").lower() for w in target_words}
  return all(target_noun in target_words
             for source_noun, target_noun, _, _ in lexicon.nouns
             if source_noun.capitalize() in source_words)


def test_words_are_substituted_and_only_training_pairs_are_noisy(splits):
  lexicon = synthetic.make_lexicon(0)
  assert all(_noun_dictionary_holds(lexicon, s, t) for s, t in splits["validation"])
  broken = sum(not _noun_dictionary_holds(lexicon, s, t) for s, t in splits["train"])
  assert 0 < broken < 0.05 * len(splits["train"])


def test_ambiguous_adjectives_use_both_synonyms(splits):
  lexicon = synthetic.make_lexicon(0)
  words = {w.strip(",.").lower() for _, t in splits["train"] for w in t.split()}
  ambiguous = [synonyms for _, synonyms in lexicon.adjectives if len(synonyms) == 2]
  assert len(ambiguous) == 5
  assert all(set(synonyms) <= words for synonyms in ambiguous)


def test_prepare_writes_the_real_layout_once_per_config(tmp_path):
  assert synthetic.prepare(tmp_path, TINY)
  input_pipeline.check_data(tmp_path)
  stamp = json.loads((tmp_path / synthetic.CONFIG_FILENAME).read_text())
  assert stamp == dataclasses.asdict(TINY)
  generated = synthetic.generate_splits(TINY)
  assert list(input_pipeline.read_pairs(tmp_path, "test")) == generated["test"]
  assert list(input_pipeline.read_pairs(tmp_path, "train")) == generated["train"]
  tokenizer = input_pipeline.load_tokenizer(tmp_path)
  assert tokenizer.get_piece_size() == 200
  assert not synthetic.prepare(tmp_path, TINY)
  changed = dataclasses.replace(TINY, num_test=30)
  assert synthetic.prepare(tmp_path, changed)
  assert len(list(input_pipeline.read_pairs(tmp_path, "test"))) == 30
