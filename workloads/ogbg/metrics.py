"""Mean average precision over tasks, as OGB and AlgoPerf compute it for molpcba.

Plain numpy, so evaluation needs no scikit-learn at run time; the tests check
it against `sklearn.metrics.average_precision_score`.
"""

from __future__ import annotations

import numpy as np


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
  """Average precision of binary ``labels`` ranked by ``scores``.

  Equals `sklearn.metrics.average_precision_score`: the sum over thresholds
  (one per distinct score, ties grouped) of precision times the recall
  gained, ``AP = sum_n (R_n - R_{n-1}) P_n``.

  Args:
    labels: ``(n,)`` array of 0/1.
    scores: ``(n,)`` scores; higher means more likely positive.

  Returns:
    The AP, or NaN when there is no positive label.
  """
  labels = np.asarray(labels).ravel()
  scores = np.asarray(scores).ravel()
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order].astype(np.float64)
  # The last index of each run of equal scores is where a threshold ends.
  threshold_ends = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
  true_positives = np.cumsum(labels)[threshold_ends]
  predicted_positives = threshold_ends + 1.0
  if true_positives.size == 0 or true_positives[-1] == 0:
    return float("nan")
  precision = true_positives / predicted_positives
  recall_gain = np.diff(true_positives, prepend=0.0) / true_positives[-1]
  return float(np.sum(recall_gain * precision))


def sigmoid(logits: np.ndarray) -> np.ndarray:
  """Logistic function in the dtype of ``logits`` (float32 from the model)."""
  logits = np.asarray(logits)
  with np.errstate(over="ignore"):
    return 1.0 / (1.0 + np.exp(-logits))


def mean_average_precision(
    logits: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> float:
  """Mean over tasks of the AP on each task's labelled graphs (OGB's mAP).

  A task counts only when its labelled graphs include both a positive and a
  negative; the result is the mean over counted tasks (``nanmean``), NaN when
  none counts. Scores are ``sigmoid(logits)`` in float32 as in AlgoPerf,
  whose saturation ties very confident predictions exactly as it does.

  One difference from AlgoPerf's code: it checks "has a 0 and a 1" on all
  rows, unlabelled ones included (their label reads 0), so a task whose only
  labelled graphs are positive gets AP 1 there and is skipped here, as in
  OGB's own evaluator. Real molpcba splits have no such task.

  Args:
    logits: ``(n, tasks)`` model outputs.
    labels: ``(n, tasks)`` 0/1 labels (anything where ``mask`` is 0).
    mask: ``(n, tasks)``; nonzero where the label is known (padding graphs
      and missing labels are 0).

  Returns:
    The mean average precision as a Python float.
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  mask = np.asarray(mask).astype(bool)
  if not logits.shape == labels.shape == mask.shape or logits.ndim != 2:
    raise ValueError(
        f"expected equal (n, tasks) shapes; got logits {logits.shape}, "
        f"labels {labels.shape}, mask {mask.shape}"
    )
  probs = sigmoid(logits.astype(np.float32))
  per_task = np.full(labels.shape[1], np.nan)
  for task in range(labels.shape[1]):
    labelled = mask[:, task]
    task_labels = labels[labelled, task]
    if np.any(task_labels == 1) and np.any(task_labels == 0):
      per_task[task] = average_precision(task_labels, probs[labelled, task])
  if np.isnan(per_task).all():
    return float("nan")
  return float(np.nanmean(per_task))
