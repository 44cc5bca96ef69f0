"""ogbg-molpcba examples -> padded graph batches, as in AlgoPerf.

An *example* is one molecule in the TFDS ``ogbg_molpcba:0.1.3`` format, a
mapping of numpy arrays::

  node_feat  (n, 9) float32      edge_feat  (m, 3) float32
  edge_index (m, 2) int64        labels     (tasks,) float32, NaN = missing
  num_nodes  (1,) int64          num_edges  (1,) int64

Each bond is stored once; batching adds the reverse edge. Batches are built
by dynamic batching (greedily add graphs while they fit) and padded to fixed
budgets of ``avg_nodes * b + 1`` nodes, ``avg_edges * b`` edges and ``b + 1``
graphs for ``b`` graphs per device, so every batch has the same shapes and a
jitted step compiles once. The extra node and graph hold the padding: one
padding graph owns all padding nodes and edges, and every padding graph has
weight 0. With several devices, one such batch is built per device and they
are concatenated, so each leading dimension splits evenly across devices.

The same code batches the real TFDS data (`tfds_examples`) and the small
variant's generated molecules (`workloads.ogbg.synthetic`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from algoperf_avg import spec
from algoperf_avg.kit import data
from workloads.ogbg.model import GraphsTuple

TFDS_NAME = "ogbg_molpcba"
TFDS_VERSION = "0.1.3"
# Budgets per graph in a batch: molpcba's mean nodes and directed edges.
AVG_NODES_PER_GRAPH = 26
AVG_EDGES_PER_GRAPH = 56
SHUFFLE_BUFFER_SIZE = 2**15
HOW_TO = data.prepare_how_to("ogbg", "--data_dir=DATA")
TFDS_SPLITS = {
    "train": "train",
    "eval_train": "train",
    "validation": "validation",
    "test": "test",
}

Example = Mapping[str, np.ndarray]
Batch = dict[str, Any]


class Graph(NamedTuple):
  """One molecule with edges in both directions and its raw labels."""

  nodes: np.ndarray  # (n, node_features)
  edges: np.ndarray  # (2m, edge_features)
  senders: np.ndarray  # (2m,)
  receivers: np.ndarray  # (2m,)
  labels: np.ndarray  # (tasks,), NaN where missing


class Budget(NamedTuple):
  """Fixed sizes of one device's padded batch."""

  nodes: int
  edges: int
  graphs: int


def example_to_graph(example: Example) -> Graph:
  """Converts a TFDS-format example, adding the reverse of every edge."""
  edge_index = np.asarray(example["edge_index"])
  edge_feat = np.asarray(example["edge_feat"], np.float32)
  return Graph(
      nodes=np.asarray(example["node_feat"], np.float32),
      edges=np.concatenate([edge_feat, edge_feat]),
      senders=np.concatenate([edge_index[:, 0], edge_index[:, 1]]),
      receivers=np.concatenate([edge_index[:, 1], edge_index[:, 0]]),
      labels=np.asarray(example["labels"], np.float32),
  )


def budget_for(
    graphs_per_device: int,
    avg_nodes: int = AVG_NODES_PER_GRAPH,
    avg_edges: int = AVG_EDGES_PER_GRAPH,
) -> Budget:
  """AlgoPerf's budget for ``graphs_per_device`` average-sized graphs."""
  if graphs_per_device < 1:
    raise ValueError(f"need at least one graph per device, got {graphs_per_device}")
  return Budget(
      nodes=avg_nodes * graphs_per_device + 1,
      edges=avg_edges * graphs_per_device,
      graphs=graphs_per_device + 1,
  )


def _fits(nodes: int, edges: int, graphs: int, budget: Budget) -> bool:
  # One node and one graph are always left for padding.
  return nodes < budget.nodes and edges <= budget.edges and graphs < budget.graphs


def pack_graphs(graphs: Sequence[Graph], budget: Budget) -> Batch:
  """One padded batch: ``{"inputs": GraphsTuple, "targets", "weights", "valid"}``.

  ``targets`` and ``weights`` are ``(budget.graphs, tasks)``: missing labels
  read 0 with weight 0, and the padding graphs have weight 0 throughout.
  ``valid`` is ``(budget.graphs,)``, 1 for real graphs (the evaluation
  engine's per-example mask; these batches come padded to fixed shapes).
  """
  if not graphs:
    raise ValueError("pack_graphs needs at least one graph")
  num_nodes = np.array([g.nodes.shape[0] for g in graphs])
  num_edges = np.array([g.senders.shape[0] for g in graphs])
  real_nodes, real_edges, real_graphs = num_nodes.sum(), num_edges.sum(), len(graphs)
  if not _fits(real_nodes, real_edges, real_graphs, budget):
    raise ValueError(f"{real_graphs} graphs do not fit the budget {budget}")

  nodes = np.zeros((budget.nodes, graphs[0].nodes.shape[1]), np.float32)
  nodes[:real_nodes] = np.concatenate([g.nodes for g in graphs])
  edges = np.zeros((budget.edges, graphs[0].edges.shape[1]), np.float32)
  edges[:real_edges] = np.concatenate([g.edges for g in graphs])
  # Padding edges connect the first padding node to itself, as in jraph.
  senders = np.full(budget.edges, real_nodes, np.int32)
  receivers = np.full(budget.edges, real_nodes, np.int32)
  node_offsets = np.repeat(np.cumsum(num_nodes) - num_nodes, num_edges)
  senders[:real_edges] = np.concatenate([g.senders for g in graphs]) + node_offsets
  receivers[:real_edges] = (
      np.concatenate([g.receivers for g in graphs]) + node_offsets
  )
  n_node = np.zeros(budget.graphs, np.int32)
  n_node[:real_graphs] = num_nodes
  n_node[real_graphs] = budget.nodes - real_nodes
  n_edge = np.zeros(budget.graphs, np.int32)
  n_edge[:real_graphs] = num_edges
  n_edge[real_graphs] = budget.edges - real_edges

  labels = np.stack([g.labels for g in graphs])
  known = ~np.isnan(labels)
  targets = np.zeros((budget.graphs, labels.shape[1]), np.float32)
  targets[:real_graphs] = np.where(known, labels, 0.0)
  weights = np.zeros_like(targets)
  weights[:real_graphs] = known
  valid = np.zeros(budget.graphs, np.float32)
  valid[:real_graphs] = 1.0
  return {
      "inputs": GraphsTuple(
          nodes=nodes, edges=edges, senders=senders, receivers=receivers,
          globals=None, n_node=n_node, n_edge=n_edge,
      ),
      "targets": targets,
      "weights": weights,
      "valid": valid,
  }


def _padding_only(like: Batch) -> Batch:
  """A batch shaped like ``like`` that holds nothing but padding."""
  graph = like["inputs"]
  n_node = np.zeros_like(graph.n_node)
  n_node[0] = graph.nodes.shape[0]
  n_edge = np.zeros_like(graph.n_edge)
  n_edge[0] = graph.senders.shape[0]
  return {
      "inputs": GraphsTuple(
          nodes=np.zeros_like(graph.nodes), edges=np.zeros_like(graph.edges),
          senders=np.zeros_like(graph.senders),
          receivers=np.zeros_like(graph.receivers),
          globals=None, n_node=n_node, n_edge=n_edge,
      ),
      "targets": np.zeros_like(like["targets"]),
      "weights": np.zeros_like(like["weights"]),
      "valid": np.zeros_like(like["valid"]),
  }


def concat_batches(batches: Sequence[Batch]) -> Batch:
  """Concatenates per-device batches into one (node indices offset)."""
  offsets = np.cumsum([0] + [b["inputs"].nodes.shape[0] for b in batches[:-1]])
  graphs = [b["inputs"] for b in batches]
  cat = np.concatenate
  return {
      "inputs": GraphsTuple(
          nodes=cat([g.nodes for g in graphs]),
          edges=cat([g.edges for g in graphs]),
          senders=cat([g.senders + o for g, o in zip(graphs, offsets, strict=True)]),
          receivers=cat(
              [g.receivers + o for g, o in zip(graphs, offsets, strict=True)]
          ),
          globals=None,
          n_node=cat([g.n_node for g in graphs]),
          n_edge=cat([g.n_edge for g in graphs]),
      ),
      "targets": cat([b["targets"] for b in batches]),
      "weights": cat([b["weights"] for b in batches]),
      "valid": cat([b["valid"] for b in batches]),
  }


class GraphBatches:
  """Padded graph batches of a stream of examples (see `batch_examples`).

  Graphs are grouped greedily in stream order: a device's group is closed as
  soon as the next graph does not fit its budget (jraph's
  ``dynamically_batch``), and that graph opens the next group. The iterator
  counts the examples in the batches it has yielded (``consumed``) and keeps
  the one it read ahead (``pending``), so a stream can restart right after
  its last batch.
  """

  def __init__(self, examples: Iterable[Example], budget: Budget, num_devices: int,
               shard_index: int = 0, num_shards: int = 1,
               pending: Sequence[Example] = ()):
    self._examples = iter(examples)
    self.pending = list(pending)  # read from the stream, in no batch yet
    self.budget = budget
    self.num_devices = num_devices
    self.shard_index = shard_index
    self.num_shards = num_shards
    self.consumed = 0

  def __iter__(self) -> GraphBatches:
    return self

  def _take(self) -> Example | None:
    return self.pending.pop(0) if self.pending else next(self._examples, None)

  def _group(self) -> list[Graph]:
    group: list[Graph] = []
    nodes = edges = 0
    while (example := self._take()) is not None:
      graph = example_to_graph(example)
      n, e = graph.nodes.shape[0], graph.senders.shape[0]
      if not _fits(n, e, 1, self.budget):
        raise ValueError(
            f"a graph with {n} nodes and {e} edges does not fit a batch budget of "
            f"{self.budget}; use a larger batch size")
      if group and not _fits(nodes + n, edges + e, len(group) + 1, self.budget):
        self.pending.insert(0, example)
        break
      group.append(graph)
      nodes += n
      edges += e
    return group

  def __next__(self) -> Batch:
    per_step = self.num_devices * self.num_shards
    groups = []
    while len(groups) < per_step and (group := self._group()):
      groups.append(group)
    if not groups:
      raise StopIteration
    self.consumed += sum(len(g) for g in groups)
    device_batches = [pack_graphs(g, self.budget) for g in groups]
    if per_step == 1:
      return device_batches[0]
    device_batches += [_padding_only(device_batches[0])] * (per_step - len(device_batches))
    batch = concat_batches(device_batches)
    if self.num_shards > 1:  # node indices stay global: this shard's rows of the whole
      batch = jax.tree.map(lambda x: np.split(x, self.num_shards)[self.shard_index], batch)
    return batch


def batch_examples(
    examples: Iterable[Example],
    batch_size: int,
    *,
    avg_nodes: int = AVG_NODES_PER_GRAPH,
    avg_edges: int = AVG_EDGES_PER_GRAPH,
    num_devices: int | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    pending: Sequence[Example] = (),
) -> GraphBatches:
  """Padded batches of about ``batch_size`` graphs from ``examples``.

  Args:
    examples: TFDS-format examples, in the order to batch them.
    batch_size: average-sized graphs per batch on this process's devices.
    avg_nodes: node budget per graph (26 for molpcba).
    avg_edges: directed-edge budget per graph (56 for molpcba).
    num_devices: per-device batches to concatenate; defaults to
      `jax.local_device_count()`.
    shard_index: with ``num_shards > 1``, ``examples`` is the global stream:
      each global batch is packed as ``num_shards * num_devices`` device
      batches, of which this shard keeps its own ``num_devices``, so the
      global batch is the same whatever the number of processes.
    num_shards: the number of processes sharing the global stream.
    pending: examples read ahead by an earlier stream (a resumed one).

  Returns:
    A `GraphBatches` iterator of batches whose arrays all have the same
    shapes; when ``examples`` ends the last batch is padded (and completed
    with padding-only device batches), so every example appears exactly once.
  """
  num_devices = num_devices or jax.local_device_count()
  budget = budget_for(batch_size // num_devices, avg_nodes, avg_edges)
  return GraphBatches(examples, budget, num_devices, shard_index, num_shards, pending)


def offset_nodes(batch: Batch, offset: int) -> Batch:
  """``batch`` with its edges' node indices moved up by ``offset``.

  A process's batch is one part of a global batch whose node array is the
  concatenation of every process's part, so a process whose part starts at
  node ``offset`` must index nodes from there.
  """
  if not offset:
    return batch
  graph = batch["inputs"]
  return dict(batch, inputs=graph._replace(senders=graph.senders + offset,
                                           receivers=graph.receivers + offset))


def tfds_dataset(
    split: str,
    dataset_dir: str,
    *,
    shuffle_seed: int | None = None,
    num_examples: int | None = None,
    repeat: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Any:
  """Examples of ``ogbg_molpcba:0.1.3`` from a prepared TFDS folder (`tf.data`).

  Args:
    split: "train", "eval_train" (the train split), "validation" or "test".
    dataset_dir: the TFDS data directory holding ``ogbg_molpcba/0.1.3``
      (``DATA/ogbg``).
    shuffle_seed: shuffle files and examples (2**15 buffer) with this seed;
      None reads in the stored order.
    num_examples: read only the first ``num_examples`` (before sharding and
      shuffling).
    repeat: loop over the split forever (reshuffled each epoch).
    shard_index: this process's shard of the split.
    num_shards: the number of processes reading it.

  Raises:
    spec.UsageError: no prepared dataset in ``dataset_dir``.
  """
  if split not in TFDS_SPLITS:
    raise spec.UsageError(f"unknown split {split!r}; choose from {list(TFDS_SPLITS)}")
  dataset = data.tfds_split(
      f"{TFDS_NAME}:{TFDS_VERSION}", dataset_dir, TFDS_SPLITS[split], how_to=HOW_TO,
      shuffle_seed=shuffle_seed, num_examples=num_examples, shard_index=shard_index,
      num_shards=num_shards,
  )
  if shuffle_seed is not None:
    dataset = dataset.shuffle(SHUFFLE_BUFFER_SIZE, seed=shuffle_seed)
  if repeat:
    dataset = dataset.repeat()
  return dataset


def tfds_examples(split: str, dataset_dir: str, **kwargs: Any) -> Iterator[Example]:
  """`tfds_dataset` iterated as numpy examples."""
  return data.tfds_numpy(tfds_dataset(split, dataset_dir, **kwargs))


def encode_example(example: Example) -> dict[str, Any]:
  """An example as JSON (for a read-ahead example kept in a checkpoint)."""
  return {k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v)),
              "values": np.asarray(v).ravel().tolist()} for k, v in example.items()}


def decode_example(encoded: Mapping[str, Any]) -> Example:
  """The inverse of `encode_example` (NaN labels survive as null -> nan)."""
  return {k: np.asarray([np.nan if x is None else x for x in v["values"]],
                        v["dtype"]).reshape(v["shape"]) for k, v in encoded.items()}


class TfdsTrainStream:
  """Training batches of the real data that checkpoint their exact position.

  The state is TensorFlow's iterator checkpoint of the shuffled example
  stream plus the one example read ahead by the batcher, so a resumed run
  continues with the very next batch, in O(1).
  """

  def __init__(self, dataset: Any, batcher: Any, start: Mapping[str, Any] | None):
    self._examples = data.TfCheckpointed(dataset, start["tf"] if start else None)
    pending = [decode_example(e) for e in start["pending"]] if start else ()
    self._batches = batcher(self._examples, pending)

  def __iter__(self) -> TfdsTrainStream:
    return self

  def __next__(self) -> Batch:
    return next(self._batches)

  def checkpoint(self, directory: str) -> dict[str, Any]:
    prefix = self._examples.save(os.path.join(directory, "ogbg_train"))
    return {"tf": prefix, "pending": [encode_example(e) for e in self._batches.pending]}


def is_prepared(dataset_dir: str) -> bool:
  """Whether ``dataset_dir`` holds a prepared ``ogbg_molpcba:0.1.3`` (cheap check)."""
  return os.path.isfile(
      os.path.join(dataset_dir, TFDS_NAME, TFDS_VERSION, "dataset_info.json"))


def prepare(dataset_dir: str) -> str:
  """Download and prepare ``ogbg_molpcba:0.1.3`` into ``dataset_dir`` (tfds)."""
  import tensorflow_datasets as tfds

  builder = tfds.builder(f"{TFDS_NAME}:{TFDS_VERSION}", data_dir=dataset_dir)
  builder.download_and_prepare()
  return os.path.join(dataset_dir, TFDS_NAME, TFDS_VERSION)
