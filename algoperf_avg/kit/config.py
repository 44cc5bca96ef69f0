"""Per-size workload configs and workload options.

A workload declares one frozen `SizeConfig` per size; the `Workload` base
class reads example counts, batch sizes and reference hyperparameters from
it, so a workload writes no forwarding properties. Subclasses add their own
fields (model widths, data sizes)::

    @dataclasses.dataclass(frozen=True)
    class OgbgConfig(config.SizeConfig):
      latent_dim: int = 256

Options are what a user may change about a workload instance without
changing what it measures (a tokenizer path, the ImageNet-v2 folder, a
reduced vocabulary for tests): ``Workload(size, **options)``, on the command
line ``--workload_option=NAME=VALUE``. Each is an `Option` with a default, a
parser for command-line strings and a one-line help text.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class SizeConfig:
  """What every size of every workload states.

  Attributes:
    num_train_examples: examples in the training split.
    num_eval_train_examples: training examples evaluated at each eval
      (``train/*`` metrics).
    num_validation_examples: examples in the validation split.
    num_test_examples: examples in the test split; 0 when there is none.
    eval_batch_size: global batch size of evaluation.
    train_batch_size: global batch size of training unless the submission
      chooses its own.
    reference_hparams: tuned NadamW hyperparameters for this size (used when a
      run gives none).
  """

  num_train_examples: int
  num_eval_train_examples: int
  num_validation_examples: int
  num_test_examples: int
  eval_batch_size: int
  train_batch_size: int
  reference_hparams: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: types.MappingProxyType({}))


def parse_bool(text: str) -> bool:
  """``true/false/1/0/yes/no`` (any case) as a bool."""
  lowered = text.strip().lower()
  if lowered in ("1", "true", "yes", "on"):
    return True
  if lowered in ("0", "false", "no", "off"):
    return False
  raise ValueError(f"not a boolean: {text!r}")


@dataclasses.dataclass(frozen=True)
class Option:
  """One workload option.

  Attributes:
    default: the value when the option is not given.
    help: one line for ``algoperf-avg list --options`` and errors.
    parse: turns a command-line string into the value (`int`, `float`,
      `parse_bool`, `str`, ...); values given from Python that are not
      strings are passed through it too, so its checks apply.
  """

  default: Any
  help: str
  parse: Callable[[Any], Any] = str


# Options every workload has.
COMMON_OPTIONS: Mapping[str, Option] = types.MappingProxyType({
    "eval_batch_size": Option(
        None, "global eval batch size (default: the workload's)",
        lambda v: None if v in (None, "", "default") else _positive_int(v)),
})


def _positive_int(value: Any) -> int:
  number = int(value)
  if number < 1 or number != float(value):
    raise ValueError(f"not a positive integer: {value!r}")
  return number


def resolve_options(
    workload: str, declared: Mapping[str, Option], given: Mapping[str, Any]
) -> types.MappingProxyType:
  """Defaults overridden by ``given``, each parsed; raises `ValueError`.

  Every unknown name is reported with the known ones (and a close match);
  a value its parser rejects is reported with the option's help.
  """
  known = dict(COMMON_OPTIONS) | dict(declared)
  unknown = [name for name in given if name not in known]
  if unknown:
    hints = []
    for name in unknown:
      close = difflib.get_close_matches(name, list(known), n=1)
      hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(
        f"workload {workload} has no option {', '.join(hints)}; its options: "
        + ", ".join(f"{n} ({o.help})" for n, o in sorted(known.items())))
  values = {}
  for name, option in known.items():
    if name not in given:
      values[name] = option.default
      continue
    try:
      values[name] = option.parse(given[name])
    except (TypeError, ValueError) as e:
      raise ValueError(
          f"workload {workload}: bad value {given[name]!r} for option {name} "
          f"({option.help}): {e}") from None
  return types.MappingProxyType(values)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
  """``["vocab_size=1024", "tokenizer=/x.model"]`` -> a dict; raises `ValueError`."""
  result = {}
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
      raise ValueError(f"workload option {item!r} is not NAME=VALUE")
    if name.strip() in result:
      raise ValueError(f"workload option {name.strip()!r} given twice")
    result[name.strip()] = value.strip()
  return result
