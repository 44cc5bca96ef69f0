"""The evaluation engine: padding, per-example rows, caching, bounded memory."""

from __future__ import annotations

import tracemalloc

import jax
import numpy as np
import pytest

from algoperf_avg.evaluation import engine
from tests.toy import ToyWorkload


class StreamedToy(ToyWorkload):
  """Validation batches made one at a time (no split held anywhere), counted."""

  def __init__(self, num_validation=256, dim=8, per_example=False, **kwargs):
    super().__init__(dim=dim, **kwargs)
    self.num_validation = num_validation
    self.per_example = per_example
    self.passes = 0

  @property
  def num_validation_examples(self):
    return self.num_validation

  def eval_batches(self, split, data_dir, batch_size, *, shard_index=0, num_shards=1):
    self.passes += 1
    for first in range(0, self.num_validation, batch_size):
      n = min(batch_size, self.num_validation - first)
      ids = np.arange(first, first + n)  # example i depends on i alone
      labels = (ids * 7919 % self.num_classes).astype(np.int32)
      noise = np.sin(np.outer(ids + 1, np.arange(1, self.dim + 1))).astype(np.float32)
      x = self.centres[labels] + 2 * noise
      yield {"inputs": x, "targets": labels, "weights": np.ones(n, np.float32),
             "ids": ids}

  def eval_step(self, params, model_state, batch, rng, metrics="all"):
    out = super().eval_step(params, model_state, batch, rng, metrics)
    if not self.per_example:
      return out
    return engine.EvalOutput(out.sums, {"ids": batch["ids"]})

  def finalize_metrics(self, split, sums, per_example, metrics="all"):
    self.last_per_example = per_example
    return super().finalize_metrics(split, sums, per_example, metrics)


def _params(workload):
  return workload.init_model_fn(jax.random.key(0))[0]


def test_padded_batches_give_the_same_metrics():
  workload = StreamedToy(num_validation=300)
  params = _params(workload)
  results = [engine.Evaluator(workload).evaluate("validation", params, {}, None, None, size)
             for size in (100, 128, 1000)]  # 0, 84 and 700 padding examples
  for other in results[1:]:
    for key in ("loss", "accuracy"):
      assert other[key] == pytest.approx(results[0][key], rel=1e-6)


def test_per_example_rows_keep_order_and_drop_padding():
  workload = StreamedToy(num_validation=300, per_example=True)
  engine.Evaluator(workload).evaluate("validation", _params(workload), {}, None, None, 128)
  np.testing.assert_array_equal(workload.last_per_example["ids"], np.arange(300))


def test_small_splits_are_read_once_large_ones_streamed():
  workload = StreamedToy(num_validation=300)
  params = _params(workload)
  cached = engine.Evaluator(workload)
  first = cached.evaluate("validation", params, {}, None, None, 128)
  assert cached.evaluate("validation", params, {}, None, None, 128) == first
  assert workload.passes == 1
  streamed = engine.Evaluator(workload, cache_bytes=1000)  # smaller than the split
  for _ in range(2):
    assert streamed.evaluate("validation", params, {}, None, None, 128) == first
  assert workload.passes == 3


def test_host_memory_does_not_grow_with_the_split():
  def peak(num_validation):
    workload = StreamedToy(num_validation=num_validation, dim=512)
    evaluator = engine.Evaluator(workload, cache_bytes=0)
    params = _params(workload)
    evaluator.evaluate("validation", params, {}, None, None, 256)  # compile first
    tracemalloc.start()
    evaluator.evaluate("validation", params, {}, None, None, 256)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top

  small, large = peak(2_048), peak(32_768)  # 1 MB per batch; 8 MB vs 128 MB in all
  assert large < 1.5 * small + 2**20, (small, large)


def test_eval_step_must_return_an_eval_output():
  class Wrong(StreamedToy):
    def eval_step(self, *args, **kwargs):
      return {"loss": 0.0}

  workload = Wrong()
  with pytest.raises(TypeError, match="EvalOutput"):
    engine.Evaluator(workload).evaluate("validation", _params(workload), {}, None, None, 128)


def test_bad_metric_set_is_an_error():
  workload = StreamedToy()
  with pytest.raises(ValueError, match="metrics must be"):
    engine.Evaluator(workload).evaluate("validation", _params(workload), {}, None, None,
                                        128, metrics="some")
