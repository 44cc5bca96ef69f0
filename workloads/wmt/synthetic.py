"""A generated German-like -> English-like language pair (the small WMT task).

Words are made up from syllables (a fixed lexicon per ``lexicon_seed``);
sentences follow a deterministic grammar whose translation needs what real
translation needs, at a small scale:

* word substitution: nouns, adjectives, verbs, adverbs, prepositions;
* agreement: source articles and adjective endings follow gender, number
  and case (nominative, accusative, dative); verbs follow the subject's
  person and number in the source, third-person singular ``-s`` in the
  target; target ``a``/``an`` follows the next word's first letter;
* reordering: source verb-second main clauses with the adverb after the
  verb become subject-verb-object with the adverb last; source verb-final
  subordinate clauses become subject-verb-object; source ``nicht`` after
  the object becomes ``do not`` / ``does not`` before the verb;
* ambiguity resolved by context: ``sie`` is "she" or "they" by the verb's
  ending; two verbs translate differently for food objects;
* irreducible ambiguity and noise: some adjectives have two target synonyms
  (70/30), and a fraction of training pairs has one target word replaced at
  random (evaluation pairs are clean).

`prepare` writes the pairs in the on-disk format of the real data (TFDS
``wmt17_translate/de-en:1.0.0`` train, ``wmt14_translate/de-en:1.0.0``
validation/test) and trains the tokenizer with the real code, so the small
workload reads them through `input_pipeline` exactly as the full one reads
WMT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence

import numpy as np

from workloads.wmt import input_pipeline

CONFIG_FILENAME = "synthetic_config.json"


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes, noise and seeds of the generated data (defaults: the small task)."""

  num_train: int = 40_000
  num_validation: int = 1_000
  num_test: int = 1_000
  noise: float = 0.05  # training pairs with one target word replaced
  vocab_size: int = 512
  tokenizer_max_chars: int = 2 * 10**6
  seed: int = 0
  lexicon_seed: int = 0


_SOURCE_SYLLABLES = (
    ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "w", "z",
     "sch", "st", "kr", "br", "gr", "pf"),
    ("a", "e", "i", "o", "u", "ei", "au", "ie", "ä", "ö", "ü"),
    ("", "", "n", "r", "l", "t", "ch", "ng", "s", "k"),
)
_TARGET_SYLLABLES = (
    ("", "b", "c", "d", "f", "g", "h", "j", "l", "m", "n", "p", "r", "s", "t",
     "v", "w", "th", "sh", "ch", "br", "cl", "st"),
    ("a", "e", "i", "o", "u", "ee", "oo", "ai", "ou"),
    ("", "", "n", "r", "l", "t", "d", "ck", "ng", "m", "p"),
)
# Source function words: article[definite][case][gender or 3 = plural].
_ARTICLES = {
    True: {"nom": ("der", "die", "das", "die"), "acc": ("den", "die", "das", "die"),
           "dat": ("dem", "der", "dem", "den")},
    False: {"nom": ("ein", "eine", "ein", ""), "acc": ("einen", "eine", "ein", ""),
            "dat": ("einem", "einer", "einem", "")},
}
_PLURAL_SUFFIX = ("e", "en", "er")  # by gender
_PRONOUNS = (  # (source, target, person, plural)
    ("ich", "I", 1, False), ("du", "you", 2, False), ("er", "he", 3, False),
    ("sie", "she", 3, False), ("es", "it", 3, False), ("wir", "we", 1, True),
    ("ihr", "you", 2, True), ("sie", "they", 3, True),
)
_VERB_ENDINGS = {(1, False): "e", (2, False): "st", (3, False): "t",
                 (1, True): "en", (2, True): "t", (3, True): "en"}
_CONJUNCTIONS = (("weil", "because"), ("dass", "that"), ("wenn", "if"))
ANIMATE, THING, FOOD = range(3)


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """The made-up vocabulary; parallel tuples of source and target words."""

  nouns: tuple[tuple[str, str, int, int], ...]  # (source, target, gender, class)
  adjectives: tuple[tuple[str, tuple[str, ...]], ...]  # (source, synonyms)
  verbs: tuple[tuple[str, str, str | None, int | None], ...]
  # (source stem, target, target for food objects, required object class)
  adverbs: tuple[tuple[str, str], ...]
  prepositions: tuple[tuple[str, str], ...]


def _words(rng: np.random.Generator, syllables, count: int, taken: set[str]) -> list[str]:
  words = []
  while len(words) < count:
    word = "".join(
        rng.choice(part) for _ in range(int(rng.integers(1, 3))) for part in syllables)
    if len(word) >= 3 and word not in taken:
      taken.add(word)
      words.append(word)
  return words


def make_lexicon(seed: int = 0) -> Lexicon:
  """60 nouns, 20 adjectives (5 with two synonyms), 20 verbs, 8 adverbs, 6 prepositions."""
  rng = np.random.default_rng(seed)
  reserved = {w for table in _ARTICLES.values() for forms in table.values() for w in forms}
  reserved |= {p[0] for p in _PRONOUNS} | {c[0] for c in _CONJUNCTIONS} | {"nicht"}
  source_taken, target_taken = set(reserved), {"the", "a", "an", "do", "does", "not"}
  source = lambda n: _words(rng, _SOURCE_SYLLABLES, n, source_taken)  # noqa: E731
  target = lambda n: _words(rng, _TARGET_SYLLABLES, n, target_taken)  # noqa: E731
  genders = rng.integers(0, 3, 60)
  classes = np.repeat([ANIMATE, THING, FOOD], 20)
  nouns = tuple(zip(source(60), target(60), genders.tolist(), classes.tolist(),
                    strict=True))
  adjective_targets = target(25)
  adjectives = tuple(
      (word, (adjective_targets[i], adjective_targets[20 + i]) if i < 5
       else (adjective_targets[i],))
      for i, word in enumerate(source(20)))
  verb_targets = target(22)
  requirements = [None] * 8 + [ANIMATE] * 4 + [THING] * 4 + [None] * 4
  verbs = tuple(
      (stem, verb_targets[i], verb_targets[20 + i - 18] if i >= 18 else None,
       requirements[i])
      for i, stem in enumerate(source(20)))
  adverbs = tuple(zip(source(8), target(8), strict=True))
  prepositions = tuple(zip(source(6), target(6), strict=True))
  return Lexicon(nouns, adjectives, verbs, adverbs, prepositions)


class _Grammar:
  """Draws one sentence pair at a time from a lexicon."""

  def __init__(self, lexicon: Lexicon, rng: np.random.Generator):
    self.lexicon = lexicon
    self.rng = rng
    classes = np.array([noun[3] for noun in lexicon.nouns])
    self.nouns_of_class = {c: np.flatnonzero(classes == c) for c in range(3)}

  def chance(self, p: float) -> bool:
    return bool(self.rng.random() < p)

  def pick(self, n: int) -> int:
    return int(self.rng.integers(n))

  def noun_phrase(self, case: str, noun_class: int | None = None):
    """(source words, target words, plural) of an article-(adjective)-noun phrase."""
    lexicon = self.lexicon
    pool = (np.arange(len(lexicon.nouns)) if noun_class is None
            else self.nouns_of_class[noun_class])
    source_noun, target_noun, gender, _ = lexicon.nouns[int(self.rng.choice(pool))]
    plural, definite = self.chance(0.3), self.chance(0.6)
    slot = 3 if plural else gender
    article = _ARTICLES[definite][case][slot]
    source_noun = source_noun.capitalize()
    if plural:
      source_noun += _PLURAL_SUFFIX[gender]
      if case == "dat" and not source_noun.endswith("n"):
        source_noun += "n"
      target_noun += "s"
    source_words = [article] if article else []
    target_words = ["the"] if definite else ([] if plural else ["a"])
    if self.chance(0.4):
      source_adjective, synonyms = lexicon.adjectives[self.pick(len(lexicon.adjectives))]
      if definite:
        ending = "e" if case == "nom" and not plural else "en"
      elif plural:
        ending = "e"
      else:
        ending = {("nom", 0): "er", ("nom", 2): "es", ("acc", 2): "es"}.get(
            (case, gender), "e" if gender == 1 and case != "dat" else "en")
      source_words.append(source_adjective + ending)
      target_words.append(synonyms[0] if len(synonyms) == 1 or self.chance(0.7)
                          else synonyms[1])
    source_words.append(source_noun)
    target_words.append(target_noun)
    return source_words, target_words, plural

  def clause(self, subordinate: bool):
    """(source words, target words) of one clause."""
    lexicon = self.lexicon
    if self.chance(0.35):
      source_subject, target_subject, person, plural = _PRONOUNS[self.pick(8)]
      source_subject, target_subject = [source_subject], [target_subject]
    else:
      source_subject, target_subject, plural = self.noun_phrase("nom")
      person = 3
    stem, verb, food_verb, requirement = lexicon.verbs[self.pick(len(lexicon.verbs))]
    object_class = requirement if requirement is not None else self.pick(3)
    source_object, target_object, _ = self.noun_phrase("acc", object_class)
    if food_verb is not None and object_class == FOOD:
      verb = food_verb
    source_verb = stem + _VERB_ENDINGS[person, plural]
    negated = self.chance(0.2)
    third_singular = person == 3 and not plural
    target_verb = ([("does" if third_singular else "do"), "not", verb] if negated
                   else [verb + "s" if third_singular else verb])
    not_word = ["nicht"] if negated else []
    if subordinate:
      conjunction, target_conjunction = _CONJUNCTIONS[self.pick(3)]
      return ([conjunction, *source_subject, *source_object, *not_word, source_verb],
              [target_conjunction, *target_subject, *target_verb, *target_object])
    source_adverb, target_adverb = [], []
    if self.chance(0.3):
      source_word, target_word = lexicon.adverbs[self.pick(len(lexicon.adverbs))]
      source_adverb, target_adverb = [source_word], [target_word]
    source_place, target_place = [], []
    if self.chance(0.3):
      preposition, target_preposition = lexicon.prepositions[
          self.pick(len(lexicon.prepositions))]
      words, target_words, _ = self.noun_phrase("dat")
      source_place, target_place = [preposition, *words], [target_preposition,
                                                           *target_words]
    return ([*source_subject, source_verb, *source_adverb, *source_object, *not_word,
             *source_place],
            [*target_subject, *target_verb, *target_object, *target_place,
             *target_adverb])

  def pair(self) -> tuple[list[str], list[str]]:
    source, target = self.clause(subordinate=False)
    if self.chance(0.3):
      sub_source, sub_target = self.clause(subordinate=True)
      source, target = [*source, ",", *sub_source], [*target, ",", *sub_target]
    return source, target


def _sentence(words: Sequence[str]) -> str:
  text = " ".join(words).replace(" ,", ",") + "."
  return text[0].upper() + text[1:]


def _articles_before_vowels(words: list[str]) -> list[str]:
  return [("an" if w == "a" and nxt[0] in "aeiou" else w)
          for w, nxt in zip(words, [*words[1:], "."], strict=True)]


def generate(num_pairs: int, lexicon: Lexicon, rng: np.random.Generator,
             noise: float = 0.0) -> list[tuple[str, str]]:
  """``num_pairs`` (source, target) sentences; ``noise`` of them corrupted."""
  grammar = _Grammar(lexicon, rng)
  target_content = [noun[1] for noun in lexicon.nouns] + [v[1] for v in lexicon.verbs]
  pairs = []
  for _ in range(num_pairs):
    source, target = grammar.pair()
    if noise and grammar.chance(noise):
      target = list(target)
      target[grammar.pick(len(target))] = target_content[grammar.pick(len(target_content))]
    pairs.append((_sentence(source), _sentence(_articles_before_vowels(target))))
  return pairs


def generate_splits(config: Config = Config()) -> dict[str, list[tuple[str, str]]]:
  """Train (with noise), validation and test pairs, deterministic in the seeds."""
  lexicon = make_lexicon(config.lexicon_seed)
  rng = np.random.default_rng(config.seed)
  return {
      "train": generate(config.num_train, lexicon, rng, config.noise),
      "validation": generate(config.num_validation, lexicon, rng),
      "test": generate(config.num_test, lexicon, rng),
  }


def write_tfds(data_dir: str | os.PathLike, name: str,
               splits: Mapping[str, Sequence[tuple[str, str]]]) -> None:
  """Writes pairs as a prepared TFDS translation dataset ``name`` (one shard a split).

  The files are what ``download_and_prepare`` of the registered builder
  writes (TFRecords of its serialized features plus ``dataset_info.json``),
  so `tfds.builder(name, data_dir=data_dir)` reads them as prepared.
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=os.fspath(data_dir))
  shutil.rmtree(builder.data_dir, ignore_errors=True)
  os.makedirs(builder.data_dir)
  info = builder.info
  source, target = info.supervised_keys
  split_infos = []
  for split, pairs in splits.items():
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name=builder.name, split=split, filetype_suffix="tfrecord")
    num_bytes = 0
    with tf.io.TFRecordWriter(os.fspath(template.sharded_filepath(
        shard_index=0, num_shards=1))) as writer:
      for source_text, target_text in pairs:
        record = info.features.serialize_example(
            {source: source_text, target: target_text})
        num_bytes += len(record)
        writer.write(record)
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[len(pairs)], num_bytes=num_bytes,
        filename_template=template))
  info.set_splits(tfds.core.SplitDict(split_infos))
  info.write_to_directory(builder.data_dir)


def prepare(data_dir: str | os.PathLike, config: Config = Config()) -> bool:
  """Writes the generated task into ``data_dir`` in the real WMT layout.

  Skipped (returns False) when ``data_dir`` already holds data made from the
  same config; otherwise it is (re)written and the tokenizer trained with
  `input_pipeline.train_tokenizer` (``config.vocab_size`` pieces).
  """
  data_dir = os.fspath(data_dir)
  stamp = os.path.join(data_dir, CONFIG_FILENAME)
  wanted = dataclasses.asdict(config)
  if os.path.isfile(stamp):
    with open(stamp) as f:
      if json.load(f) == wanted:
        return False
  os.makedirs(data_dir, exist_ok=True)
  splits = generate_splits(config)
  write_tfds(data_dir, input_pipeline.TRAIN_DATASET, {"train": splits["train"]})
  write_tfds(data_dir, input_pipeline.EVAL_DATASET,
             {"validation": splits["validation"], "test": splits["test"]})
  input_pipeline.train_tokenizer(data_dir, vocab_size=config.vocab_size,
                                 max_chars=config.tokenizer_max_chars)
  with open(stamp + ".partial", "w") as f:
    json.dump(wanted, f, indent=1)
  os.replace(stamp + ".partial", stamp)
  return True
