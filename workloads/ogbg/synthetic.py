"""Generated molecule-like graphs with planted substructure labels (small ogbg).

Each graph is a random tree over 8-24 heavy atoms (mostly chain-like) with up
to two node-disjoint rings of 3, 5 or 6 atoms closed along chain segments;
most 6-rings and some 5-rings are aromatic. Atoms are C, N, O, S, with F/Cl
on some leaves; carbonyl (C=O), nitrile (C#N) and a few C=C bonds are placed
where chemistry would put them. Features use molpcba's integer encodings
(9 per atom, 3 per bond, stored as floats), so the real batching code and
model run unchanged.

Each of the `TASKS` counts a substructure: an atom type or count (0 hops), a
typed bond (1 hop), an atom environment (2 hops), a path of three bonds, a
ring property. `Config.label_model` turns the counts into 24 binary labels:
presence with a fraction flipped ("flip", the default: 2%), a probability
growing with the count ("graded"), or planted noisy assays, each a Bernoulli
draw from a logistic readout of several easy counts ("logistic", the small
workload's). 10% of the labels are hidden (NaN, weight 0), as molpcba has
noisy assays and missing entries. Everything is vectorised over graphs: 20k
graphs take about a second.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np

# Atom vocabulary and molpcba's atomic-number feature (atomic number - 1).
CARBON, NITROGEN, OXYGEN, SULFUR, FLUORINE, CHLORINE = range(6)
ATOMIC_NUMBER_FEATURE = np.array([5, 6, 7, 15, 8, 16], np.float32)
VALENCE = np.array([4, 3, 2, 2, 1, 1])
SINGLE, DOUBLE, TRIPLE, AROMATIC = range(4)
NO_BOND = -1

TASKS = (
    "has Cl", "has S", ">=3 N", ">=3 O",
    "C=O", "C#N", "N-N", "N-O", "C-S single", "C=C",
    "amide C(=O)N", "acid-like C(=O)O", "aromatic halide", "aromatic O",
    "N-X-N", "degree-4 atom",
    "3-ring", "5-ring", "6-ring", "aromatic ring", ">=2 rings", "N in ring",
    "N-C-C-N path", "aryl carbonyl",
)
# Batch budgets per graph, a little above the means (16 nodes, 31.6 directed
# edges) so that batches are limited by their graph count: a batch of B holds
# exactly B graphs, and an eval split of 2B graphs exactly two batches.
AVG_NODES_PER_GRAPH = 17
LABEL_MODELS = ("flip", "graded", "logistic")
# The substructures a GNN learns within the first thousand steps in every seed
# (results/calibration/ogbg_small_per_task/): atoms, typed bonds, degree and
# ring membership. "logistic" labels are read out of these counts only, so the
# task saturates early instead of waiting on a rare multi-hop motif.
EASY_TASKS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 19, 21)
# Standard deviation of the planted weights per clipped count, and the offset
# that puts about a third of the labels at 1.
ASSAY_WEIGHT_SCALE = 0.8
ASSAY_OFFSET = -1.0
AVG_EDGES_PER_GRAPH = 34


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes and noise of the generated dataset (defaults: the small workload)."""

  num_train: int = 16_384
  num_validation: int = 2_048
  num_test: int = 2_048
  min_nodes: int = 8
  max_nodes: int = 24
  label_noise: float = 0.02
  # Flip rate of the validation and test labels; None: as ``label_noise``.
  eval_label_noise: float | None = None
  missing_rate: float = 0.1
  # How labels are made from the substructure counts (``_labels``):
  # "flip": label = count > 0, then a ``label_noise`` fraction flipped.
  # "graded": each label is drawn with a probability that grows with how often
  #   the task's substructure occurs (k times): p = f + (1 - 2f) (1 - 2^-k),
  #   f the split's ``label_noise`` (k = 0: f; k = 1: 0.5; then 0.75 - f/2,
  #   ...). The best ranking orders graphs by their counts, and no model
  #   reaches AP 1 (as on molpcba's noisy assays).
  # "logistic": every task is a planted assay, a noisy readout of several
  #   substructures at once: p = f + (1 - 2f) sigmoid(w_t . min(k, 3) + b_t)
  #   over the `EASY_TASKS` counts, with dense weights w_t fixed by ``seed``
  #   (`planted_assays`). Probabilities take ~1,000 values per task, so the
  #   ranking, and the mAP, depend on small differences between logits.
  label_model: str = "flip"
  seed: int = 0
  # The training split is made in blocks of this many graphs, on demand (one
  # in memory at a time): a split of one pass per run costs nothing up front.
  block_size: int = 2_048

  def __post_init__(self):
    if not 6 <= self.min_nodes <= self.max_nodes:
      raise ValueError(
          f"need 6 <= min_nodes <= max_nodes (rings have up to 6 atoms), got "
          f"{self.min_nodes}, {self.max_nodes}"
      )
    if self.label_model not in LABEL_MODELS:
      raise ValueError(f"label_model {self.label_model!r}: choose from {LABEL_MODELS}")
    if self.block_size < 1 or self.num_train % self.block_size:
      raise ValueError(f"num_train ({self.num_train}) must be a multiple of "
                       f"block_size ({self.block_size})")


class Molecules:
  """Graphs stored flat (CSR-style): features of all graphs and offsets."""

  def __init__(self, node_feat, edge_feat, edge_index, num_nodes, num_edges, labels):
    self.node_feat = node_feat  # (total_nodes, 9) float32
    self.edge_feat = edge_feat  # (total_bonds, 3) float32
    self.edge_index = edge_index  # (total_bonds, 2) int64, per-graph indices
    self.num_nodes = num_nodes  # (graphs,)
    self.num_edges = num_edges  # (graphs,) bonds, one direction
    self.labels = labels  # (graphs, tasks) float32, NaN = missing
    self._node_start = np.cumsum(num_nodes) - num_nodes
    self._edge_start = np.cumsum(num_edges) - num_edges

  def __len__(self) -> int:
    return len(self.num_nodes)

  def example(self, i: int) -> dict[str, np.ndarray]:
    """Graph ``i`` in the TFDS ``ogbg_molpcba`` format."""
    nodes = slice(self._node_start[i], self._node_start[i] + self.num_nodes[i])
    edges = slice(self._edge_start[i], self._edge_start[i] + self.num_edges[i])
    return {
        "node_feat": self.node_feat[nodes],
        "edge_feat": self.edge_feat[edges],
        "edge_index": self.edge_index[edges],
        "labels": self.labels[i],
        "num_nodes": self.num_nodes[i : i + 1],
        "num_edges": self.num_edges[i : i + 1],
    }

  def examples(
      self, order: np.ndarray | None = None
  ) -> Iterator[dict[str, np.ndarray]]:
    """Examples in ``order`` (default: stored order)."""
    for i in range(len(self)) if order is None else order:
      yield self.example(i)


def _structure(rng: np.random.Generator, num_graphs: int, config: Config):
  """Random trees with planted rings: parents, ring ids and ring sizes."""
  max_nodes = config.max_nodes
  num_nodes = rng.integers(config.min_nodes, max_nodes + 1, num_graphs)
  parent = np.full((num_graphs, max_nodes), -1)
  for i in range(1, max_nodes):
    chain = rng.random(num_graphs) < 0.7
    parent[:, i] = np.where(chain, i - 1, rng.integers(0, i, num_graphs))

  # Ring slots: a ring of `size` atoms ends at atom `end`; its atoms become a
  # chain and the closing bond joins `end` to `end - size + 1`.
  ring_of = np.full((num_graphs, max_nodes), -1)  # ring slot per atom
  ring_size = np.zeros((num_graphs, 2), int)
  ring_end = np.zeros((num_graphs, 2), int)
  ring_aromatic = np.zeros((num_graphs, 2), bool)
  for slot, probability in enumerate((0.55, 0.4)):
    size = rng.choice([3, 5, 6], num_graphs, p=[0.2, 0.35, 0.45])
    end = (size - 1 + rng.random(num_graphs) * (num_nodes - size + 1)).astype(int)
    members = np.arange(max_nodes)[None, :]
    in_ring = (members >= (end - size + 1)[:, None]) & (members <= end[:, None])
    free = ~np.any(in_ring & (ring_of >= 0), axis=1)
    active = (rng.random(num_graphs) < probability) & free
    in_ring &= active[:, None]
    ring_of[in_ring] = slot
    chain_link = in_ring & (members > (end - size + 1)[:, None])
    parent[chain_link] = np.broadcast_to(members - 1, parent.shape)[chain_link]
    ring_size[:, slot] = np.where(active, size, 0)
    ring_end[:, slot] = end
    aromatic_p = np.select([size == 6, size == 5], [0.7, 0.25], 0.0)
    ring_aromatic[:, slot] = active & (rng.random(num_graphs) < aromatic_p)

  bond = np.full((num_graphs, max_nodes, max_nodes), NO_BOND, np.int8)
  child = np.arange(1, max_nodes)
  real_child = child[None, :] < num_nodes[:, None]
  g, c = np.nonzero(real_child)
  p = parent[:, 1:][g, c]
  bond[g, c + 1, p] = bond[g, p, c + 1] = SINGLE
  for slot in range(2):
    g = np.flatnonzero(ring_size[:, slot])
    last = ring_end[g, slot]
    first = last - ring_size[g, slot] + 1
    bond[g, first, last] = bond[g, last, first] = SINGLE
    aromatic = g[ring_aromatic[g, slot]]
    atoms = ring_of[aromatic] == slot
    pair = atoms[:, :, None] & atoms[:, None, :] & (bond[aromatic] >= 0)
    bond[aromatic] = np.where(pair, AROMATIC, bond[aromatic])
  return num_nodes, bond, ring_of, ring_size, ring_aromatic


def _atoms_and_bonds(num_graphs: int, config: Config, rng: np.random.Generator):
  """Graph structure, atom types, bond orders and substructure counts."""
  num_nodes, bond, ring_of, ring_size, ring_aromatic = _structure(
      rng, num_graphs, config
  )
  max_nodes = config.max_nodes
  real = np.arange(max_nodes)[None, :] < num_nodes[:, None]
  adjacency = bond >= 0
  degree = adjacency.sum(-1)
  in_ring = ring_of >= 0
  aromatic_atom = in_ring & ring_aromatic[
      np.arange(num_graphs)[:, None], np.maximum(ring_of, 0)
  ]

  # Atom types: backbone C/N/O/S, ring atoms C/N, some leaves F/Cl.
  atom = rng.choice(
      [CARBON, NITROGEN, OXYGEN, SULFUR], (num_graphs, max_nodes),
      p=[0.62, 0.16, 0.16, 0.06],
  )
  ring_nitrogen = rng.random(atom.shape) < 0.15
  atom = np.where(in_ring, np.where(ring_nitrogen, NITROGEN, CARBON), atom)
  leaf = (degree == 1) & ~in_ring
  halogen = leaf & (rng.random(atom.shape) < 0.12)
  fluorine = rng.random(atom.shape) < 0.5
  atom = np.where(halogen, np.where(fluorine, FLUORINE, CHLORINE), atom)
  # O/S/halogen atoms need few bonds: keep them off high-degree positions.
  atom = np.where((degree > 2) & ~halogen & (atom != NITROGEN), CARBON, atom)

  # Multiple bonds on leaves: C=O (carbonyl), C#N (nitrile); some C=C.
  leaf_index = np.argmax(adjacency, -1)  # a leaf's only neighbour
  neighbour_atom = np.take_along_axis(atom, leaf_index, 1)
  neighbour_free = ~np.take_along_axis(aromatic_atom, leaf_index, 1)
  carbonyl = (
      leaf & (atom == OXYGEN) & (neighbour_atom == CARBON)
      & (rng.random(atom.shape) < 0.6)
  )
  nitrile = (
      leaf & (atom == NITROGEN) & (neighbour_atom == CARBON) & neighbour_free
      & (rng.random(atom.shape) < 0.4)
  )
  g, i = np.nonzero((carbonyl | nitrile) & real)
  j = leaf_index[g, i]
  order = np.where(carbonyl[g, i], DOUBLE, TRIPLE).astype(np.int8)
  bond[g, i, j] = bond[g, j, i] = order
  carbon_single = (
      (bond == SINGLE) & (atom == CARBON)[:, :, None] & (atom == CARBON)[:, None, :]
      & ~in_ring[:, :, None] & ~in_ring[:, None, :]
  )
  upper = np.triu(carbon_single & (rng.random(bond.shape) < 0.08), 1)
  bond[upper] = DOUBLE
  bond[np.swapaxes(upper, 1, 2)] = DOUBLE

  counts = _labels(atom, bond, real, in_ring, aromatic_atom, ring_size, ring_aromatic)
  return num_nodes, bond, atom, real, degree, aromatic_atom, in_ring, counts


def _counts(num_graphs: int, config: Config, rng: np.random.Generator) -> np.ndarray:
  """The substructure counts of ``num_graphs`` generated graphs."""
  return _atoms_and_bonds(num_graphs, config, rng)[-1]


def generate(num_graphs: int, config: Config, rng: np.random.Generator) -> Molecules:
  """``num_graphs`` labelled molecule-like graphs (see the module docstring)."""
  num_nodes, bond, atom, real, degree, aromatic_atom, in_ring, counts = (
      _atoms_and_bonds(num_graphs, config, rng))
  draw = rng.random(counts.shape)
  floor = config.label_noise
  if config.label_model == "graded":
    labels = (draw < floor + (1 - 2 * floor) * (1 - 0.5 ** counts)).astype(np.float32)
  elif config.label_model == "logistic":
    weights, bias = planted_assays(config.seed)
    logits = np.minimum(counts[:, EASY_TASKS], 3) @ weights.T + bias
    labels = (draw < floor + (1 - 2 * floor) / (1 + np.exp(-logits))).astype(np.float32)
  else:
    labels = np.where(draw < config.label_noise, counts == 0, counts > 0).astype(np.float32)
  labels[rng.random(labels.shape) < config.missing_rate] = np.nan

  # Features in molpcba's encodings.
  order_sum = np.where(bond == AROMATIC, 1.5, np.maximum(bond, 0) + 1.0)
  order_sum = np.where(bond >= 0, order_sum, 0.0).sum(-1)
  hydrogens = np.maximum(VALENCE[atom] - np.floor(order_sum), 0)
  has_triple = np.any(bond == TRIPLE, -1)
  has_double = np.any(bond == DOUBLE, -1)
  hybridization = np.select([has_triple, has_double | aromatic_atom], [1, 2], 3)
  chiral = (atom == CARBON) & (degree >= 3) & (rng.random(atom.shape) < 0.1)
  charged = (atom == NITROGEN) & (rng.random(atom.shape) < 0.03)
  node_feat = np.stack(
      [
          ATOMIC_NUMBER_FEATURE[atom], chiral, degree,
          5 + charged, hydrogens, np.zeros_like(hydrogens), hybridization,
          aromatic_atom, in_ring,
      ],
      axis=-1,
  ).astype(np.float32)[real]

  g, u, v = np.nonzero(np.triu(bond >= 0, 1))
  bond_type = bond[g, u, v]
  conjugated = (bond_type == AROMATIC) | (bond_type == DOUBLE) | (bond_type == TRIPLE)
  edge_feat = np.stack(
      [bond_type, np.zeros_like(bond_type), conjugated], axis=-1
  ).astype(np.float32)
  num_edges = np.bincount(g, minlength=num_graphs)
  return Molecules(
      node_feat=node_feat,
      edge_feat=edge_feat,
      edge_index=np.stack([u, v], axis=-1).astype(np.int64),
      num_nodes=num_nodes.astype(np.int64),
      num_edges=num_edges.astype(np.int64),
      labels=labels,
  )


@functools.lru_cache(maxsize=4)
def planted_assays(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The "logistic" label model's weights ``(len(TASKS), len(EASY_TASKS))``
  and biases ``(len(TASKS),)``: the same for every split of one ``seed``.

  Biases centre each task's logit on 2,048 reference graphs (their own
  stream, labels unused) and add `ASSAY_OFFSET`.
  """
  rng = np.random.default_rng([seed, 3])
  weights = rng.normal(0.0, ASSAY_WEIGHT_SCALE, (len(TASKS), len(EASY_TASKS)))
  reference = Config(num_train=2_048, block_size=2_048, seed=seed)
  counts = _counts(2_048, reference, np.random.default_rng([seed, 4]))
  logits = np.minimum(counts[:, EASY_TASKS], 3) @ weights.T
  return weights, ASSAY_OFFSET - np.median(logits, axis=0)


def _labels(atom, bond, real, in_ring, aromatic_atom, ring_size, ring_aromatic):
  """How often each task's substructure occurs, ``(graphs, len(TASKS))``.

  Atom-level tasks count the atoms that match; graph-level ones are 0 or 1.
  A task's exact label (before noise) is ``count > 0``.
  """
  is_ = {k: (atom == k) & real for k in range(len(ATOMIC_NUMBER_FEATURE))}
  c, n, o = is_[CARBON], is_[NITROGEN], is_[OXYGEN]
  adjacency = (bond >= 0).astype(np.float32)

  def bonded(a, b, kind=None):  # (graphs, atoms): atom of mask a bonded to b
    edges = adjacency if kind is None else (bond == kind).astype(np.float32)
    return a & (np.einsum("guv,gv->gu", edges, b.astype(np.float32)) > 0)

  def neighbours(mask):  # (graphs, atoms) count of neighbours in mask
    return np.einsum("guv,gv->gu", adjacency, mask.astype(np.float32))

  count = {k: v.sum(-1) for k, v in is_.items()}
  halogen = is_[FLUORINE] | is_[CHLORINE]
  carbonyl_c = bonded(c, o, DOUBLE)
  n_c = neighbours(n) * c  # N neighbours of each carbon
  n_c_c = neighbours(n_c > 0) * c  # carbons next to such a carbon
  tasks = [
      count[CHLORINE] > 0, count[SULFUR] > 0, count[NITROGEN] >= 3,
      count[OXYGEN] >= 3,
      carbonyl_c, bonded(c, n, TRIPLE), bonded(n, n), bonded(n, o),
      bonded(c, is_[SULFUR], SINGLE), bonded(c, c, DOUBLE),
      bonded(carbonyl_c, n, SINGLE), bonded(carbonyl_c, o, SINGLE),
      bonded(halogen, aromatic_atom), bonded(o, aromatic_atom),
      (neighbours(n) >= 2) & real, (adjacency.sum(-1) >= 4),
      np.any(ring_size == 3, -1), np.any(ring_size == 5, -1),
      np.any(ring_size == 6, -1), np.any(ring_aromatic, -1),
      np.all(ring_size > 0, -1), n & in_ring,
      bonded(n, n_c_c > 0), bonded(carbonyl_c, aromatic_atom),
  ]
  tasks = [t if t.ndim == 1 else np.sum(t, -1) for t in tasks]
  return np.stack(tasks, axis=-1).astype(np.float32)


class BlockMolecules:
  """A training split made block by block on demand (`Config.block_size`).

  Block ``b`` is ``generate(block_size, config, default_rng([seed, 0, b]))``:
  the same graphs whatever order the blocks are asked for in. The last block
  made is kept, so a stream that reads block by block
  (`algoperf_avg.kit.data.block_epoch_order`) makes each block once per pass.
  """

  def __init__(self, config: Config):
    self.config = config
    self.block_size = config.block_size
    self._cached: tuple[int, Molecules] | None = None

  def __len__(self) -> int:
    return self.config.num_train

  def block(self, b: int) -> Molecules:
    """The ``block_size`` graphs of block ``b``."""
    if self._cached is None or self._cached[0] != b:
      rng = np.random.default_rng([self.config.seed, 0, b])
      self._cached = (b, generate(self.block_size, self.config, rng))
    return self._cached[1]

  def example(self, i: int) -> dict[str, np.ndarray]:
    """Graph ``i`` in the TFDS ``ogbg_molpcba`` format."""
    if not 0 <= i < len(self):
      raise IndexError(f"graph {i} of a split of {len(self)}")
    b, j = divmod(int(i), self.block_size)
    return self.block(b).example(j)

  def examples(
      self, order: np.ndarray | None = None
  ) -> Iterator[dict[str, np.ndarray]]:
    """Examples in ``order`` (default: stored order)."""
    for i in range(len(self)) if order is None else order:
      yield self.example(i)


class Dataset:
  """The small workload's splits, each from its own seed.

  ``train`` is made block by block as it is read (`BlockMolecules`);
  validation and test are made at once. ``eval_train`` is the first
  ``num_eval_train`` graphs of ``train``.
  """

  def __init__(self, config: Config = Config()):
    self.config = config
    noise = config.label_noise if config.eval_label_noise is None else config.eval_label_noise
    evaluated = dataclasses.replace(config, label_noise=noise)
    self.splits = {
        "train": BlockMolecules(config),
        "validation": generate(config.num_validation, evaluated,
                               np.random.default_rng([config.seed, 1])),
        "test": generate(config.num_test, evaluated, np.random.default_rng([config.seed, 2])),
    }
