"""Tests of the ogbg graph network, loss and small-workload training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algoperf_avg import spec
from workloads.ogbg import input_pipeline, model
from workloads.ogbg.workload import OgbgWorkload


def _graph(nodes, edges, senders, receivers, n_node, n_edge) -> model.GraphsTuple:
  return model.GraphsTuple(
      nodes=jnp.asarray(nodes, jnp.float32), edges=jnp.asarray(edges, jnp.float32),
      senders=jnp.asarray(senders, jnp.int32),
      receivers=jnp.asarray(receivers, jnp.int32), globals=None,
      n_node=jnp.asarray(n_node, jnp.int32), n_edge=jnp.asarray(n_edge, jnp.int32),
  )


def _golden_inputs() -> model.GraphsTuple:
  """Three graphs and a padding graph, drawn with numpy (JAX-version proof)."""
  rng = np.random.default_rng(1234)
  n_node = np.array([4, 6, 5, 3])
  n_edge = np.array([6, 10, 8, 2])
  starts = np.cumsum(n_node) - n_node
  senders = np.concatenate(
      [s + rng.integers(0, n, e)
       for s, n, e in zip(starts, n_node, n_edge, strict=True)]
  )
  receivers = np.concatenate(
      [s + rng.integers(0, n, e)
       for s, n, e in zip(starts, n_node, n_edge, strict=True)]
  )
  nodes = rng.integers(0, 8, (n_node.sum(), 9))
  edges = rng.integers(0, 4, (n_edge.sum(), 3))
  return _graph(nodes, edges, senders, receivers, n_node, n_edge)


def _golden_params(shapes):
  rng = np.random.default_rng(5678)

  def make(path, leaf):
    values = rng.uniform(-1, 1, leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == "kernel":
      return values / np.sqrt(leaf.shape[0])
    if name == "scale":
      return 1 + 0.1 * values
    return 0.1 * values

  return jax.tree_util.tree_map_with_path(make, shapes)


def _random_molecules(num_graphs: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(num_graphs):
    n = int(rng.integers(3, 9))
    parents = [int(rng.integers(0, i)) for i in range(1, n)]
    examples.append({
        "node_feat": rng.integers(0, 6, (n, 9)).astype(np.float32),
        "edge_feat": rng.integers(0, 4, (n - 1, 3)).astype(np.float32),
        "edge_index": np.array([[i + 1, p] for i, p in enumerate(parents)]),
        "labels": rng.integers(0, 2, 128).astype(np.float32),
    })
  return examples


def test_full_parameter_count_matches_algoperf():
  assert OgbgWorkload("full").num_params == 3_554_176


def test_full_parameter_tree_has_algoperf_layout():
  shapes = OgbgWorkload("full").param_shapes
  expected = {"node_embedding", "edge_embedding"}
  expected |= {f"Dense_{i}" for i in range(16)}
  expected |= {f"LayerNorm_{i}" for i in range(15)}
  assert set(shapes) == expected
  # Step 0 concatenates 3 x 256 latents with 128 zero globals, later steps
  # 4 x 256; the global MLP sees pooled nodes, pooled edges and globals.
  assert shapes["Dense_0"]["kernel"].shape == (896, 256)
  assert shapes["Dense_2"]["kernel"].shape == (640, 256)
  assert shapes["Dense_3"]["kernel"].shape == (1024, 256)
  assert shapes["Dense_15"]["kernel"].shape == (256, 128)
  types = OgbgWorkload("full").model_params_types
  assert types["LayerNorm_3"]["scale"] == spec.ParameterType.LAYER_NORM_SCALE
  assert types["Dense_15"]["bias"] == spec.ParameterType.BIAS


def test_small_model_is_smaller():
  small = OgbgWorkload("small")
  assert small.num_params == 509_080 < OgbgWorkload("full").num_params
  assert small.param_shapes["Dense_9"]["kernel"].shape == (128, small.config.num_tasks)


def test_outputs_match_algoperf_golden_values():
  # Computed with AlgoPerf's ogbg_jax models.GNN (jraph) on the same
  # weights and graphs; the parameter trees are identical.
  gnn = model.GNN(num_outputs=128)
  params = _golden_params(OgbgWorkload("full").param_shapes)
  logits = np.asarray(gnn.apply({"params": params}, _golden_inputs(), train=False))
  np.testing.assert_allclose(
      logits[:3, :4],
      [
          [-0.0811117, -0.1646221, -0.3440967, -0.151104],
          [-0.077694, -0.0720756, -0.430892, -0.045804],
          [-0.2399331, -0.2968777, -0.5869389, -0.0195523],
      ],
      atol=1e-5,
  )
  np.testing.assert_allclose(
      logits[:3].sum(1), [-3.1036806, -1.8170111, -3.9316914], atol=1e-4
  )


def _numpy_gnn(params, graph: model.GraphsTuple, num_outputs: int) -> np.ndarray:
  """One-hidden-layer graph network written with explicit loops."""
  p = jax.tree.map(np.asarray, params)
  g = jax.tree.map(np.asarray, graph)

  def mlp(x, index):
    d, ln = p[f"Dense_{index}"], p[f"LayerNorm_{index}"]
    x = x @ d["kernel"] + d["bias"]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    return np.maximum(x * ln["scale"] + ln["bias"], 0)

  node_graph = np.repeat(np.arange(len(g.n_node)), g.n_node)
  edge_graph = np.repeat(np.arange(len(g.n_edge)), g.n_edge)
  nodes = g.nodes @ p["node_embedding"]["kernel"] + p["node_embedding"]["bias"]
  edges = g.edges @ p["edge_embedding"]["kernel"] + p["edge_embedding"]["bias"]
  globals_ = np.zeros((len(g.n_node), num_outputs), np.float32)
  layer = 0
  while f"Dense_{layer + 3}" in p:
    edges = np.stack([
        mlp(np.concatenate([edges[e], nodes[s], nodes[r], globals_[edge_graph[e]]]),
            layer)
        for e, (s, r) in enumerate(zip(g.senders, g.receivers, strict=True))
    ])
    node_ids, graph_ids = range(len(nodes)), range(len(g.n_node))
    sent = np.stack([edges[g.senders == v].sum(0) for v in node_ids])
    received = np.stack([edges[g.receivers == v].sum(0) for v in node_ids])
    nodes = mlp(
        np.concatenate([nodes, sent, received, globals_[node_graph]], 1), layer + 1
    )
    pooled_nodes = np.stack([nodes[node_graph == k].sum(0) for k in graph_ids])
    pooled_edges = np.stack([edges[edge_graph == k].sum(0) for k in graph_ids])
    globals_ = mlp(np.concatenate([pooled_nodes, pooled_edges, globals_], 1), layer + 2)
    layer += 3
  decoder = p[f"Dense_{layer}"]
  return globals_ @ decoder["kernel"] + decoder["bias"]


def test_message_passing_matches_explicit_loops():
  gnn = model.GNN(num_outputs=5, latent_dim=8, hidden_dims=(8,),
                  num_message_passing_steps=2)
  graph = _golden_inputs()
  params = gnn.init({"params": jax.random.key(0)}, graph, train=False)["params"]
  logits = gnn.apply({"params": params}, graph, train=False)
  np.testing.assert_allclose(logits, _numpy_gnn(params, graph, 5), atol=1e-4)


def test_logits_do_not_depend_on_batch_mates_or_padding():
  workload = OgbgWorkload("small")
  params, state = workload.init_model_fn(jax.random.key(0))
  examples = _random_molecules(6)
  alone = next(input_pipeline.batch_examples(examples[:1], 4, num_devices=1))
  together = next(input_pipeline.batch_examples(examples, 8, num_devices=1))
  assert together["inputs"].n_node.shape[0] > alone["inputs"].n_node.shape[0]

  @jax.jit
  def run(batch):
    return workload.model_fn(
        params, batch, state, spec.ForwardPassMode.EVAL, None, False
    )[0]

  np.testing.assert_allclose(run(alone)[0], run(together)[0], atol=1e-5)


def test_node_order_does_not_matter():
  gnn = model.GNN(num_outputs=3, latent_dim=8, hidden_dims=(8,),
                  num_message_passing_steps=2)
  graph = _golden_inputs()
  params = gnn.init({"params": jax.random.key(1)}, graph, train=False)["params"]
  # Reverse the nodes of the first graph (indices 0..3).
  perm = np.r_[np.arange(4)[::-1], np.arange(4, graph.nodes.shape[0])]
  inverse = np.argsort(perm)
  permuted = graph._replace(
      nodes=graph.nodes[perm], senders=inverse[np.asarray(graph.senders)],
      receivers=inverse[np.asarray(graph.receivers)],
  )
  np.testing.assert_allclose(
      gnn.apply({"params": params}, graph, train=False),
      gnn.apply({"params": params}, permuted, train=False), atol=1e-5,
  )


def test_dropout_only_in_training_and_rate_may_be_traced():
  workload = OgbgWorkload("small")
  params, state = workload.init_model_fn(jax.random.key(0))
  batch = next(input_pipeline.batch_examples(_random_molecules(4), 4, num_devices=1))
  rng = jax.random.key(3)
  train, evaluate = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL

  def run(mode, rate):  # ``rate`` is a Python value, closed over.
    return jax.jit(
        lambda: workload.model_fn(params, batch, state, mode, rng, False, rate)[0]
    )()

  np.testing.assert_allclose(run(train, 0.0), run(evaluate, 0.5), atol=1e-6)
  dropped = run(train, 0.5)
  assert not np.allclose(dropped, run(evaluate, 0.5))
  traced = jax.jit(
      lambda rate: workload.model_fn(params, batch, state, train, rng, False, rate)[0]
  )(0.5)
  np.testing.assert_allclose(traced, dropped, atol=1e-5)
  assert run(train, None).shape == dropped.shape


def test_init_and_model_state():
  workload = OgbgWorkload("small")
  params, state = workload.init_model_fn(jax.random.key(0))
  assert state == {}
  batch = next(input_pipeline.batch_examples(_random_molecules(2), 2, num_devices=1))
  logits, new_state = jax.jit(workload.model_fn, static_argnums=(3, 5))(
      params, batch, state, spec.ForwardPassMode.EVAL, None, False
  )
  assert new_state == {}
  assert logits.shape == (3, workload.config.num_tasks)


def test_loss_is_masked_sigmoid_cross_entropy():
  workload = OgbgWorkload("full")
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 128)).astype(np.float32) * 3
  labels = rng.integers(0, 2, (5, 128)).astype(np.float32)
  mask = (rng.random((5, 128)) < 0.7).astype(np.float32)
  mask[-1] = 0  # a padding graph
  out = workload.loss_fn(labels, logits, mask)
  expected = np.asarray(optax.sigmoid_binary_cross_entropy(logits, labels))
  np.testing.assert_allclose(out["per_example"], expected * mask, rtol=1e-5, atol=1e-6)
  assert out["per_example"].shape == (5, 128)
  assert int(out["n_valid_examples"]) == int(mask.sum())
  np.testing.assert_allclose(out["summed"], (expected * mask).sum(), rtol=1e-5)


def test_label_smoothing_is_over_the_task_axis_as_in_algoperf():
  workload = OgbgWorkload("full")
  logits = np.zeros((2, 128), np.float32)
  labels = np.ones((2, 128), np.float32)
  mask = np.ones((2, 128), np.float32)
  smoothed = np.asarray(optax.smooth_labels(labels, 0.2))  # 0.8 + 0.2 / 128
  expected = optax.sigmoid_binary_cross_entropy(logits + 2.0, smoothed)
  out = workload.loss_fn(labels, logits + 2.0, mask, label_smoothing=0.2)
  np.testing.assert_allclose(out["per_example"], expected, rtol=1e-5)


def test_missing_labels_give_finite_gradients():
  workload = OgbgWorkload("small")
  labels = jnp.array([[1.0, jnp.nan], [0.0, 1.0]])
  mask = jnp.array([[1.0, 0.0], [1.0, 1.0]])

  def mean_loss(logits):
    out = workload.loss_fn(labels, logits, mask)
    return out["summed"] / out["n_valid_examples"]

  grads = jax.grad(mean_loss)(jnp.ones((2, 2)))
  assert np.all(np.isfinite(grads))
  assert grads[0, 1] == 0
  no_mask = workload.loss_fn(jnp.zeros((2, 2)), jnp.ones((2, 2)))
  assert int(no_mask["n_valid_examples"]) == 4


@pytest.mark.parametrize("size", ["full", "small"])
def test_sizes_and_budgets(size):
  workload = OgbgWorkload(size)
  assert workload.workload_id == ("ogbg" if size == "full" else "ogbg_small")
  assert workload.target_metric_name == "mean_average_precision"
  assert workload.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY
  assert workload.requires_data_dir == (size == "full")
  hparams = workload.reference_hparams
  assert set(hparams) == {
      "learning_rate", "one_minus_beta1", "beta2", "weight_decay",
      "warmup_factor", "label_smoothing", "dropout_rate", "grad_clip",
  }
  if size == "full":
    assert workload.num_train_examples == 350_343
    assert workload.num_eval_train_examples == 43_793
    assert workload.num_validation_examples == 43_793
    assert workload.num_test_examples == 43_793
    assert workload.eval_batch_size == 32_768
    assert workload.default_batch_size == 512
    assert hparams["learning_rate"] == pytest.approx(0.0017486387539278373)


def test_same_seed_gives_algoperfs_initial_weights():
  """Seed 0 through the runner's key splits gives AlgoPerf's initial weights.

  Golden values from AlgoPerf's own OgbgWorkload.init_model_fn on
  PRNGKey(0) split like its submission_runner (commit 2c90454f, max abs
  difference 0.0 over all 66 leaves when checked side by side).
  """
  model_rng = jax.random.split(jax.random.key(0), 4)[2]  # data, opt, model, rng
  params, _ = OgbgWorkload("full").init_model_fn(model_rng)
  np.testing.assert_allclose(np.asarray(params["node_embedding"]["kernel"])[0, :3],
                             [0.283544, 0.00736285, 0.07732293], rtol=1e-5)
  total = sum(float(np.sum(np.asarray(p, np.float64))) for p in jax.tree.leaves(params))
  assert total == pytest.approx(3945.482885592626, rel=1e-9)
