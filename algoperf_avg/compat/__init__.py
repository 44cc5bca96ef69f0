"""AlgoPerf's JAX submission files run here unchanged.

AlgoPerf submissions import ``from algoperf import spec`` (and
``jax_sharding_utils``, ``param_utils``, ``random_utils``). When the real
``algoperf`` package is not installed, `install` makes those names resolve to
`algoperf_avg.compat.algoperf`, a layer over this harness: its ``spec`` *is*
`algoperf_avg.spec` (same enums, errors, `ShapeTuple`, type names), so a
submission and the harness share every object. When ``algoperf`` is
installed, it is left alone: its enums compare equal to ours by name
(`spec._AlgoPerfEnum`) and the runner also catches its
``TrainingCompleteError``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

MODULES = ("spec", "jax_sharding_utils", "param_utils", "random_utils")


def real_algoperf_available() -> bool:
  """Whether an ``algoperf`` package other than this layer is importable."""
  module = sys.modules.get("algoperf")
  if module is not None:
    return not getattr(module, "IS_ALGOPERF_AVG_COMPAT", False)
  return importlib.util.find_spec("algoperf") is not None


def install() -> bool:
  """Alias ``algoperf.*`` to this layer unless the real one exists; True if aliased."""
  if real_algoperf_available():
    return False
  package = importlib.import_module("algoperf_avg.compat.algoperf")
  sys.modules.setdefault("algoperf", package)
  for name in MODULES:
    module = importlib.import_module(f"algoperf_avg.compat.algoperf.{name}")
    sys.modules.setdefault(f"algoperf.{name}", module)
    setattr(package, name, module)
  return True
