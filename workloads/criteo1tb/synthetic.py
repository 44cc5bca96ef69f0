"""Generated click logs for the small criteo1tb: a planted model, real TSV files.

The small variant's data is written in the Criteo 1TB format and layout
(24 days of ``label, 13 ints, 26 hex categoricals`` lines, cut into shards,
with a manifest), so it flows through the real reader and its hashing. Its
clicks come from a planted logistic model:

* every categorical column ``c`` has ``cardinality[c]`` values, drawn with
  Zipf-like frequencies (a few frequent values, a long tail that appears a
  handful of times or never), each an 8-hex-digit token, and empty with a
  per-column rate; every value (and "missing") has a first-order weight;
* selected column pairs interact through low-rank value factors
  (``<u_c[v], u_c'[v']>``, a factorisation machine), and the dense features
  interact with two columns' factors;
* the 13 dense features are heavy-tailed counts (some missing, some
  negative, as in Criteo) entering through ``log(relu(x) + 1)`` with linear
  weights and a nonlinear term;
* an unobserved Gaussian term is added to the logit (clicks are drawn with
  the probability averaged over it), and the bias is set so that about
  ``click_rate`` (3%) of the lines are clicks.

The model learns it through the same hashing as the real data: values are
hashed per column and folded into a small shared table, so values collide.
The manifest records the validation loss of the planted model itself (the
floor, ``validation_bayes_loss``) and of predicting the click rate
(``validation_prior_loss``, no learning): 0.068 and 0.131 for the default
config; without the pair interactions the floor would be about 0.084. Days
are identically distributed (no drift). Generation is vectorised: the
default 225,280 lines (188,416 train, 17,408 validation, 19,456 test) take
about 5 s and 55 MB.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from workloads.criteo1tb import input_pipeline, prepare

NUM_DENSE = input_pipeline.NUM_DENSE_FEATURES
NUM_CATEGORICAL = input_pipeline.NUM_CATEGORICAL_FEATURES
# About the square roots of the real columns' vocabulary sizes (capped by
# `Config.max_cardinality`): the same skew between tiny and huge columns, at
# a scale a CPU can learn.
CARDINALITIES = (
    4000, 200, 130, 86, 140, 3, 84, 40, 8, 4000, 1700, 640, 3, 47, 110, 12,
    4, 31, 4, 4000, 4000, 4000, 760, 114, 10, 6,
)
# Column pairs with planted interactions (factorisation-machine terms).
INTERACTING_PAIRS = (
    (0, 1), (2, 3), (4, 6), (9, 13), (10, 11), (14, 17), (19, 22), (20, 23),
    (7, 15), (1, 24),
)
DENSE_INTERACTING_COLUMNS = (2, 10)


@dataclasses.dataclass(frozen=True)
class Config:
  """Sizes, planted-model scales and noise of the generated click logs."""

  seed: int = 0
  train_lines_per_day: int = 8192
  lines_per_shard: int = 1024  # day 23 has 36 shards of this many lines
  click_rate: float = 0.03
  max_cardinality: int = 500
  zipf_exponent: float = 1.1
  first_order_scale: float = 0.25
  interaction_rank: int = 4
  interaction_scale: float = 0.6
  dense_scale: float = 0.3
  logit_noise: float = 0.5

  @property
  def cardinalities(self) -> tuple[int, ...]:
    """Values per categorical column (`CARDINALITIES` capped)."""
    return tuple(min(k, self.max_cardinality) for k in CARDINALITIES)

  @property
  def eval_day_lines(self) -> int:
    return input_pipeline.NUM_EVAL_DAY_SHARDS * self.lines_per_shard

  @property
  def num_lines(self) -> int:
    return len(input_pipeline.TRAIN_DAYS) * self.train_lines_per_day + (
        self.eval_day_lines)


class PlantedModel(NamedTuple):
  """The planted click model's parameters (index ``K_c`` = missing value)."""

  tokens: tuple[np.ndarray, ...]  # per column (K_c,) uint32 token values
  frequencies: tuple[np.ndarray, ...]  # per column (K_c,) sampling probabilities
  missing_rate: np.ndarray  # (26,)
  first_order: tuple[np.ndarray, ...]  # per column (K_c + 1,)
  factors: tuple[np.ndarray, ...]  # per column (K_c + 1, rank)
  dense_log_mean: np.ndarray  # (13,) of the log-normal counts
  dense_missing_rate: np.ndarray  # (13,)
  dense_weights: np.ndarray  # (13,)
  dense_factors: np.ndarray  # (13, rank)
  bias: float


class Sample(NamedTuple):
  """Generated lines before formatting."""

  labels: np.ndarray  # (n,) int
  dense: np.ndarray  # (n, 13) int counts
  dense_missing: np.ndarray  # (n, 13) bool
  categorical: np.ndarray  # (n, 26) value index, K_c where missing
  logits: np.ndarray  # (n,) the planted logit of the observed features
  probabilities: np.ndarray  # (n,) click probability (noise averaged out)


def make_model(config: Config, rng: np.random.Generator) -> PlantedModel:
  """Draws the planted model (bias still 0; `generate` sets it)."""
  tokens, frequencies, first_order, factors = [], [], [], []
  factor_std = config.interaction_scale / np.sqrt(np.sqrt(config.interaction_rank))
  for cardinality in config.cardinalities:
    # Distinct nonzero tokens: "00000000" is what empty fields are read as.
    values = rng.choice(2**32 - 1, size=cardinality, replace=False) + 1
    tokens.append(values.astype(np.uint32))
    weight = 1.0 / np.arange(1, cardinality + 1) ** config.zipf_exponent
    frequencies.append(rng.permutation(weight / weight.sum()))
    first_order.append(rng.normal(0, config.first_order_scale, cardinality + 1))
    factors.append(rng.normal(0, factor_std, (cardinality + 1, config.interaction_rank)))
  return PlantedModel(
      tokens=tuple(tokens), frequencies=tuple(frequencies),
      missing_rate=rng.uniform(0, 0.4, NUM_CATEGORICAL) * (rng.random(NUM_CATEGORICAL) < 0.5),
      first_order=tuple(first_order), factors=tuple(factors),
      dense_log_mean=rng.uniform(0, 4, NUM_DENSE),
      dense_missing_rate=rng.uniform(0, 0.45, NUM_DENSE),
      dense_weights=rng.normal(0, config.dense_scale, NUM_DENSE),
      dense_factors=rng.normal(0, config.dense_scale, (NUM_DENSE, config.interaction_rank)),
      bias=0.0,
  )


def _logits_without_bias(model: PlantedModel, dense_features: np.ndarray,
                         categorical: np.ndarray) -> np.ndarray:
  n = categorical.shape[0]
  logit = np.zeros(n)
  for c in range(NUM_CATEGORICAL):
    logit += model.first_order[c][categorical[:, c]]
  for a, b in INTERACTING_PAIRS:
    logit += np.sum(model.factors[a][categorical[:, a]]
                    * model.factors[b][categorical[:, b]], axis=1)
  centred = dense_features - dense_features.mean(0)
  logit += centred @ model.dense_weights
  projected = centred @ model.dense_factors
  for c in DENSE_INTERACTING_COLUMNS:
    logit += np.sum(projected * model.factors[c][categorical[:, c]], axis=1)
  # A nonlinear dense effect: clicks rise when feature 0 exceeds feature 1.
  logit += 0.8 * np.tanh(dense_features[:, 0] - dense_features[:, 1])
  return logit


def generate(config: Config, num_lines: int,
             rng: np.random.Generator) -> tuple[PlantedModel, Sample]:
  """The planted model and ``num_lines`` lines drawn from it."""
  model = make_model(config, rng)
  categorical = np.empty((num_lines, NUM_CATEGORICAL), np.int64)
  for c, cardinality in enumerate(config.cardinalities):
    values = rng.choice(cardinality, num_lines, p=model.frequencies[c])
    missing = rng.random(num_lines) < model.missing_rate[c]
    categorical[:, c] = np.where(missing, cardinality, values)
  counts = np.floor(np.exp(rng.normal(model.dense_log_mean, 1.2, (num_lines, NUM_DENSE))))
  counts = counts.astype(np.int64)
  counts[:, 1] -= rng.random(num_lines) < 0.1  # a few -1s and -2s, as in Criteo
  counts[:, 1] -= rng.random(num_lines) < 0.05
  dense_missing = rng.random((num_lines, NUM_DENSE)) < model.dense_missing_rate
  # What the model sees: missing -> 0, then log(relu(x) + 1).
  dense_features = np.log(np.maximum(np.where(dense_missing, 0, counts), 0) + 1.0)
  raw = _logits_without_bias(model, dense_features, categorical)
  # The bias from a subsample: the rate is matched to well within its noise.
  bias = _bias_for_rate(raw[:16_384], config.click_rate, config.logit_noise)
  model = model._replace(bias=bias)
  logits = raw + bias
  probabilities = click_probability(logits, config.logit_noise)
  labels = (rng.random(num_lines) < probabilities).astype(np.int64)
  return model, Sample(labels, counts, dense_missing, categorical, logits,
                       probabilities)


def click_probability(logits: np.ndarray, noise: float) -> np.ndarray:
  """``E[sigmoid(logit + e)]`` for ``e ~ N(0, noise^2)`` (Gauss-Hermite, 32 nodes)."""
  nodes, weights = np.polynomial.hermite.hermgauss(32)
  shifted = logits[..., None] + np.sqrt(2.0) * noise * nodes
  return (1 / (1 + np.exp(-shifted))) @ weights / np.sqrt(np.pi)


def _bias_for_rate(raw_logits: np.ndarray, rate: float, noise: float) -> float:
  """The bias at which the mean click probability is ``rate`` (bisection)."""
  low, high = -30.0, 30.0
  for _ in range(50):
    middle = (low + high) / 2
    if np.mean(click_probability(raw_logits + middle, noise)) > rate:
      high = middle
    else:
      low = middle
  return (low + high) / 2


def format_lines(model: PlantedModel, sample: Sample) -> list[bytes]:
  """The lines in the Criteo TSV format (empty fields where missing)."""
  columns = [sample.labels.astype(str)]
  for j in range(NUM_DENSE):
    text = sample.dense[:, j].astype(str)
    columns.append(np.where(sample.dense_missing[:, j], "", text))
  for c in range(NUM_CATEGORICAL):
    tokens = np.array([f"{t:08x}" for t in model.tokens[c]] + [""])
    columns.append(tokens[sample.categorical[:, c]])
  return [("\t".join(row) + "\n").encode() for row in zip(*columns, strict=True)]


def binary_entropy(p: np.ndarray) -> np.ndarray:
  """``-p log p - (1 - p) log(1 - p)`` in nats."""
  p = np.clip(p, 1e-12, 1 - 1e-12)
  return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def write_dataset(data_dir: str, config: Config = Config()) -> str:
  """Writes the generated click logs, prepared (shards + manifest), into ``data_dir``.

  Days 0-22 hold ``train_lines_per_day`` lines each, day 23 36 shards of
  ``lines_per_shard``; shards are cut by `prepare.split_lines` as real days
  are. The manifest records the config (and the planted model's losses), so
  `ensure_dataset` regenerates only when the config changes.
  """
  rng = np.random.default_rng(config.seed)
  model, sample = generate(config, config.num_lines, rng)
  lines = format_lines(model, sample)
  os.makedirs(data_dir, exist_ok=True)
  shards, start = {}, 0
  for day in range(prepare.NUM_DAYS):
    size = (config.eval_day_lines if day == input_pipeline.EVAL_DAY
            else config.train_lines_per_day)
    counts = prepare.split_lines(lines[start:start + size], data_dir, day,
                                 config.lines_per_shard)
    start += size
    for name, num_lines in counts.items():
      shards[name] = {"lines": num_lines,
                      "bytes": os.path.getsize(os.path.join(data_dir, name))}
  eval_start = len(input_pipeline.TRAIN_DAYS) * config.train_lines_per_day
  validation = slice(eval_start + len(input_pipeline.TEST_SHARDS) * config.lines_per_shard,
                     None)
  probabilities = sample.probabilities[validation]
  labels = sample.labels[validation]
  prepare.write_manifest(
      data_dir, shards, lines_per_shard=config.lines_per_shard,
      generator={
          "config": dataclasses.asdict(config),
          "validation_click_rate": float(labels.mean()),
          "validation_bayes_loss": float(np.mean(
              -labels * np.log(probabilities) - (1 - labels) * np.log1p(-probabilities))),
          "validation_prior_loss": float(binary_entropy(labels.mean())),
      },
  )
  return data_dir


def ensure_dataset(data_dir: str, config: Config = Config()) -> str:
  """`write_dataset` unless ``data_dir`` already holds this config's data."""
  manifest = prepare.read_manifest(data_dir)
  generated = (manifest or {}).get("generator", {}).get("config")
  if generated != dataclasses.asdict(config) or input_pipeline.data_problem(data_dir):
    write_dataset(data_dir, config)
  return data_dir
