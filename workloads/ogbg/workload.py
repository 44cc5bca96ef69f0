"""OGBG: multi-task molecular property prediction with a graph network.

``full`` is AlgoPerf's ``ogbg`` workload: ogbg-molpcba (TFDS 0.1.3, 128
binary assays, mean average precision), its 3,554,176-parameter GNN, batch
budgets and example counts. ``small`` trains a narrower GNN on generated
molecule-like graphs whose labels mark planted substructures
(`workloads.ogbg.synthetic`); it needs no data and runs on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg import spec
from algoperf_avg.evaluation import engine
from algoperf_avg.kit import config, data, losses
from workloads.ogbg import input_pipeline, model, synthetic
from workloads.ogbg import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class OgbgConfig(config.SizeConfig):
  """The model and batching fields of one OGBG size."""

  num_tasks: int = 128
  latent_dim: int = 256
  hidden_dims: tuple[int, ...] = (256,)
  num_message_passing_steps: int = 5
  avg_nodes: int = input_pipeline.AVG_NODES_PER_GRAPH  # batch budget per graph
  avg_edges: int = input_pipeline.AVG_EDGES_PER_GRAPH


FULL = OgbgConfig(
    num_tasks=128, latent_dim=256, hidden_dims=(256,), num_message_passing_steps=5,
    num_train_examples=350_343, num_eval_train_examples=43_793,
    num_validation_examples=43_793, num_test_examples=43_793,
    eval_batch_size=32_768, train_batch_size=512,
    avg_nodes=input_pipeline.AVG_NODES_PER_GRAPH,
    avg_edges=input_pipeline.AVG_EDGES_PER_GRAPH,
    # AlgoPerf's NadamW baseline (external tuning, trial 5 of its search
    # space; the self-tuning baseline's HPARAMS): the only point that reached
    # the ogbg target in all five studies (~24k of 52k steps).
    reference_hparams={
        "learning_rate": 0.0017486387539278373,
        "one_minus_beta1": 0.06733926164,
        "beta2": 0.9955159689799007,
        "weight_decay": 0.08121616522670176,
        "warmup_factor": 0.02,
        "label_smoothing": 0.0,
        "dropout_rate": 0.1,
        "grad_clip": None,
    },
)

# One pass of fresh molecules per run (3,200 steps x 128 graphs, made block by
# block as they are read), labelled by planted noisy assays on every split
# (`synthetic.Config.label_model="logistic"`: each label a Bernoulli draw from
# a logistic readout of several easy substructure counts), and a GNN wide
# enough to learn them by mid-run. What remains is the gradient noise that
# annealing removes: a constant learning rate wobbles below where cosine ends,
# so the target rewards annealing (the calibration rule;
# results/calibration/README.md has the exploration).
SMALL_DATA = synthetic.Config(num_train=3_200 * 128, label_noise=0.0,
                              label_model="logistic")
SMALL = OgbgConfig(
    num_tasks=len(synthetic.TASKS), latent_dim=128, hidden_dims=(128,),
    num_message_passing_steps=3,
    num_train_examples=SMALL_DATA.num_train, num_eval_train_examples=2_048,
    num_validation_examples=SMALL_DATA.num_validation,
    num_test_examples=SMALL_DATA.num_test,
    eval_batch_size=1_024, train_batch_size=128,
    avg_nodes=synthetic.AVG_NODES_PER_GRAPH,
    avg_edges=synthetic.AVG_EDGES_PER_GRAPH,
    # Seed 0, 3,200 steps, warmup + cosine: peak lr 0.03 ends at validation
    # mAP 0.7793 (the planted assays' own scores give 0.783), while the
    # constant-LR run never passes 0.7672; at lr 0.012 both end near 0.778.
    reference_hparams={
        "learning_rate": 0.03,
        "one_minus_beta1": 0.1,
        "beta2": 0.99,
        "weight_decay": 0.01,
        "warmup_factor": 0.05,
        "label_smoothing": 0.0,
        "dropout_rate": 0.0,
        "grad_clip": None,
    },
)


class _WithCheckpoint:
  """An iterator that checkpoints through the stream it was made from."""

  def __init__(self, iterator: Iterator[Any], source: Any):
    self._iterator, self._source = iterator, source

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._iterator)

  def checkpoint(self, directory: str) -> Any:
    return self._source.checkpoint(directory)


@functools.lru_cache(maxsize=2)
def small_dataset(config: synthetic.Config = SMALL_DATA) -> synthetic.Dataset:
  """The generated dataset, built once per process (about a second)."""
  return synthetic.Dataset(config)


class OgbgWorkload(spec.Workload):
  """ogbg-molpcba (``full``) and generated molecules (``small``)."""

  name = "ogbg"
  sizes = ("full", "small")
  loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY
  configs = {"full": FULL, "small": SMALL}
  dataset = "ogbg"

  def __init__(self, size: str = "full", **options: Any):
    super().__init__(size, **options)
    self._model = model.GNN(
        num_outputs=self.config.num_tasks,
        latent_dim=self.config.latent_dim,
        hidden_dims=self.config.hidden_dims,
        num_message_passing_steps=self.config.num_message_passing_steps,
    )

  # ----- model ------------------------------------------------------------------

  def init_model_fn(self, rng: jax.Array) -> tuple[spec.Params, spec.ModelState]:
    """Parameters from a one-node, one-edge graph (AlgoPerf's init).

    The key is split first, as AlgoPerf's ogbg workload does, so a seed gives
    the same initial weights in both harnesses.
    """
    _, rng = jax.random.split(rng)
    graph = model.GraphsTuple(
        nodes=jnp.ones((1, 9)), edges=jnp.ones((1, 3)),
        senders=jnp.zeros((1,), jnp.int32), receivers=jnp.zeros((1,), jnp.int32),
        globals=None, n_node=jnp.ones((1,), jnp.int32),
        n_edge=jnp.ones((1,), jnp.int32),
    )
    variables = self._model.init({"params": rng}, graph, train=False)
    return variables["params"], {}

  def model_fn(
      self,
      params: spec.Params,
      batch: spec.Batch,
      model_state: spec.ModelState,
      mode: spec.ForwardPassMode,
      rng: jax.Array,
      update_batch_norm: bool,
      dropout_rate: float | None = None,
  ) -> tuple[jax.Array, spec.ModelState]:
    """Logits ``(graphs, tasks)``, padding graphs included; state unchanged."""
    del update_batch_norm  # No batch norm.
    train = mode == spec.ForwardPassMode.TRAIN
    if dropout_rate is None:
      dropout_rate = model.DROPOUT_RATE
    logits = self._model.apply(
        {"params": params}, batch["inputs"], train=train,
        dropout_rate=dropout_rate, rngs={"dropout": rng} if train else None,
    )
    return logits, model_state

  def loss_fn(
      self,
      label_batch: jax.Array,
      logits_batch: jax.Array,
      mask_batch: jax.Array | None = None,
      label_smoothing: float = 0.0,
  ) -> dict[str, jax.Array]:
    """Masked sigmoid cross-entropy over ``(graphs, tasks)``, as AlgoPerf's ogbg.

    ``n_valid_examples`` counts the valid (graph, task) labels, so
    ``summed / n_valid_examples`` is the mean over known labels; label
    smoothing is over the task axis.
    """
    return losses.sigmoid_cross_entropy(label_batch, logits_batch, mask_batch,
                                        label_smoothing)

  # ----- data -------------------------------------------------------------------

  def data_problem(self, dataset_dir: str) -> str | None:
    if input_pipeline.is_prepared(dataset_dir):
      return None
    return (f"no prepared {input_pipeline.TFDS_NAME}:{input_pipeline.TFDS_VERSION} "
            f"in {dataset_dir}; {input_pipeline.HOW_TO}")

  @classmethod
  def setup_data(cls, data_dir: str, **kwargs: Any) -> str:
    """Download and prepare ogbg-molpcba with tfds into ``DATA/ogbg``."""
    if kwargs:
      raise spec.UsageError(f"setup-data ogbg takes no options, got {sorted(kwargs)}")
    return input_pipeline.prepare(os.path.join(data_dir, cls.dataset))

  def _batches(self, examples, batch_size: int) -> Iterator[spec.Batch]:
    return input_pipeline.batch_examples(
        examples, batch_size,
        avg_nodes=self.config.avg_nodes, avg_edges=self.config.avg_edges,
    )

  def train_batches(
      self,
      data_rng: jax.Array,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
      start: Any = None,
  ) -> Iterator[spec.Batch]:
    """Shuffled padded graph batches, across epochs, resumable in O(1).

    The real data is shuffled by tfds (files) and a 2**15 buffer, each
    process reading its even share of the split (its position: TensorFlow's
    iterator checkpoint). The small data follows one global stream (a fresh
    permutation per epoch) that every process packs, keeping its part of each
    global batch: the same training run on any number of processes (its
    position: the stream offset).
    """
    def batcher(examples, pending=(), shard=(0, 1)):
      return input_pipeline.batch_examples(
          examples, batch_size, avg_nodes=self.config.avg_nodes,
          avg_edges=self.config.avg_edges, shard_index=shard[0], num_shards=shard[1],
          pending=pending)

    if self.size == "full":
      seed = data.seed_from_rng(jax.random.fold_in(data_rng, shard_index))
      dataset = input_pipeline.tfds_dataset(
          "train", self.dataset_dir(data_dir), shuffle_seed=seed, repeat=True,
          shard_index=shard_index, num_shards=num_shards)
      offset = shard_index  # this process's nodes follow the others'

      def global_nodes(stream):
        for b in stream:
          yield input_pipeline.offset_nodes(b, offset * b["inputs"].nodes.shape[0])

      stream = input_pipeline.TfdsTrainStream(dataset, batcher, start)
      return _WithCheckpoint(global_nodes(stream), stream)
    molecules = small_dataset().splits["train"]
    seed = data.seed_from_rng(data_rng)

    def make(position):
      first = position or 0  # examples of the global stream already batched
      order = data.block_epoch_order(len(molecules), molecules.block_size, seed,
                                     start=first)
      batches = batcher(map(molecules.example, order), shard=(shard_index, num_shards))
      for batch in batches:
        yield batch, first + batches.consumed

    return data.Resumable(make, start)

  def example_batch(self, batch_size: int, data_dir: str | None = None) -> spec.Batch:
    """A batch of the budget's shapes, from one generated molecule (no data read)."""
    del data_dir
    example = small_dataset().splits["train"].example(0)
    if self.size == "full":  # molpcba's 128 tasks
      example = dict(example, labels=np.zeros(self.config.num_tasks, np.float32))
    return next(iter(self._batches([example], batch_size)))

  def eval_batches(
      self,
      split: str,
      data_dir: str | None,
      batch_size: int,
      *,
      shard_index: int = 0,
      num_shards: int = 1,
  ) -> Iterator[spec.Batch]:
    """One ordered pass over this shard of ``split``, in fixed-shape batches.

    Each batch carries its ``valid`` graph mask; the last one is padded, so
    every example is seen exactly once.
    """
    if split not in input_pipeline.TFDS_SPLITS or split == "train":
      raise spec.UsageError(
          f"unknown eval split {split!r}; choose from eval_train, validation, test")
    num_examples = self.num_eval_train_examples if split == "eval_train" else None
    if self.size == "full":
      examples = input_pipeline.tfds_examples(
          split, self.dataset_dir(data_dir), num_examples=num_examples,
          shard_index=shard_index, num_shards=num_shards)
    else:
      molecules = small_dataset().splits["train" if split == "eval_train" else split]
      size = len(molecules) if num_examples is None else min(num_examples, len(molecules))
      start, stop = data.shard_bounds(size, shard_index, num_shards)
      examples = molecules.examples(np.arange(start, stop))
    for batch in self._batches(examples, batch_size):
      # Shards of one global batch: this process's nodes come after the others'.
      nodes = batch["inputs"].nodes.shape[0]
      yield input_pipeline.offset_nodes(batch, shard_index * nodes)

  # ----- evaluation ---------------------------------------------------------------

  def eval_step(
      self,
      params: spec.Params,
      model_state: spec.ModelState,
      batch: spec.Batch,
      rng: jax.Array,
      metrics: str = "all",
  ) -> engine.EvalOutput:
    """Summed loss, label count and correct signs; logits, labels, mask for the mAP."""
    del rng, metrics  # deterministic; the mAP needs the same pass as the loss
    logits, _ = self.model_fn(
        params, batch, model_state, spec.ForwardPassMode.EVAL, None,
        update_batch_norm=False,
    )
    loss = self.loss_fn(batch["targets"], logits, batch["weights"])
    # AlgoPerf's accuracy: known labels where the logit's sign is right.
    correct = ((logits > 0) == (batch["targets"] > 0.5)) * batch["weights"]
    return engine.EvalOutput(
        sums={"loss": loss["summed"], "num_labels": loss["n_valid_examples"],
              "correct": correct.sum()},
        per_example={"logits": logits, "targets": batch["targets"],
                     "weights": batch["weights"]},
    )

  def finalize_metrics(
      self,
      split: str,
      sums: Mapping[str, np.ndarray],
      per_example: Mapping[str, np.ndarray],
      metrics: str = "all",
  ) -> dict[str, float]:
    """Mean average precision over the whole split, the mean loss and accuracy.

    The mAP is computed once over all graphs of the split (padding graphs
    dropped; missing labels have weight 0 and do not count).
    """
    del split, metrics
    return {
        "mean_average_precision": metrics_lib.mean_average_precision(
            per_example["logits"], per_example["targets"], per_example["weights"]),
        "loss": float(sums["loss"]) / max(float(sums["num_labels"]), 1.0),
        "accuracy": float(sums["correct"]) / max(float(sums["num_labels"]), 1.0),
    }
