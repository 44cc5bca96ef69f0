"""Tests of the ogbg mean average precision against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from workloads.ogbg import metrics


def _algoperf_map(logits, labels, mask):
  """AlgoPerf's MeanAveragePrecision.compute, on sklearn (tasks need 0 and 1)."""
  mask = mask.astype(bool)
  probs = 1 / (1 + np.exp(-logits.astype(np.float32)))
  per_task = np.full(labels.shape[1], np.nan)
  for task in range(labels.shape[1]):
    if np.sum(labels[:, task] == 0) > 0 and np.sum(labels[:, task] == 1) > 0:
      labelled = mask[:, task]
      per_task[task] = average_precision_score(
          labels[labelled, task], probs[labelled, task]
      )
  return np.nanmean(per_task)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  size = int(rng.integers(2, 300))
  labels = rng.integers(0, 2, size)
  labels[0] = 1
  scores = np.round(rng.random(size) + 0.3 * labels, 1)  # many ties
  assert metrics.average_precision(labels, scores) == pytest.approx(
      average_precision_score(labels, scores), abs=1e-12
  )


def test_average_precision_edge_cases():
  assert metrics.average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
  assert metrics.average_precision([0, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx(1 / 3)
  assert metrics.average_precision([1, 0], [0.5, 0.5]) == 0.5  # one tie
  assert np.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))


def _eval_like_data(seed: int, graphs: int = 400, tasks: int = 12):
  """Labels, masks and logits shaped like a molpcba evaluation."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((graphs, tasks)) < rng.uniform(0.02, 0.4, tasks)).astype(
      np.float32
  )
  logits = (rng.normal(size=labels.shape) + 1.5 * labels).astype(np.float32)
  mask = (rng.random(labels.shape) > 0.3).astype(np.float32)
  mask[-20:] = 0  # padding graphs
  labels[:, 0] = 0  # a task without positives: skipped
  mask[:, 1] = 0  # a task without labels: skipped
  labels = np.where(mask > 0, labels, 0.0)  # the pipeline stores missing as 0
  return logits, labels, mask


@pytest.mark.parametrize("seed", range(3))
def test_mean_average_precision_matches_algoperf_computation(seed):
  logits, labels, mask = _eval_like_data(seed)
  ours = metrics.mean_average_precision(logits, labels, mask)
  assert ours == pytest.approx(_algoperf_map(logits, labels, mask), abs=1e-12)
  assert 0.3 < ours < 1.0


def test_saturated_sigmoids_tie_as_in_float32():
  labels = np.array([[1.0], [0.0], [1.0], [0.0]])
  logits = np.array([[40.0], [30.0], [-3.0], [-4.0]], np.float32)
  mask = np.ones_like(labels)
  # sigmoid(40) == sigmoid(30) == 1 in float32: positive and negative tie.
  expected = average_precision_score(labels[:, 0], [1.0, 1.0, 0.0474, 0.018])
  assert metrics.mean_average_precision(logits, labels, mask) == pytest.approx(expected)
  assert expected < 1.0


def test_tasks_without_both_classes_are_skipped():
  labels = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
  logits = np.array([[2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  mask = np.ones_like(labels)
  # Only task 0 has both classes; it is ranked perfectly.
  assert metrics.mean_average_precision(logits, labels, mask) == 1.0
  # Hiding task 0's negative leaves no task with both classes.
  mask[1, 0] = 0
  assert np.isnan(metrics.mean_average_precision(logits, labels, mask))


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="shapes"):
    metrics.mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3))
