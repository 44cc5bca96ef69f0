"""Tests of ogbg batching, the TFDS reader and the generated small dataset."""

from __future__ import annotations

import collections
import dataclasses
import math

import jax
import numpy as np
import pytest

from algoperf_avg import spec
from tests import workload_data
from workloads.ogbg import input_pipeline, synthetic
from workloads.ogbg.workload import OgbgWorkload, small_dataset

TFDS_SPLIT_SIZES = workload_data.OGBG_SPLIT_SIZES


def _molecule(num_nodes: int, bonds: list[tuple[int, int]], labels) -> dict:
  return {
      "node_feat": np.arange(num_nodes * 9, dtype=np.float32).reshape(num_nodes, 9),
      "edge_feat": np.arange(len(bonds) * 3, dtype=np.float32).reshape(-1, 3),
      "edge_index": np.array(bonds, np.int64).reshape(-1, 2),
      "labels": np.asarray(labels, np.float32),
      "num_nodes": np.array([num_nodes]),
      "num_edges": np.array([len(bonds)]),
  }


def _chain(num_nodes: int, graph_id: float, tasks: int = 3) -> dict:
  labels = np.zeros(tasks)
  labels[-1] = graph_id  # identifies the graph in batches
  return _molecule(num_nodes, [(i, i + 1) for i in range(num_nodes - 1)], labels)


# ----- batching ----------------------------------------------------------------


def test_example_to_graph_adds_reverse_edges():
  graph = input_pipeline.example_to_graph(_molecule(3, [(0, 1), (1, 2)], [1, np.nan]))
  np.testing.assert_array_equal(graph.senders, [0, 1, 1, 2])
  np.testing.assert_array_equal(graph.receivers, [1, 2, 0, 1])
  np.testing.assert_array_equal(graph.edges[:2], graph.edges[2:])
  assert graph.nodes.shape == (3, 9)


def test_pack_graphs_pads_like_jraph():
  budget = input_pipeline.budget_for(2)  # 53 nodes, 112 edges, 3 graphs
  assert budget == input_pipeline.Budget(53, 112, 3)
  graphs = [
      input_pipeline.example_to_graph(_molecule(3, [(0, 1), (1, 2)], [1, np.nan])),
      input_pipeline.example_to_graph(_molecule(2, [(1, 0)], [0, 1])),
  ]
  batch = input_pipeline.pack_graphs(graphs, budget)
  g = batch["inputs"]
  assert g.nodes.shape == (53, 9) and g.edges.shape == (112, 3)
  np.testing.assert_array_equal(g.n_node, [3, 2, 48])
  np.testing.assert_array_equal(g.n_edge, [4, 2, 106])
  # Second graph's nodes are offset by the first graph's 3 nodes.
  np.testing.assert_array_equal(g.senders[4:6], [4, 3])
  np.testing.assert_array_equal(g.receivers[4:6], [3, 4])
  assert np.all(g.senders[6:] == 5) and np.all(g.receivers[6:] == 5)
  np.testing.assert_array_equal(g.nodes[3:5], graphs[1].nodes)
  assert not g.nodes[5:].any()
  np.testing.assert_array_equal(batch["targets"], [[1, 0], [0, 1], [0, 0]])
  np.testing.assert_array_equal(batch["weights"], [[1, 0], [1, 1], [0, 0]])
  assert g.globals is None
  assert g.senders.dtype == np.int32 and g.n_node.dtype == np.int32


def test_dynamic_batching_keeps_order_and_budget():
  examples = [_chain(int(n), i) for i, n in enumerate([20, 30, 5, 40, 26, 1, 12] * 3)]
  batches = list(input_pipeline.batch_examples(examples, 2, num_devices=1))
  budget = input_pipeline.budget_for(2)
  seen = []
  for batch in batches:
    g = batch["inputs"]
    assert g.nodes.shape[0] == budget.nodes and g.senders.shape[0] == budget.edges
    assert g.n_node.sum() == budget.nodes and g.n_edge.sum() == budget.edges
    real = batch["weights"][:, 0] > 0
    assert real.sum() <= 2
    assert batch["weights"][-1].sum() == 0  # the padding graph
    seen += list(batch["targets"][real, -1])
  assert seen == list(range(len(examples)))


def test_graph_larger_than_budget_is_an_error():
  with pytest.raises(ValueError, match="larger batch size"):
    list(input_pipeline.batch_examples([_chain(30, 0)], 1, num_devices=1))


def test_multi_device_batches_concatenate_shards():
  examples = [_chain(5, i) for i in range(5)]
  batches = list(input_pipeline.batch_examples(examples, 4, num_devices=2))
  budget = input_pipeline.budget_for(2)
  for batch in batches:
    g = batch["inputs"]
    assert g.nodes.shape[0] == 2 * budget.nodes
    assert g.n_node.shape[0] == 2 * budget.graphs
    # Each device's edges stay within its own nodes.
    half = budget.edges
    assert g.senders[:half].max() < budget.nodes
    assert g.senders[half:].min() >= budget.nodes
  ids = np.concatenate([b["targets"][b["weights"][:, 0] > 0, -1] for b in batches])
  np.testing.assert_array_equal(ids, range(5))
  # 5 graphs = 3 device batches; the last one is padding only.
  last = batches[-1]
  assert last["weights"][budget.graphs :].sum() == 0


# ----- the real TFDS format ------------------------------------------------------


@pytest.fixture(scope="module")
def tfds_data(tmp_path_factory):
  """A prepared ogbg_molpcba:0.1.3 (real TFRecords) of generated molecules."""
  root = str(tmp_path_factory.mktemp("data"))
  return root, workload_data.write_ogbg(root)


def _ids(batches) -> list[int]:
  return [
      int(i) for b in batches for i in b["targets"][b["weights"][:, -1] > 0, -1]
  ]


def test_tfds_split_is_read_exactly_once_in_fixed_shapes(tfds_data):
  data_dir, examples = tfds_data
  workload = OgbgWorkload("full")
  batches = list(workload.build_input_queue(
      jax.random.key(0), "validation", data_dir, 8, repeat=False
  ))
  assert sorted(_ids(batches)) == list(range(TFDS_SPLIT_SIZES["validation"]))
  shapes = {jax.tree.map(np.shape, b)["inputs"] for b in batches}
  assert len(shapes) == 1
  g = batches[0]["inputs"]
  assert g.nodes.shape == (26 * 8 + 1, 9) and g.edges.shape == (56 * 8, 3)
  assert batches[0]["targets"].shape == (9, 128)
  # Features and both edge directions survive the TFRecord round trip.
  real_nodes = sum(int(b["inputs"].n_node[:-1][b["weights"][:-1, -1] > 0].sum())
                   for b in batches)
  assert real_nodes == sum(len(e["node_feat"]) for e in examples["validation"])
  first = examples["validation"][_ids(batches[:1])[0]]
  np.testing.assert_array_equal(g.nodes[: len(first["node_feat"])], first["node_feat"])
  assert g.n_edge[0] == 2 * len(first["edge_index"])
  known = ~np.isnan(first["labels"])
  np.testing.assert_array_equal(batches[0]["weights"][0], known)


def test_tfds_train_is_shuffled_repeated_and_seeded(tfds_data):
  data_dir, _ = tfds_data
  workload = OgbgWorkload("full")

  def first_ids(seed, num_batches=12):
    return _ids(workload.build_input_queue(
        jax.random.key(seed), "train", data_dir, 4, num_batches=num_batches
    ))

  ids = first_ids(0)
  assert len(ids) > TFDS_SPLIT_SIZES["train"]  # crossed into a second epoch
  first_epoch = ids[: TFDS_SPLIT_SIZES["train"]]
  assert sorted(first_epoch) == list(range(TFDS_SPLIT_SIZES["train"]))
  assert first_epoch != sorted(first_epoch)
  assert first_ids(0) == ids
  assert first_ids(1) != ids


def test_full_eval_on_tfds_data(tfds_data):
  data_dir, _ = tfds_data
  workload = OgbgWorkload("full", eval_batch_size=16)
  workload.check_data(data_dir)  # prepared: no error
  params, state = workload.init_model_fn(jax.random.key(0))
  result = workload.eval_model(16, params, state, None, data_dir,
                               splits=("validation",))
  assert set(result) == {"validation/mean_average_precision", "validation/loss",
                         "validation/accuracy"}
  # The fixture's last task column holds example ids (to track each graph),
  # not 0/1 labels, so its AP is not bounded by 1: only finiteness is checked.
  assert math.isfinite(result["validation/mean_average_precision"])
  assert 0 < result["validation/loss"] < 10
  again = workload.eval_model(16, params, state, None, data_dir, splits=("validation",))
  assert again == result


def test_missing_or_unprepared_data_is_a_usage_error(tmp_path):
  workload = OgbgWorkload("full")
  with pytest.raises(spec.UsageError, match="setup-data ogbg"):
    workload.check_data(None)
  with pytest.raises(spec.UsageError, match="no prepared ogbg_molpcba"):
    workload.check_data(str(tmp_path))
  # The reader says the same when called directly.
  with pytest.raises(spec.UsageError, match="no prepared ogbg_molpcba"):
    next(workload.build_input_queue(jax.random.key(0), "validation", str(tmp_path), 8))


# ----- the generated small dataset ---------------------------------------------------


def _adjacency(example) -> list[set[int]]:
  neighbours = [set() for _ in range(len(example["node_feat"]))]
  for u, v in example["edge_index"]:
    neighbours[u].add(int(v))
    neighbours[v].add(int(u))
  return neighbours


def _connected(neighbours, start, goal, skip_edge) -> int | None:
  """Shortest path length from start to goal avoiding one edge (BFS)."""
  distance, frontier = {start: 0}, [start]
  while frontier:
    nxt = []
    for u in frontier:
      for v in neighbours[u]:
        if {u, v} == set(skip_edge) or v in distance:
          continue
        distance[v] = distance[u] + 1
        nxt.append(v)
    frontier = nxt
  return distance.get(goal)


def _independent_labels(example) -> dict[str, bool]:
  """Some tasks recomputed from the stored features alone."""
  atom = example["node_feat"][:, 0]
  neighbours = _adjacency(example)
  ring_sizes, ring_atoms = set(), set()
  for u, v in example["edge_index"]:
    path = _connected(neighbours, int(u), int(v), (u, v))
    if path is not None:
      ring_sizes.add(path + 1)
      ring_atoms |= {int(u), int(v)}
  bond_type = {
      frozenset((int(u), int(v))): t
      for (u, v), t in zip(
          example["edge_index"], example["edge_feat"][:, 0], strict=True
      )
  }

  def bond(a, b, kind):
    return any(
        t == kind and sorted(atom[list(pair)]) == sorted([a, b])
        for pair, t in bond_type.items()
    )

  cyclomatic = len(example["edge_index"]) - len(atom) + 1
  return {
      "has Cl": bool(np.any(atom == 16)),
      ">=3 N": int(np.sum(atom == 6)) >= 3,
      "C=O": bond(5, 7, 1),
      "C#N": bond(5, 6, 2),
      "aromatic ring": bool(np.any(example["edge_feat"][:, 0] == 3)),
      "3-ring": 3 in ring_sizes,
      "5-ring": 5 in ring_sizes,
      "6-ring": 6 in ring_sizes,
      ">=2 rings": cyclomatic >= 2,
      "N in ring": any(atom[i] == 6 for i in ring_atoms),
      "N-X-N": any(sum(atom[v] == 6 for v in n) >= 2 for n in neighbours),
      "_ring atoms": ring_atoms,
  }


def test_generated_molecules_are_valid_and_labels_are_exact():
  config = synthetic.Config(label_noise=0.0, missing_rate=0.0)
  molecules = synthetic.generate(150, config, np.random.default_rng(3))
  positives = collections.Counter()
  for i in range(len(molecules)):
    example = molecules.example(i)
    n = len(example["node_feat"])
    assert config.min_nodes <= n <= config.max_nodes
    u, v = example["edge_index"].T
    assert np.all(u != v) and u.max() < n and v.max() < n
    assert len({frozenset(e) for e in example["edge_index"].tolist()}) == len(u)
    neighbours = _adjacency(example)
    assert _connected(neighbours, 0, n - 1, (-1, -1)) is not None
    np.testing.assert_array_equal(
        example["node_feat"][:, 2], [len(nb) for nb in neighbours]
    )
    expected = _independent_labels(example)
    in_ring = np.flatnonzero(example["node_feat"][:, 8])
    assert set(in_ring.tolist()) == expected.pop("_ring atoms")
    for task, value in expected.items():
      assert example["labels"][synthetic.TASKS.index(task)] == value, (i, task)
      positives[task] += value
  assert all(0 < positives[t] < 150 for t in expected)


def test_generated_dataset_is_deterministic_with_noise_and_missing_labels():
  config = synthetic.Config(num_train=3000, num_validation=10, num_test=10, seed=5,
                            block_size=1000)
  first, second = synthetic.Dataset(config), synthetic.Dataset(config)
  train = first.splits["train"]
  assert len(train) == 3000
  # Blocks are the same whatever order they are made in.
  late = second.splits["train"]
  np.testing.assert_array_equal(late.block(2).node_feat, train.block(2).node_feat)
  np.testing.assert_array_equal(late.block(0).labels, train.block(0).labels)
  np.testing.assert_array_equal(train.example(2999)["node_feat"],
                                train.block(2).example(999)["node_feat"])
  assert not np.array_equal(train.block(1).labels, train.block(0).labels)
  other = synthetic.Dataset(dataclasses.replace(config, seed=6)).splits["train"]
  assert not np.array_equal(other.example(0)["node_feat"], train.example(0)["node_feat"])
  block = train.block(0)
  assert np.isnan(block.labels).mean() == pytest.approx(config.missing_rate, abs=0.01)
  noiseless = synthetic.generate(
      1000, dataclasses.replace(config, label_noise=0.0, missing_rate=0.0),
      np.random.default_rng([5, 0, 0]),
  )
  np.testing.assert_array_equal(noiseless.node_feat, block.node_feat)
  known = ~np.isnan(block.labels)
  flipped = block.labels[known] != noiseless.labels[known]
  assert flipped.mean() == pytest.approx(config.label_noise, abs=0.01)
  with pytest.raises(ValueError, match="multiple of block_size"):
    synthetic.Config(num_train=3000, block_size=2048)


def test_graded_labels_grow_with_the_substructure_count():
  """p = f + (1 - 2f)(1 - 2^-k): with f = 0, never without the substructure,
  half the graphs with one carbonyl carbon (C=O), 3/4 with two."""
  config = synthetic.Config(label_noise=0.0, missing_rate=0.0, label_model="graded")
  graded = synthetic.generate(6000, config, np.random.default_rng(4))
  exact = synthetic.generate(6000, dataclasses.replace(config, label_model="flip"),
                             np.random.default_rng(4))
  np.testing.assert_array_equal(graded.node_feat, exact.node_feat)
  assert np.all(graded.labels[exact.labels == 0] == 0)
  task = synthetic.TASKS.index("C=O")
  carbonyls = np.zeros(len(graded), int)
  for i in range(len(graded)):
    example = graded.example(i)
    atoms = example["node_feat"][:, 0][example["edge_index"]]  # (bonds, 2)
    double = example["edge_feat"][:, 0] == synthetic.DOUBLE
    carbon, oxygen = synthetic.ATOMIC_NUMBER_FEATURE[[synthetic.CARBON, synthetic.OXYGEN]]
    c_o = ((atoms[:, 0] == carbon) & (atoms[:, 1] == oxygen)) | (
        (atoms[:, 0] == oxygen) & (atoms[:, 1] == carbon))
    carbonyls[i] = np.sum(double & c_o)  # C=O bonds (a carbon with two: rare)
  labels = graded.labels[:, task]
  assert np.all(exact.labels[:, task] == (carbonyls > 0))
  assert labels[carbonyls == 1].mean() == pytest.approx(0.5, abs=0.04)
  assert labels[carbonyls == 2].mean() == pytest.approx(0.75, abs=0.06)
  assert labels[carbonyls == 0].sum() == 0


def test_logistic_labels_are_calibrated_readouts_of_the_planted_assays():
  """Label frequencies follow sigmoid(w_t . min(k, 3) + b_t) on the easy counts;
  the graphs themselves are those of the other label models."""
  config = synthetic.Config(label_noise=0.0, missing_rate=0.0, label_model="logistic")
  assays = synthetic.generate(8000, config, np.random.default_rng(7))
  exact = synthetic.generate(8000, dataclasses.replace(config, label_model="flip"),
                             np.random.default_rng(7))
  np.testing.assert_array_equal(assays.node_feat, exact.node_feat)
  counts = synthetic._counts(8000, config, np.random.default_rng(7))
  np.testing.assert_array_equal(counts > 0, exact.labels > 0)
  weights, bias = synthetic.planted_assays(config.seed)
  assert weights.shape == (len(synthetic.TASKS), len(synthetic.EASY_TASKS))
  logits = np.minimum(counts[:, synthetic.EASY_TASKS], 3) @ weights.T + bias
  p = 1 / (1 + np.exp(-logits))
  # Many probability levels per task: the ranking depends on small differences.
  assert min(len(np.unique(p[:, t].round(6))) for t in range(p.shape[1])) > 100
  assert 0.25 < assays.labels.mean() < 0.45
  edges = np.quantile(p, np.linspace(0, 1, 9))
  for lo, hi in zip(edges[:-1], edges[1:], strict=True):
    in_bin = (p >= lo) & (p <= hi)
    assert assays.labels[in_bin].mean() == pytest.approx(p[in_bin].mean(), abs=0.02)
  # The assays belong to the dataset's seed, not to a split's draws.
  np.testing.assert_array_equal(synthetic.planted_assays(0)[0], weights)
  assert not np.allclose(synthetic.planted_assays(1)[0], weights)
  with pytest.raises(ValueError, match="label_model"):
    synthetic.Config(label_model="probit")


def test_small_eval_batches_hold_the_split_once_in_order():
  workload = OgbgWorkload("small")
  batches = list(workload.build_input_queue(
      jax.random.key(0), "test", None, 256, repeat=False
  ))
  shapes = {jax.tree.map(np.shape, b)["inputs"] for b in batches}
  assert len(shapes) == 1
  # Real graphs are those with a known label (every generated graph has one).
  nodes = []
  for batch in batches:
    g = batch["inputs"]
    real = batch["weights"].any(1)
    count = int(g.n_node[real].sum())
    assert np.all(real[: real.sum()])  # real graphs come first
    nodes.append(g.nodes[:count])
  test_split = small_dataset().splits["test"]
  assert sum(int(b["weights"].any(1).sum()) for b in batches) == len(test_split)
  np.testing.assert_array_equal(np.concatenate(nodes), test_split.node_feat)


def test_small_train_queue_is_seeded_and_repeats():
  workload = OgbgWorkload("small")

  def train_nodes(seed):
    queue = workload.build_input_queue(jax.random.key(seed), "train", None, 64)
    return [float(next(queue)["inputs"].nodes.sum()) for _ in range(3)]

  assert train_nodes(0) == train_nodes(0)
  assert train_nodes(0) != train_nodes(1)
  repeated = workload.build_input_queue(
      jax.random.key(0), "validation", None, 1024, num_batches=7
  )
  assert len(list(repeated)) == 7  # validation is 2-3 batches; it cycles
  with pytest.raises(spec.UsageError, match="unknown eval split"):
    next(workload.build_input_queue(jax.random.key(0), "dev", None, 64))


def test_tfds_train_stream_resumes_from_its_checkpoint(tfds_data, tmp_path):
  data_dir, _ = tfds_data
  workload = OgbgWorkload("full")
  rng = jax.random.key(4)
  unbroken = workload.train_batches(rng, data_dir, 4)
  for _ in range(11):  # into the second epoch, with a graph read ahead
    next(unbroken)
  state = unbroken.checkpoint(str(tmp_path / "input"))
  assert state["pending"]  # the read-ahead graph travels with the state
  expected = [next(unbroken) for _ in range(4)]
  resumed = workload.train_batches(rng, data_dir, 4, start=state)
  for want in expected:
    for a, b in zip(jax.tree.leaves(next(resumed)), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(a, b)
