"""Graph network for ogbg-molpcba, with message passing on `jax.ops.segment_sum`.

The architecture and the parameter tree follow AlgoPerf's JAX ``GNN`` (itself
from init2winit) exactly: the same layer sizes, the same concatenation order
and the same module names (``node_embedding``, ``edge_embedding``,
``Dense_0`` ... ``Dense_15``, ``LayerNorm_0`` ... ``LayerNorm_14``), so
parameters move between the two without renaming. jraph is not used (it is
unmaintained); `GraphNetwork` below is its ``GraphNetwork`` with sum
aggregation, written out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from algoperf_avg.kit.layers import Dropout

DROPOUT_RATE = 0.1


class GraphsTuple(NamedTuple):
  """A batch of graphs stored as one disconnected graph (jraph's layout).

  Attributes:
    nodes: ``(N, node_features)`` features of all nodes of all graphs.
    edges: ``(E, edge_features)`` features of all (directed) edges.
    senders: ``(E,)`` int, index into ``nodes`` of each edge's source.
    receivers: ``(E,)`` int, index into ``nodes`` of each edge's target.
    globals: ``(G, global_features)`` per-graph features, or None.
    n_node: ``(G,)`` int, nodes per graph; they sum to N.
    n_edge: ``(G,)`` int, edges per graph; they sum to E.
  """

  nodes: Any
  edges: Any
  senders: Any
  receivers: Any
  globals: Any
  n_node: Any
  n_edge: Any


class GNN(nn.Module):
  """Graph network predicting one logit per task for every graph.

  Nodes and edges are embedded linearly, globals start at zero with
  ``num_outputs`` features; each message-passing step updates edges, then
  nodes, then globals with an MLP (Dense -> LayerNorm -> activation ->
  dropout per hidden layer) on the concatenation of the relevant features,
  summing edges into nodes and nodes/edges into globals. A final Dense maps
  the globals to the logits. No residual connections.

  Attributes:
    num_outputs: number of tasks (logits per graph); also the width of the
      initial (zero) globals.
    latent_dim: width of the node and edge embeddings.
    hidden_dims: widths of each update MLP's layers.
    num_message_passing_steps: number of graph-network steps (no weight
      sharing between steps).
    activation: nonlinearity of the MLPs.
  """

  num_outputs: int
  latent_dim: int = 256
  hidden_dims: Sequence[int] = (256,)
  num_message_passing_steps: int = 5
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  def _mlp(
      self, inputs: Sequence[jax.Array], train: bool, dropout_rate: float
  ) -> jax.Array:
    # Created in the caller's compact scope, so layers are numbered Dense_i /
    # LayerNorm_i in call order, as in AlgoPerf's model.
    x = jnp.concatenate(inputs, axis=-1)
    for dim in self.hidden_dims:
      x = nn.Dense(features=dim)(x)
      x = nn.LayerNorm()(x)
      x = self.activation(x)
      x = Dropout()(x, dropout_rate, deterministic=not train)
    return x

  @nn.compact
  def __call__(
      self, graph: GraphsTuple, train: bool, dropout_rate: float = DROPOUT_RATE
  ) -> jax.Array:
    """Logits ``(G, num_outputs)`` for the ``G`` graphs in ``graph``.

    ``graph.globals`` is ignored. Shapes are static: padding graphs (and their
    nodes and edges) flow through like real ones and are masked in the loss.
    """
    senders, receivers = graph.senders, graph.receivers
    n_graph = graph.n_node.shape[0]
    total_nodes = graph.nodes.shape[0]
    total_edges = senders.shape[0]
    graph_ids = jnp.arange(n_graph)
    node_graph = jnp.repeat(
        graph_ids, graph.n_node, total_repeat_length=total_nodes
    )
    edge_graph = jnp.repeat(
        graph_ids, graph.n_edge, total_repeat_length=total_edges
    )

    nodes = nn.Dense(self.latent_dim, name="node_embedding")(graph.nodes)
    edges = nn.Dense(self.latent_dim, name="edge_embedding")(graph.edges)
    globals_ = jnp.zeros((n_graph, self.num_outputs), nodes.dtype)

    for _ in range(self.num_message_passing_steps):
      edges = self._mlp(
          [edges, nodes[senders], nodes[receivers], globals_[edge_graph]],
          train, dropout_rate,
      )
      sent = jax.ops.segment_sum(edges, senders, total_nodes)
      received = jax.ops.segment_sum(edges, receivers, total_nodes)
      nodes = self._mlp(
          [nodes, sent, received, globals_[node_graph]], train, dropout_rate
      )
      globals_ = self._mlp(
          [
              jax.ops.segment_sum(nodes, node_graph, n_graph),
              jax.ops.segment_sum(edges, edge_graph, n_graph),
              globals_,
          ],
          train, dropout_rate,
      )
    return nn.Dense(self.num_outputs)(globals_)
