"""A tiny workload for harness tests: softmax regression on planted classes.

Inputs are Gaussian blobs around 4 class centres, so a linear model reaches
high accuracy within a few dozen NadamW steps. Targets are set per instance,
so tests can make them easy, impossible or time-based.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg import spec, targets
from algoperf_avg.evaluation import engine
from algoperf_avg.kit import config, data, losses

TOY_CONFIG = config.SizeConfig(
    num_train_examples=2048, num_eval_train_examples=256,
    num_validation_examples=256, num_test_examples=0, eval_batch_size=128,
    train_batch_size=32,
    reference_hparams=dict(learning_rate=0.05, one_minus_beta1=0.1, beta2=0.99,
                           weight_decay=0.0, warmup_factor=0.05, label_smoothing=0.0,
                           dropout_rate=0.0, grad_clip=None),
)


class ToyWorkload(spec.Workload):
  name = "toy"
  sizes = ("small",)
  loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
  configs = {"small": TOY_CONFIG}

  def __init__(self, size="small", validation_target=0.9, max_runtime_sec=60.0,
               eval_period_sec=0.0, step_hint=200, num_classes=4, dim=8,
               step_budget=None, eval_every_steps=None, **options):
    super().__init__(size, **options)
    self._targets = targets.Targets(
        metric="accuracy", direction="max", validation=validation_target,
        test=None, max_runtime_sec=max_runtime_sec, step_hint=step_hint,
        eval_period_sec=eval_period_sec, step_budget=step_budget,
        eval_every_steps=eval_every_steps,
    )
    self.num_classes, self.dim = num_classes, dim
    rng = np.random.default_rng(0)
    self.centres = rng.normal(size=(num_classes, dim)).astype(np.float32) * 2.0
    self._model = nn.Dense(num_classes)

  @property
  def targets(self):
    return self._targets

  def _split(self, split, n):
    seed = {"train": 1, "eval_train": 1, "validation": 2, "test": 3}[split]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, self.num_classes, size=n)
    x = self.centres[labels] + rng.normal(size=(n, self.dim)).astype(np.float32) * 1.5
    return x.astype(np.float32), labels.astype(np.int32)

  def _example_batch(self, x, y, sel):
    return {"inputs": x[sel], "targets": y[sel], "weights": np.ones(len(sel), np.float32)}

  def train_batches(self, data_rng, data_dir, batch_size, *, shard_index=0,
                    num_shards=1, start=None):
    x, y = self._split("train", self.num_train_examples)
    seed = data.seed_from_rng(jax.random.fold_in(data_rng, shard_index))

    def make(position):
      first = position or 0  # batches taken
      for k, sel in enumerate(data.index_batches(len(y), batch_size, seed, first), first):
        yield self._example_batch(x, y, sel), k + 1

    return data.Resumable(make, start)

  def eval_batches(self, split, data_dir, batch_size, *, shard_index=0, num_shards=1):
    n = {"eval_train": self.num_eval_train_examples,
         "validation": self.num_validation_examples}[split]
    x, y = self._split(split, n)
    start, stop = data.shard_bounds(n, shard_index, num_shards)
    for first in range(start, stop, batch_size):
      yield self._example_batch(x, y, np.arange(first, min(first + batch_size, stop)))

  def init_model_fn(self, rng):
    params = self._model.init(rng, jnp.zeros((1, self.dim)))["params"]
    return params, {}

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               dropout_rate=None):
    return self._model.apply({"params": params}, batch["inputs"]), model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    return losses.softmax_cross_entropy(label_batch, logits_batch, mask_batch,
                                        label_smoothing)

  def eval_step(self, params, model_state, batch, rng, metrics="all"):
    logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL,
                              None, False)
    loss = self.loss_fn(batch["targets"], logits, batch["weights"])
    correct = ((logits.argmax(-1) == batch["targets"]) * batch["weights"]).sum()
    return engine.EvalOutput(sums={"loss": loss["summed"], "correct": correct,
                                   "count": batch["weights"].sum()})

  def finalize_metrics(self, split, sums, per_example, metrics="all"):
    return {"loss": float(sums["loss"] / sums["count"]),
            "accuracy": float(sums["correct"] / sums["count"])}


class _BNNet(nn.Module):
  num_classes: int
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(16)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x)
    return nn.Dense(self.num_classes)(nn.relu(x))


class ToyBNWorkload(ToyWorkload):
  """The toy task through a network with batch norm (model state = statistics)."""

  name = "toy_bn"
  batch_norm_momentum = 0.9

  def __init__(self, momentum=0.9, declare_momentum=True, **kwargs):
    super().__init__(**kwargs)
    self._model = _BNNet(self.num_classes, momentum)
    self.batch_norm_momentum = momentum if declare_momentum else None

  def init_model_fn(self, rng):
    variables = self._model.init(rng, jnp.zeros((2, self.dim)), train=False)
    return variables["params"], variables["batch_stats"]

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               dropout_rate=None):
    train = mode == spec.ForwardPassMode.TRAIN
    variables = {"params": params, "batch_stats": model_state}
    if train and update_batch_norm:
      logits, updates = self._model.apply(variables, batch["inputs"], train=True,
                                          mutable=["batch_stats"])
      return logits, updates["batch_stats"]
    return self._model.apply(variables, batch["inputs"], train=train), model_state


class _EmbeddingNet(nn.Module):
  vocab: int
  dim: int

  @nn.compact
  def __call__(self, ids):
    table = self.param("embedding_table", nn.initializers.uniform(1.0 / self.vocab**0.5),
                       (self.vocab, self.dim))
    return nn.Dense(1)(table[ids].mean(1))


class EmbeddingToy(ToyWorkload):
  """A click model whose params are one big embedding table (Criteo's shape by default).

  For memory reports: ``vocab x dim`` float32 (4,194,304 x 128 = 2 GiB) plus a
  dense head; batches are 26 ids per example.
  """

  name = "embedding_toy"
  loss_type = spec.LossType.SIGMOID_CROSS_ENTROPY

  def __init__(self, vocab=4_194_304, dim=128, **kwargs):
    super().__init__(**kwargs)
    self._model = _EmbeddingNet(vocab, dim)
    self.vocab = vocab

  def init_model_fn(self, rng):
    return self._model.init(rng, jnp.zeros((1, 26), jnp.int32))["params"], {}

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               dropout_rate=None):
    return self._model.apply({"params": params}, batch["inputs"]), model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    return losses.sigmoid_cross_entropy(label_batch, logits_batch, mask_batch)

  def example_batch(self, batch_size, data_dir=None):
    rng = np.random.default_rng(0)
    return {"inputs": rng.integers(0, self.vocab, (batch_size, 26)).astype(np.int32),
            "targets": (rng.random(batch_size) < 0.03).astype(np.float32),
            "weights": np.ones(batch_size, np.float32)}
