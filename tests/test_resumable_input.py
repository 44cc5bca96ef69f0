"""Resumable input: a stream restarted at batch k equals the unbroken one, in O(1)."""

from __future__ import annotations

import itertools

import jax
import numpy as np

from algoperf_avg.kit import data
from tests.toy import ToyWorkload
from workloads.ogbg.workload import OgbgWorkload


def _count_permutations(monkeypatch):
  calls = []
  real = data._permutation
  monkeypatch.setattr(data, "_permutation", lambda *a: calls.append(a) or real(*a))
  return calls


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_toy_stream_resumes_at_a_huge_batch_index_in_o1(monkeypatch):
  workload = ToyWorkload()
  rng = jax.random.key(3)
  unbroken = workload.train_batches(rng, None, 32)
  for _ in range(2_000):
    next(unbroken)
  state = unbroken.checkpoint("unused")
  expected = next(unbroken)
  calls = _count_permutations(monkeypatch)
  resumed = workload.train_batches(rng, None, 32, start=state)
  _same(next(resumed), expected)
  far = workload.train_batches(rng, None, 32, start=10**9)  # 15.6M epochs in
  next(far)
  assert len(calls) <= 3  # one permutation per start, never one per epoch skipped


def test_ogbg_small_stream_resumes_exactly(monkeypatch):
  workload = OgbgWorkload("small")
  rng = jax.random.key(1)
  unbroken = workload.train_batches(rng, None, 128)
  taken = list(itertools.islice(unbroken, 300))  # > 2 epochs of 16k graphs
  state = unbroken.checkpoint("unused")
  assert state == sum(int(b["valid"].sum()) for b in taken)  # graphs batched so far
  expected = [next(unbroken) for _ in range(3)]
  calls = _count_permutations(monkeypatch)
  resumed = workload.train_batches(rng, None, 128, start=state)
  for want in expected:
    _same(next(resumed), want)
  assert len(calls) == 1
