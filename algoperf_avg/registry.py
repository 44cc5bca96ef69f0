"""Names -> workloads and submissions.

Workloads are an explicit dict of import paths (so the library never imports
a workload it does not need). Submissions are the modules of the
``submissions`` package, or any ``.py`` file given by path.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import os
import pkgutil
import sys
from types import ModuleType

from algoperf_avg import spec

# name -> "module:Class". Every workload has the sizes listed by its class.
WORKLOADS: dict[str, str] = {
    "criteo1tb": "workloads.criteo1tb.workload:Criteo1TbWorkload",
    "fastmri": "workloads.fastmri.workload:FastMRIWorkload",
    "imagenet_resnet": "workloads.imagenet_resnet.workload:ImagenetResnetWorkload",
    "imagenet_vit": "workloads.imagenet_vit.workload:ImagenetVitWorkload",
    "ogbg": "workloads.ogbg.workload:OgbgWorkload",
    "wmt": "workloads.wmt.workload:WmtWorkload",
    "librispeech_conformer":
        "workloads.librispeech_conformer.workload:LibriSpeechConformerWorkload",
    "librispeech_deepspeech":
        "workloads.librispeech_deepspeech.workload:LibriSpeechDeepSpeechWorkload",
}

# Datasets that several workloads read, by the name `setup-data` accepts ->
# a workload that prepares them (``setup-data imagenet`` serves both ViT and ResNet).
DATASETS: dict[str, str] = {
    "imagenet": "imagenet_vit",
}


def _unknown(kind: str, name: str, known: list[str]) -> spec.UsageError:
  close = difflib.get_close_matches(name, known, n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return spec.UsageError(
      f"unknown {kind} {name!r}{hint}; known: {', '.join(sorted(known)) or 'none'}"
  )


def workload_class(name: str) -> type[spec.Workload]:
  """The Workload class registered under ``name``."""
  if name not in WORKLOADS:
    raise _unknown("workload", name, list(WORKLOADS))
  module_name, class_name = WORKLOADS[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)


def setup_data_class(name: str) -> type[spec.Workload]:
  """The Workload class whose ``setup_data`` prepares ``name`` (a workload or dataset)."""
  if name in DATASETS:
    return workload_class(DATASETS[name])
  if name not in WORKLOADS:
    raise _unknown("workload or dataset", name, list(WORKLOADS) + list(DATASETS))
  return workload_class(name)


def get_workload(name: str, size: str = "full", **options) -> spec.Workload:
  """An instance of workload ``name`` at ``size`` ("full" or "small").

  ``options`` are the workload's options (`kit.config.Option`); an unknown
  one is a `spec.UsageError`.
  """
  return workload_class(name)(size, **options)


def submission_names() -> list[str]:
  """Modules of the ``submissions`` package (each is a submission)."""
  import submissions

  return sorted(
      m.name for m in pkgutil.iter_modules(submissions.__path__)
      if not m.name.startswith("_")
  )


def _import_file(path: str) -> ModuleType:
  module_name = "algoperf_user_submission_" + os.path.splitext(os.path.basename(path))[0]
  spec_ = importlib.util.spec_from_file_location(module_name, path)
  if spec_ is None or spec_.loader is None:
    raise spec.UsageError(f"cannot import submission file {path!r}")
  module = importlib.util.module_from_spec(spec_)
  sys.modules[module_name] = module
  spec_.loader.exec_module(module)
  return module


def _import_submission(name_or_path: str) -> tuple[ModuleType, str, str]:
  from algoperf_avg import compat

  compat.install()  # AlgoPerf submissions' `from algoperf import spec` resolves here
  looks_like_path = name_or_path.endswith(".py") or os.sep in name_or_path
  try:
    if looks_like_path:
      if not os.path.isfile(name_or_path):
        raise spec.UsageError(f"submission file {name_or_path!r} does not exist")
      stem = os.path.splitext(os.path.basename(name_or_path))[0]
      import submissions

      package_dir = os.path.abspath(submissions.__path__[0])
      # A path into our own submissions/ folder imports the package module, so
      # submissions can import each other (``from submissions import nadamw``).
      if os.path.dirname(os.path.abspath(name_or_path)) == package_dir:
        return importlib.import_module(f"submissions.{stem}"), stem, name_or_path
      return _import_file(name_or_path), stem, os.path.abspath(name_or_path)
    if name_or_path not in submission_names():
      raise _unknown("submission", name_or_path, submission_names())
    module = importlib.import_module(f"submissions.{name_or_path}")
    return module, name_or_path, module.__file__ or name_or_path
  except spec.UsageError:
    raise
  except Exception as e:  # a user's module failing to import is bad input
    raise spec.UsageError(
        f"could not import submission {name_or_path!r}: {type(e).__name__}: {e}"
    ) from e


def load_submission(name_or_path: str) -> spec.Submission:
  """Load a submission by registered name or by ``.py`` path.

  A module with AlgoPerf's five functions is used as is; a module with
  ``make_optimizer`` is wrapped by `OptaxSubmission`. Anything else is a
  `UsageError` naming what is missing.
  """
  module, name, source = _import_submission(name_or_path)
  if hasattr(module, "make_optimizer"):
    from algoperf_avg.training.optax_submission import OptaxSubmission

    return dataclasses.replace(
        OptaxSubmission(module, name).as_submission(source),
        hparam_names=_hparam_names(module),
    )
  optional = {"prepare_for_eval"}  # optional in AlgoPerf too
  missing = [f for f in spec.SUBMISSION_FUNCTIONS
             if f not in optional and not callable(getattr(module, f, None))]
  if missing:
    raise spec.UsageError(
        f"submission {source} defines neither make_optimizer(hparams, workload, "
        f"step_hint) nor AlgoPerf's API; missing: {', '.join(missing)}"
    )
  functions = {f: getattr(module, f, None) for f in spec.SUBMISSION_FUNCTIONS}
  functions["prepare_for_eval"] = functions["prepare_for_eval"] or _no_preparation
  return spec.Submission(
      name=name,
      default_hparams=dict(getattr(module, "DEFAULT_HPARAMS", {})),
      hparam_names=_hparam_names(module),
      source=source,
      get_eval_batch_size=getattr(module, "get_eval_batch_size", None),
      **functions,
  )


def _no_preparation(workload, current_param_container, current_params_types, model_state,
                    hyperparameters, loss_type, optimizer_state, eval_results, global_step,
                    rng):
  """A submission without ``prepare_for_eval`` evaluates its training weights."""
  del workload, current_params_types, hyperparameters, loss_type, eval_results
  del global_step, rng
  return optimizer_state, current_param_container, model_state


def _hparam_names(module: ModuleType) -> frozenset[str] | None:
  names = getattr(module, "HPARAMS", None)
  if names is None:
    return None
  return frozenset(names) | frozenset(getattr(module, "DEFAULT_HPARAMS", {}))
