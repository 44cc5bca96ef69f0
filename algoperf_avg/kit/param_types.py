"""Parameter types, assigned by AlgoPerf's rules for Flax parameter trees.

Submissions may treat parameters by type (no weight decay on biases and norm
scales, a different learning rate for embeddings). AlgoPerf derives the type
from the lower-cased path of each leaf (`algoperf/param_utils.py`,
``jax_param_types``); the same rules, in the same order, are applied here so a
submission sees the same types in both harnesses:

1. a parent path containing ``batchnorm`` or ``bn``: ``scale`` / ``bias`` are
   BATCH_NORM_SCALE / BATCH_NORM_BIAS (anything else is an error);
2. ``layernorm`` or ``ln`` in the parent path: LAYER_NORM_SCALE / _BIAS
   (anything else is an error);
3. ``conv`` in the parent path: a name containing ``bias`` is BIAS, anything
   else CONV_WEIGHT (whatever its rank: depthwise 1-D/3-D kernels too);
4. ``embedding`` in the name, or a ``kernel`` under an ``embedding`` parent:
   EMBEDDING;
5. ``attention`` in the parent path: ``bias`` ATTENTION_BIAS; a ``kernel``
   under ``key`` / ``query`` / ``value`` / ``out`` ATTENTION_K / _Q / _V /
   _OUT; a name containing ``scale`` WEIGHT; ``in_proj_weight``
   ATTENTION_QKV; anything else an error;
6. otherwise a name containing ``bias`` is BIAS, the rest WEIGHT.

Substring matches are AlgoPerf's (``"bn"`` also matches e.g. ``"subnet"``);
keeping them is the point.
"""

from __future__ import annotations

from typing import Any

import jax

from algoperf_avg import spec

ParameterType = spec.ParameterType


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def parameter_type(path: tuple[Any, ...]) -> ParameterType:
  """The type of the leaf at ``path`` (a `jax.tree_util` key path)."""
  names = [_key_name(k).lower() for k in path]
  name = names[-1] if names else ""
  parent = "".join("/" + n for n in names[:-1])
  where = f"{parent}/{name}"
  if "batchnorm" in parent or "bn" in parent:
    if name == "scale":
      return ParameterType.BATCH_NORM_SCALE
    if name == "bias":
      return ParameterType.BATCH_NORM_BIAS
    raise ValueError(f"unrecognised batch norm parameter {where}")
  if "layernorm" in parent or "ln" in parent:
    if name == "scale":
      return ParameterType.LAYER_NORM_SCALE
    if name == "bias":
      return ParameterType.LAYER_NORM_BIAS
    raise ValueError(f"unrecognised layer norm parameter {where}")
  if "conv" in parent:
    return ParameterType.BIAS if "bias" in name else ParameterType.CONV_WEIGHT
  if "embedding" in name or ("embedding" in parent and name == "kernel"):
    return ParameterType.EMBEDDING
  if "attention" in parent:
    if name == "bias":
      return ParameterType.ATTENTION_BIAS
    for part, kind in (("key", ParameterType.ATTENTION_K),
                       ("query", ParameterType.ATTENTION_Q),
                       ("value", ParameterType.ATTENTION_V),
                       ("out", ParameterType.ATTENTION_OUT)):
      if part in parent and name == "kernel":
        return kind
    if "scale" in name:
      return ParameterType.WEIGHT
    if "in_proj_weight" in name:
      return ParameterType.ATTENTION_QKV
    raise ValueError(f"unrecognised attention parameter {where}")
  return ParameterType.BIAS if "bias" in name else ParameterType.WEIGHT


def parameter_types(params: Any) -> Any:
  """A pytree like ``params`` (arrays or shapes) of `ParameterType`."""
  return jax.tree_util.tree_map_with_path(lambda path, _: parameter_type(path), params)
