"""The workload and submission interfaces, and the harness's error types.

The names and signatures follow MLCommons AlgoPerf so its users feel at home:
a `Workload` owns the model, the data, the loss and the evaluation; a
submission provides five functions (`get_batch_size`, `init_optimizer_state`,
`update_params`, `prepare_for_eval`, `data_selection`). Two differences:

* every workload has named sizes: ``"full"`` is AlgoPerf's exact model with its
  targets and budgets, ``"small"`` a CPU-scale variant with its own;
* `prepare_for_eval` may return a `PreparedForEval`, whose ``eval_params`` are
  used for evaluation only, so averaged weights never have to be copied into
  (and back out of) the training parameters.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np

from algoperf_avg import targets as targets_lib


class UsageError(Exception):
  """Bad user input (names, files, JSON). The CLI prints it and exits 2."""


class TrainingCompleteError(Exception):
  """Raised by `update_params` to end training early (AlgoPerf semantics)."""


class DivergedError(RuntimeError):
  """The training loss became NaN or infinite; the trial ends as diverged."""


class LossType(enum.Enum):
  SOFTMAX_CROSS_ENTROPY = 0
  SIGMOID_CROSS_ENTROPY = 1
  MEAN_SQUARED_ERROR = 2
  CTC_LOSS = 3
  MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
  TRAIN = 0
  EVAL = 1


class ParameterType(enum.Enum):
  WEIGHT = 0
  BIAS = 1
  CONV_WEIGHT = 2
  BATCH_NORM_SCALE = 3
  BATCH_NORM_BIAS = 4
  LAYER_NORM_SCALE = 5
  LAYER_NORM_BIAS = 6
  EMBEDDING = 7
  ATTENTION_Q = 8
  ATTENTION_K = 9
  ATTENTION_V = 10
  ATTENTION_OUT = 11
  ATTENTION_QKV = 12
  ATTENTION_KV = 13
  ATTENTION_BIAS = 14


Params = Any  # a pytree of arrays
ModelState = Any  # a pytree (batch-norm statistics), often empty
OptimizerState = Any
Batch = dict[str, Any]  # "inputs", "targets", "weights" (mask of valid examples)


class Hyperparameters(Mapping):
  """Read-only hyperparameters with both ``h["lr"]`` and ``h.lr`` access.

  AlgoPerf submissions read ``hyperparameters.learning_rate``; optax-style code
  prefers a mapping. This supports both.
  """

  def __init__(self, values: Mapping[str, Any] | None = None, **kwargs: Any):
    object.__setattr__(self, "_values", dict(values or {}, **kwargs))

  def __getitem__(self, key: str) -> Any:
    return self._values[key]

  def __iter__(self):
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __getattr__(self, key: str) -> Any:
    try:
      return self._values[key]
    except KeyError:
      raise AttributeError(
          f"hyperparameter {key!r} is not set (have: {sorted(self._values)})"
      ) from None

  def __setattr__(self, key: str, value: Any) -> None:
    raise AttributeError("Hyperparameters are read-only")

  def get(self, key: str, default: Any = None) -> Any:
    return self._values.get(key, default)

  def to_dict(self) -> dict[str, Any]:
    """A plain (JSON-serialisable) copy."""
    return dict(self._values)

  def __repr__(self) -> str:
    return f"Hyperparameters({self._values!r})"


class PreparedForEval(NamedTuple):
  """What `prepare_for_eval` may return instead of AlgoPerf's 3-tuple.

  ``optimizer_state``, ``params`` and ``model_state`` continue training;
  ``eval_params`` (and ``eval_model_state``, when batch statistics were
  recomputed for them) are evaluated. ``None`` means "same as the training
  ones".
  """

  optimizer_state: OptimizerState
  params: Params
  model_state: ModelState
  eval_params: Params | None = None
  eval_model_state: ModelState | None = None


@dataclasses.dataclass(frozen=True)
class Submission:
  """A loaded submission: AlgoPerf's five functions plus metadata."""

  name: str
  get_batch_size: Callable[[str], int]
  init_optimizer_state: Callable[..., OptimizerState]
  update_params: Callable[..., tuple[OptimizerState, Params, ModelState]]
  prepare_for_eval: Callable[..., Any]
  data_selection: Callable[..., Batch]
  # Defaults merged under the trial's hyperparameters (submission's own knobs).
  default_hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Hyperparameter names it understands (module ``HPARAMS``); None: unchecked.
  hparam_names: frozenset[str] | None = None
  source: str = ""


SUBMISSION_FUNCTIONS = (
    "get_batch_size",
    "init_optimizer_state",
    "update_params",
    "prepare_for_eval",
    "data_selection",
)


def _param_type_from_path(path: tuple[Any, ...], leaf: Any) -> ParameterType:
  """Best-effort `ParameterType` from a Flax parameter path."""
  names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
  last = names[-1] if names else ""
  scope = "/".join(names[:-1])
  if "layernorm" in scope or "layer_norm" in scope or "ln" in names[:-1]:
    return ParameterType.LAYER_NORM_BIAS if last == "bias" else (
        ParameterType.LAYER_NORM_SCALE)
  if "batchnorm" in scope or "batch_norm" in scope or "bn" in names[:-1]:
    return ParameterType.BATCH_NORM_BIAS if last == "bias" else (
        ParameterType.BATCH_NORM_SCALE)
  if last == "bias":
    return ParameterType.BIAS
  if last == "embedding":
    return ParameterType.EMBEDDING
  if last == "kernel" and getattr(leaf, "ndim", 0) == 4:
    return ParameterType.CONV_WEIGHT
  return ParameterType.WEIGHT


class Workload(abc.ABC):
  """Base class of every workload.

  A subclass sets `name`, `sizes` and `loss_type`, and implements the data,
  model, loss and per-split evaluation. Targets and budgets come from
  `algoperf_avg.targets`, keyed by `workload_id` (``"ogbg"`` for the full
  size, ``"ogbg_small"`` for the small one), so the scorer and the workload
  can never disagree.
  """

  name: ClassVar[str]
  sizes: ClassVar[tuple[str, ...]] = ("full", "small")
  loss_type: ClassVar[LossType]

  def __init__(self, size: str = "full"):
    if size not in self.sizes:
      raise UsageError(
          f"workload {self.name!r} has no size {size!r}; "
          f"choose one of: {', '.join(self.sizes)}"
      )
    self.size = size
    self._param_shapes = None

  # ----- identity, targets and budgets -------------------------------------

  @property
  def workload_id(self) -> str:
    """Name used in log folders and the targets table (``ogbg_small``)."""
    return self.name if self.size == "full" else f"{self.name}_{self.size}"

  @property
  def targets(self) -> targets_lib.Targets:
    return targets_lib.get(self.workload_id)

  @property
  def target_metric_name(self) -> str:
    return self.targets.metric

  @property
  def target_direction(self) -> str:
    return self.targets.direction

  @property
  def validation_target_value(self) -> float:
    return self.targets.validation

  @property
  def test_target_value(self) -> float | None:
    return self.targets.test

  @property
  def max_allowed_runtime_sec(self) -> float:
    return self.targets.max_runtime_sec

  @property
  def eval_period_time_sec(self) -> float:
    return self.targets.eval_period_sec

  @property
  def step_hint(self) -> int:
    return self.targets.step_hint

  def _reached(self, value: float | None, target: float | None) -> bool:
    if value is None or target is None or not math.isfinite(value):
      return False
    # Strict, as in AlgoPerf's workloads: reaching means beating the target.
    if self.target_direction == "max":
      return value > target
    return value < target

  def has_reached_validation_target(self, eval_result: Mapping[str, float]) -> bool:
    """True when ``validation/<target metric>`` meets the validation target."""
    return self._reached(
        eval_result.get(f"validation/{self.target_metric_name}"),
        self.validation_target_value,
    )

  def has_reached_test_target(self, eval_result: Mapping[str, float]) -> bool:
    """True when ``test/<target metric>`` meets the test target (or no test split)."""
    if self.num_test_examples == 0 or self.test_target_value is None:
      return True
    return self._reached(
        eval_result.get(f"test/{self.target_metric_name}"),
        self.test_target_value,
    )

  # ----- sizes of the data --------------------------------------------------

  @property
  @abc.abstractmethod
  def num_train_examples(self) -> int:
    """Examples in the training split."""

  @property
  @abc.abstractmethod
  def num_eval_train_examples(self) -> int:
    """Training examples evaluated at each eval (``train/*`` metrics)."""

  @property
  @abc.abstractmethod
  def num_validation_examples(self) -> int:
    """Examples in the validation split."""

  @property
  def num_test_examples(self) -> int:
    """Examples in the test split; 0 when the workload has none."""
    return 0

  @property
  @abc.abstractmethod
  def eval_batch_size(self) -> int:
    """Global batch size used for evaluation."""

  @property
  def requires_data_dir(self) -> bool:
    """Whether this size reads a dataset from disk (small sizes generate theirs)."""
    return self.size == "full"

  @property
  def reference_hparams(self) -> dict[str, Any]:
    """Tuned NadamW hyperparameters for this size (used when none are given)."""
    return {}

  @property
  def default_batch_size(self) -> int:
    """Training batch size submissions use unless they choose their own."""
    raise NotImplementedError(f"{self.name} has no default batch size")

  # ----- model ---------------------------------------------------------------

  @abc.abstractmethod
  def init_model_fn(self, rng: jax.Array) -> tuple[Params, ModelState]:
    """Fresh parameters and model state (batch statistics; may be empty)."""

  @abc.abstractmethod
  def model_fn(
      self,
      params: Params,
      batch: Batch,
      model_state: ModelState,
      mode: ForwardPassMode,
      rng: jax.Array,
      update_batch_norm: bool,
      dropout_rate: float | None = None,
  ) -> tuple[jax.Array, ModelState]:
    """Logits for ``batch["inputs"]`` and the (possibly updated) model state."""

  @abc.abstractmethod
  def loss_fn(
      self,
      label_batch: jax.Array,
      logits_batch: jax.Array,
      mask_batch: jax.Array | None = None,
      label_smoothing: float = 0.0,
  ) -> dict[str, jax.Array]:
    """Loss as ``{"summed", "n_valid_examples", "per_example"}``.

    Submissions divide ``summed`` by ``n_valid_examples`` to get the mean.
    """

  @property
  def param_shapes(self) -> Any:
    """Pytree of `jax.ShapeDtypeStruct`, computed without allocating."""
    if self._param_shapes is None:
      params, _ = jax.eval_shape(self.init_model_fn, jax.random.key(0))
      self._param_shapes = params
    return self._param_shapes

  @property
  def num_params(self) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.param_shapes)))

  @property
  def model_params_types(self) -> Any:
    """Pytree of `ParameterType`, one per parameter."""
    return jax.tree_util.tree_map_with_path(
        _param_type_from_path, self.param_shapes
    )

  # ----- data and evaluation ---------------------------------------------

  @abc.abstractmethod
  def build_input_queue(
      self,
      data_rng: jax.Array,
      split: str,
      data_dir: str | None,
      global_batch_size: int,
      *,
      repeat: bool = True,
      num_batches: int | None = None,
  ) -> Iterator[Batch]:
    """Batches of ``split`` ("train", "eval_train", "validation", "test").

    Train batches are shuffled and repeat forever; eval batches are padded
    with ``weights == 0`` so every example is seen exactly once.
    """

  @abc.abstractmethod
  def eval_model_on_split(
      self,
      split: str,
      num_examples: int,
      global_batch_size: int,
      params: Params,
      model_state: ModelState,
      rng: jax.Array,
      data_dir: str | None,
  ) -> dict[str, float]:
    """Metrics (``loss`` and the target metric at least) on one split."""

  def eval_model(
      self,
      global_batch_size: int,
      params: Params,
      model_state: ModelState,
      rng: jax.Array,
      data_dir: str | None,
      splits: tuple[str, ...] = ("train", "validation", "test"),
  ) -> dict[str, float]:
    """Metrics on the eval splits, keyed ``"<split>/<metric>"``.

    ``train`` evaluates `num_eval_train_examples` training examples; ``test``
    is skipped when the workload has no test split.
    """
    sizes = {
        "train": ("eval_train", self.num_eval_train_examples),
        "validation": ("validation", self.num_validation_examples),
        "test": ("test", self.num_test_examples),
    }
    results: dict[str, float] = {}
    for prefix in splits:
      split, num_examples = sizes[prefix]
      if not num_examples:
        continue
      metrics = self.eval_model_on_split(
          split, num_examples, global_batch_size, params, model_state, rng,
          data_dir,
      )
      results.update({f"{prefix}/{k}": float(v) for k, v in metrics.items()})
    return results

  def describe(self) -> dict[str, Any]:
    """One row of `algoperf-avg list`."""
    t = self.targets
    return {
        "workload": self.name,
        "size": self.size,
        "params": self.num_params,
        "metric": t.metric,
        "direction": t.direction,
        "validation_target": t.validation,
        "test_target": t.test,
        "step_hint": t.step_hint,
        "max_runtime_sec": t.max_runtime_sec,
    }
