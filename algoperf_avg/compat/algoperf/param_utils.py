"""``algoperf.param_utils`` for JAX parameter trees (AlgoPerf's type rules)."""

from __future__ import annotations

from typing import Any

import jax

from algoperf_avg import spec
from algoperf_avg.kit import param_types


def jax_param_shapes(params: Any) -> Any:
  """A tree of `spec.ShapeTuple` like ``params``."""
  return jax.tree.map(lambda p: spec.ShapeTuple(p.shape, getattr(p, "dtype", None)), params)


def jax_param_types(param_shapes: Any, parent_name: str = "") -> Any:
  """A tree of `spec.ParameterType` like ``param_shapes`` (`kit.param_types`)."""
  del parent_name  # AlgoPerf's recursion argument; the path carries it here
  return param_types.parameter_types(param_shapes)


def pytorch_param_shapes(model: Any) -> Any:
  raise NotImplementedError("algoperf_avg runs JAX submissions only")


def pytorch_param_types(param_shapes: Any) -> Any:
  raise NotImplementedError("algoperf_avg runs JAX submissions only")
