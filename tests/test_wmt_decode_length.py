"""The WMT ``decode_length`` option: how many tokens an evaluation translates."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from algoperf_avg import registry, spec


def test_out_of_range_decode_length_is_a_usage_error():
  for bad in ("1", "49", "x"):
    with pytest.raises(spec.UsageError, match="decode_length"):
      registry.get_workload("wmt", "small", decode_length=bad)


def test_decode_length_shortens_the_translations_and_defaults_to_max_len():
  assert registry.get_workload("wmt", "small").decode_length == 48
  assert registry.get_workload("wmt", "full").decode_length == 256
  workload = registry.get_workload("wmt", "small", decode_length="6")
  params, state = workload.init_model_fn(jax.random.key(0))
  inputs = np.zeros((2, workload.max_length), np.int32)
  inputs[:, :5] = [[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]]
  batch = {"inputs": inputs, "targets": inputs, "weights": (inputs > 0).astype(np.float32)}
  out = workload.eval_step(params, state, batch, jax.random.key(1), metrics="target")
  assert np.asarray(out.per_example["translations"]).shape == (2, 5)
