"""A tiny workload for harness tests: softmax regression on planted classes.

Inputs are Gaussian blobs around 4 class centres, so a linear model reaches
high accuracy within a few dozen NadamW steps. Targets are set per instance,
so tests can make them easy, impossible or time-based.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from algoperf_avg import spec, targets


class ToyWorkload(spec.Workload):
  name = "toy"
  sizes = ("small",)
  loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY

  def __init__(self, size="small", validation_target=0.9, max_runtime_sec=60.0,
               eval_period_sec=0.0, step_hint=200, num_classes=4, dim=8):
    super().__init__(size)
    self._targets = targets.Targets(
        metric="accuracy", direction="max", validation=validation_target,
        test=None, max_runtime_sec=max_runtime_sec, step_hint=step_hint,
        eval_period_sec=eval_period_sec,
    )
    self.num_classes, self.dim = num_classes, dim
    rng = np.random.default_rng(0)
    self.centres = rng.normal(size=(num_classes, dim)).astype(np.float32) * 2.0
    self._model = nn.Dense(num_classes)
    self._eval_fn = jax.jit(self._eval_batch)

  @property
  def targets(self):
    return self._targets

  num_train_examples = 2048
  num_eval_train_examples = 256
  num_validation_examples = 256
  eval_batch_size = 128
  default_batch_size = 32
  requires_data_dir = False

  @property
  def reference_hparams(self):
    return dict(learning_rate=0.05, one_minus_beta1=0.1, beta2=0.99,
                weight_decay=0.0, warmup_factor=0.05, label_smoothing=0.0,
                dropout_rate=0.0, grad_clip=None)

  def _split(self, split, n):
    seed = {"train": 1, "eval_train": 1, "validation": 2, "test": 3}[split]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, self.num_classes, size=n)
    x = self.centres[labels] + rng.normal(size=(n, self.dim)).astype(np.float32) * 1.5
    return x.astype(np.float32), labels.astype(np.int32)

  def build_input_queue(self, data_rng, split, data_dir, global_batch_size, *,
                        repeat=True, num_batches=None):
    n = {"train": self.num_train_examples, "eval_train": self.num_eval_train_examples,
         "validation": self.num_validation_examples}[split]
    x, y = self._split(split, n)
    order_rng = np.random.default_rng(int(jax.random.randint(data_rng, (), 0, 2**30)))

    def batches():
      for _ in itertools.count():
        idx = order_rng.permutation(n) if split == "train" else np.arange(n)
        for start in range(0, n - global_batch_size + 1, global_batch_size):
          sel = idx[start:start + global_batch_size]
          yield {"inputs": x[sel], "targets": y[sel],
                 "weights": np.ones(len(sel), np.float32)}
        if not repeat:
          return

    it = batches()
    return itertools.islice(it, num_batches) if num_batches else it

  def init_model_fn(self, rng):
    params = self._model.init(rng, jnp.zeros((1, self.dim)))["params"]
    return params, {}

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               dropout_rate=None):
    return self._model.apply({"params": params}, batch["inputs"]), model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    one_hot = optax.smooth_labels(jax.nn.one_hot(label_batch, self.num_classes),
                                  label_smoothing)
    per_example = optax.softmax_cross_entropy(logits_batch, one_hot)
    mask = jnp.ones_like(per_example) if mask_batch is None else mask_batch
    return {"summed": (per_example * mask).sum(), "n_valid_examples": mask.sum(),
            "per_example": per_example * mask}

  def _eval_batch(self, params, batch, model_state):
    logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL,
                              None, False)
    loss = self.loss_fn(batch["targets"], logits, batch["weights"])
    correct = ((logits.argmax(-1) == batch["targets"]) * batch["weights"]).sum()
    return loss["summed"], correct, batch["weights"].sum()

  def eval_model_on_split(self, split, num_examples, global_batch_size, params,
                          model_state, rng, data_dir):
    totals = np.zeros(3)
    for batch in self.build_input_queue(rng, split, data_dir, global_batch_size,
                                        repeat=False):
      totals += np.array([float(v) for v in self._eval_fn(params, batch, model_state)])
    return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}


class _BNNet(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(16)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(self.num_classes)(nn.relu(x))


class ToyBNWorkload(ToyWorkload):
  """The toy task through a network with batch norm (model state = statistics)."""

  name = "toy_bn"

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._model = _BNNet(self.num_classes)

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
