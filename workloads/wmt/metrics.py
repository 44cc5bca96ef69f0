"""BLEU as AlgoPerf reports it for WMT, computed by sacrebleu.

AlgoPerf scores the beam-search translations of a split against the target
ids decoded back to text through the same SentencePiece model, as corpus
BLEU with the 13a tokenizer and exponential smoothing (sacrebleu's
defaults; AlgoPerf re-implements sacrebleu 1.3.1, which computes the same).
Padding examples are left out before the corpus is scored, since BLEU is not
a sum over sentences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from workloads.wmt.decode import EOS_ID


class Detokenizer(Protocol):
  """What `ids_to_text` needs: ``sentencepiece.SentencePieceProcessor``."""

  def decode(self, ids: list[int]) -> str: ...


def cut_at_eos(ids: np.ndarray, eos_id: int = EOS_ID) -> np.ndarray:
  """The ids up to and including the first EOS, as AlgoPerf cuts them.

  AlgoPerf keeps ``ids[:argmax(ids == eos) + 1]``, so a sequence without
  EOS (a translation that ran to the length limit) keeps only its first
  token; this is reproduced so that BLEU is the number AlgoPerf reports.
  """
  ids = np.asarray(ids)
  return ids[: int(np.argmax(ids == eos_id)) + 1].astype(np.int32)


def ids_to_text(ids: np.ndarray, tokenizer: Detokenizer, eos_id: int = EOS_ID) -> str:
  """Detokenized text of one id sequence, cut at EOS (`cut_at_eos`)."""
  return tokenizer.decode(cut_at_eos(ids, eos_id).tolist())


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU (0-100) of one reference per hypothesis, by sacrebleu.

  Tokenizer 13a, exponential smoothing, case-sensitive: what AlgoPerf uses
  and what ``sacrebleu REF -i HYP -m bleu`` prints.
  """
  import sacrebleu  # Lazy: only evaluation needs it.

  if len(hypotheses) != len(references):
    raise ValueError(
        f"{len(hypotheses)} hypotheses but {len(references)} references")
  score = sacrebleu.corpus_bleu(
      list(hypotheses), [list(references)], smooth_method="exp", tokenize="13a",
      lowercase=False, use_effective_order=False)
  return float(score.score)


def bleu_from_ids(
    predicted_ids: np.ndarray | Iterable[np.ndarray],
    target_ids: np.ndarray | Iterable[np.ndarray],
    tokenizer: Detokenizer,
    valid: np.ndarray | None = None,
) -> float:
  """Corpus BLEU of predicted against target id rows, as AlgoPerf scores WMT.

  Args:
    predicted_ids: ``(n, T)`` beam-search outputs (`decode.translate`).
    target_ids: ``(n, L)`` padded target ids of the same examples.
    tokenizer: the SentencePiece model both were tokenized with.
    valid: ``(n,)``; rows where it is 0 (padding examples) are left out.
  """
  predicted = list(predicted_ids)
  targets = list(target_ids)
  keep = np.ones(len(predicted), bool) if valid is None else np.asarray(valid) > 0
  hypotheses = [ids_to_text(p, tokenizer) for p, k in zip(predicted, keep, strict=True) if k]
  references = [ids_to_text(t, tokenizer) for t, k in zip(targets, keep, strict=True) if k]
  return corpus_bleu(hypotheses, references)
