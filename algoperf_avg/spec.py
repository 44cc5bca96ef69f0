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
import itertools
import os
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


class _AlgoPerfEnum(enum.Enum):
  """An enum equal to AlgoPerf's enum of the same name and member.

  When the real ``algoperf`` package is importable, its submissions pass
  ``algoperf.spec.ForwardPassMode.TRAIN`` to our workloads; comparing by
  class and member name makes ``mode == spec.ForwardPassMode.TRAIN`` hold in
  both directions (an identity comparison would silently run in eval mode).
  """

  def __eq__(self, other: object) -> bool:
    if isinstance(other, enum.Enum):
      return (type(other).__name__ == type(self).__name__
              and other.name == self.name)
    return NotImplemented

  def __hash__(self) -> int:
    # `enum.Enum`'s own hash: members equal to AlgoPerf's must hash like them,
    # or a dict keyed by one package's members misses the other's.
    return hash(self.name)


class LossType(_AlgoPerfEnum):
  SOFTMAX_CROSS_ENTROPY = 0
  SIGMOID_CROSS_ENTROPY = 1
  MEAN_SQUARED_ERROR = 2
  CTC_LOSS = 3
  MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(_AlgoPerfEnum):
  TRAIN = 0
  EVAL = 1


class ParameterType(_AlgoPerfEnum):
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


class ShapeTuple:
  """A parameter's shape, as AlgoPerf's ``spec.ShapeTuple`` (``.shape_tuple``).

  Also exposes ``.shape`` and ``.dtype`` like `jax.ShapeDtypeStruct`.
  """

  def __init__(self, shape_tuple: tuple[int, ...], dtype: Any = None):
    self.shape_tuple = tuple(shape_tuple)
    self.dtype = dtype

  @property
  def shape(self) -> tuple[int, ...]:
    return self.shape_tuple

  def __repr__(self) -> str:
    return f"ShapeTuple({self.shape_tuple})"

  def __eq__(self, other: object) -> bool:
    return tuple(getattr(other, "shape_tuple", ())) == self.shape_tuple

  def __hash__(self) -> int:
    return hash(self.shape_tuple)


Params = Any  # a pytree of arrays
ModelState = Any  # a pytree (batch-norm statistics), often empty
OptimizerState = Any
Batch = dict[str, Any]  # "inputs", "targets", "weights" (mask of valid examples)
# AlgoPerf's names for the same things (its submissions import them).
Tensor = Any
Shape = Any
ParameterKey = str
ParameterContainer = Any
ParameterShapeTree = Any
ParameterTypeTree = Any
RandomState = Any
Timing = int
Steps = int
ModelAuxiliaryState = Any
ModelInitState = tuple[Any, Any]
UpdateReturn = tuple[Any, Any, Any]
InitOptimizerFn = Callable[..., Any]
UpdateParamsFn = Callable[..., Any]
PrepareForEvalFn = Callable[..., Any]
DataSelectionFn = Callable[..., Any]


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
  # AlgoPerf's optional ``get_eval_batch_size(workload_name)``.
  get_eval_batch_size: Callable[[str], int] | None = None


SUBMISSION_FUNCTIONS = (
    "get_batch_size",
    "init_optimizer_state",
    "update_params",
    "prepare_for_eval",
    "data_selection",
)


class Workload(abc.ABC):
  """Base class of every workload: AlgoPerf's interface on the workload kit.

  A subclass declares, as class attributes:

  * ``name``, ``sizes`` and ``loss_type``;
  * ``configs``: one frozen `kit.config.SizeConfig` per size (example counts,
    batch sizes, reference hyperparameters, plus its own model/data fields),
    read by the properties below;
  * ``options``: its `kit.config.Option` table (``Workload(size, **options)``);
  * ``dataset``: its folder under the data root (``DATA/ogbg``), for the
    sizes that read data (not the ``generated_sizes``);
  * ``batch_pad_values``: pad value per batch key where it is not 0;
  * ``batch_norm_momentum`` when its model state holds batch statistics.

  and implements the model (`init_model_fn`, `model_fn`, `loss_fn`), the
  data (`train_batches`, `eval_batches`, `data_problem`) and the evaluation
  (`eval_step`, `finalize_metrics`). The library owns the rest: the eval loop
  (`evaluation.engine`), padding, sharding, caching of small splits, target
  checks (`targets.Targets.reached`) and parameter types
  (`kit.param_types`). Targets and budgets come from `algoperf_avg.targets`,
  keyed by `workload_id` (``"ogbg"`` for the full size, ``"ogbg_small"`` for
  the small one), so the scorer and the workload can never disagree.
  """

  name: ClassVar[str]
  sizes: ClassVar[tuple[str, ...]] = ("full", "small")
  loss_type: ClassVar[LossType]
  configs: ClassVar[Mapping[str, Any]]
  options: ClassVar[Mapping[str, Any]] = {}
  dataset: ClassVar[str | None] = None
  generated_sizes: ClassVar[tuple[str, ...]] = ("small",)
  batch_pad_values: ClassVar[Mapping[str, Any]] = {}
  batch_norm_momentum: ClassVar[float | None] = None
  # Set by the runner to the trial's logger (AlgoPerf's workload.metrics_logger).
  metrics_logger: Any = None

  def __init__(self, size: str = "full", **options: Any):
    from algoperf_avg.kit import config

    if size not in self.sizes:
      raise UsageError(
          f"workload {self.name!r} has no size {size!r}; "
          f"choose one of: {', '.join(self.sizes)}"
      )
    self.size = size
    try:
      self.option_values = config.resolve_options(self.name, self.options, options)
    except ValueError as e:
      raise UsageError(str(e)) from None
    self.config = self.configs[size]
    self._param_shapes = None
    self._param_types = None
    self._evaluator = None

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

  def has_reached_validation_target(self, eval_result: Mapping[str, float]) -> bool:
    """Whether ``validation/<target metric>`` meets the validation target."""
    return self.targets.reached(
        eval_result.get(f"validation/{self.target_metric_name}"), "validation")

  def has_reached_test_target(self, eval_result: Mapping[str, float]) -> bool:
    """Whether ``test/<target metric>`` meets the test target (or no test split)."""
    if self.num_test_examples == 0 or self.test_target_value is None:
      return True
    return self.targets.reached(
        eval_result.get(f"test/{self.target_metric_name}"), "test")

  # ----- sizes of the data (from the size's config) ------------------------

  @property
  def num_train_examples(self) -> int:
    return self.config.num_train_examples

  @property
  def num_eval_train_examples(self) -> int:
    return self.config.num_eval_train_examples

  @property
  def num_validation_examples(self) -> int:
    return self.config.num_validation_examples

  @property
  def num_test_examples(self) -> int:
    return self.config.num_test_examples

  @property
  def eval_batch_size(self) -> int:
    """Global eval batch size (the ``eval_batch_size`` option overrides it)."""
    return self.option_values["eval_batch_size"] or self.config.eval_batch_size

  @property
  def default_batch_size(self) -> int:
    """Training batch size submissions use unless they choose their own."""
    return self.config.train_batch_size

  @property
  def reference_hparams(self) -> dict[str, Any]:
    """Tuned NadamW hyperparameters for this size (used when none are given)."""
    return dict(self.config.reference_hparams)

  # ----- data ------------------------------------------------------------------

  @property
  def requires_data_dir(self) -> bool:
    """Whether this size reads a dataset from disk (small sizes generate theirs)."""
    return self.size not in self.generated_sizes

  def dataset_dir(self, data_dir: str | None) -> str | None:
    """This workload's folder under the data root, ``DATA/<dataset>``."""
    if not data_dir or not self.requires_data_dir:
      return None
    return os.path.join(data_dir, self.dataset or self.name)

  def data_problem(self, dataset_dir: str) -> str | None:
    """What is missing in ``dataset_dir`` (None when ready), with how to fix it.

    Called by `check_data` before a run writes anything; it should be cheap
    (look for the prepared files, do not read them).
    """
    del dataset_dir
    return None

  def check_data(self, data_dir: str | None) -> None:
    """Raise `UsageError` unless this size's data is ready under ``data_dir``."""
    if not self.requires_data_dir:
      return
    if not data_dir:
      raise UsageError(
          f"workload {self.workload_id} reads its dataset from disk: pass the data "
          f"root (--data_dir=DIR, holding {self.dataset or self.name}/), or use "
          f"--size=small; prepare it with: algoperf-avg setup-data {self.name} "
          "--data_dir=DIR")
    if not os.path.isdir(data_dir):
      raise UsageError(f"data root {data_dir!r} (--data_dir) is not a folder")
    problem = self.data_problem(self.dataset_dir(data_dir))
    if problem:
      raise UsageError(f"workload {self.workload_id}: {problem}")

  @classmethod
  def setup_data(cls, data_dir: str, **kwargs: Any) -> str:
    """Prepare this workload's dataset under ``data_dir``; returns its folder.

    ``algoperf-avg setup-data NAME --data_dir=DIR [--manual_dir=...]`` calls
    it. Workloads whose data is generated have nothing to prepare.
    """
    del data_dir, kwargs
    raise UsageError(f"workload {cls.name} has no dataset to prepare "
                     "(its sizes generate their data)")

  @abc.abstractmethod
  def train_batches(
      self,
      data_rng: jax.Array,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
      start: Any = None,
  ) -> Iterator[Batch]:
    """Shuffled training batches of ``batch_size`` (this shard's part), forever.

    A stream that can resume returns a `kit.data.Resumable` (or any iterator
    with ``checkpoint(directory) -> state``) and continues from ``start``, a
    state it returned before, in O(1); otherwise ``start`` is None and the
    runner replays the batches taken.
    """

  @abc.abstractmethod
  def eval_batches(
      self,
      split: str,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
  ) -> Iterator[Batch]:
    """One pass over this shard of ``split``, in a fixed order.

    ``split`` is ``"eval_train"`` (the first `num_eval_train_examples`
    training examples), ``"validation"`` or ``"test"``. Batches hold at most
    ``batch_size`` examples; the engine pads them (or, for workloads that pack
    fixed-shape batches themselves, they carry a ``valid`` mask).
    """

  def example_batch(self, batch_size: int, data_dir: str | None = None) -> Batch:
    """One training batch of ``batch_size`` (its shapes drive `--dry_run`).

    The first batch of `train_batches`; workloads whose full size should
    report memory without data build one of the right shapes instead.
    """
    return next(iter(self.train_batches(jax.random.key(0), data_dir, batch_size)))

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
    """AlgoPerf's input queue: `train_batches` for ``"train"``, else `eval_batches`.

    Eval splits loop pass after pass (``repeat=False``: one pass).
    """
    if split == "train":
      batches = self.train_batches(data_rng, data_dir, global_batch_size)
    else:
      def one_pass(epoch: int = 0) -> Iterator[Batch]:
        del epoch
        return self.eval_batches(split, data_dir, global_batch_size)

      batches = itertools.chain.from_iterable(
          map(one_pass, itertools.count())) if repeat else one_pass()
    if num_batches is not None:
      batches = itertools.islice(batches, num_batches)
    return batches

  # ----- model ---------------------------------------------------------------

  @abc.abstractmethod
  def init_model_fn(self, rng: jax.Array) -> tuple[Params, ModelState]:
    """Fresh parameters and model state (batch statistics; may be empty).

    Pure (it runs under `jax.eval_shape` for `param_shapes`).
    """

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
    """Loss as ``{"summed", "n_valid_examples", "per_example"}`` (`kit.losses`).

    Submissions divide ``summed`` by ``n_valid_examples`` to get the mean.
    """

  def param_partition_specs(self) -> Any:
    """How to lay the params out on the mesh: None (replicated) or a tree of specs.

    A tree like the params of `jax.sharding.PartitionSpec` (or None per
    leaf) over the data axis ``"batch"``; e.g. Criteo shards its embedding
    table's rows. Model and optimizer state follow the params' layout.
    """
    return None

  @property
  def param_shapes(self) -> Any:
    """Pytree of `ShapeTuple` (AlgoPerf's), computed without allocating."""
    if self._param_shapes is None:
      params, _ = jax.eval_shape(self.init_model_fn, jax.random.key(0))
      self._param_shapes = jax.tree.map(lambda p: ShapeTuple(p.shape, p.dtype), params)
    return self._param_shapes

  def is_output_params(self, param_key: str) -> bool:
    """Whether ``param_key`` names the output layer (AlgoPerf's API).

    Workloads set ``output_params_key`` (the module name of their head).
    """
    return param_key == getattr(self, "output_params_key", None)

  @property
  def num_params(self) -> int:
    """Number of trainable parameters."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.param_shapes)))

  @property
  def model_params_types(self) -> Any:
    """Pytree of `ParameterType` by AlgoPerf's rules (computed once)."""
    if self._param_types is None:
      from algoperf_avg.kit import param_types

      self._param_types = param_types.parameter_types(self.param_shapes)
    return self._param_types

  # ----- evaluation ---------------------------------------------------------

  @abc.abstractmethod
  def eval_step(
      self,
      params: Params,
      model_state: ModelState,
      batch: Batch,
      rng: jax.Array,
      metrics: str = "all",
  ) -> Any:
    """Traced per-batch evaluation: an `evaluation.engine.EvalOutput`.

    ``batch`` is padded and has a per-example ``valid`` mask; sums must not
    count padding. ``metrics="target"`` may skip everything but the target
    metric.
    """

  @abc.abstractmethod
  def finalize_metrics(
      self,
      split: str,
      sums: Mapping[str, np.ndarray],
      per_example: Mapping[str, np.ndarray],
      metrics: str = "all",
  ) -> dict[str, float]:
    """Metrics of a whole split from the engine's totals (``loss`` included)."""

  @property
  def evaluator(self) -> Any:
    """The workload's `evaluation.engine.Evaluator` (jitted step, split cache)."""
    if self._evaluator is None:
      from algoperf_avg.evaluation import engine

      self._evaluator = engine.Evaluator(self)
    return self._evaluator

  def eval_model(
      self,
      global_batch_size: int,
      params: Params,
      model_state: ModelState,
      rng: jax.Array,
      data_dir: str | None,
      splits: tuple[str, ...] = ("train", "validation", "test"),
      metrics: str = "all",
  ) -> dict[str, float]:
    """Metrics on the eval splits, keyed ``"<split>/<metric>"``.

    ``train`` evaluates `num_eval_train_examples` training examples; ``test``
    is skipped when the workload has no test split. ``metrics="target"``
    computes only what the target needs (online-weight and post-hoc evals).
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
      values = self.evaluator.evaluate(
          split, params, model_state, rng, data_dir, global_batch_size, metrics)
      results.update({f"{prefix}/{k}": float(v) for k, v in values.items()})
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
        "step_budget": t.step_budget,
    }
