"""The standard losses of AlgoPerf's workloads, written once.

Every function returns AlgoPerf's loss dict::

    {"summed": scalar, "n_valid_examples": scalar, "per_example": array}

so a submission's training loss is ``summed / n_valid_examples`` (the mean
over valid examples, or over valid tokens for sequence workloads) and an
evaluation sums both over a whole split before dividing (never a mean of
per-batch means). Masks may be per example or per token/label; entries where
the mask is 0 contribute nothing, and labels there may be anything (even NaN).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LossDict = dict[str, jax.Array]


def _result(per_example: jax.Array, n_valid: jax.Array) -> LossDict:
  return {"summed": per_example.sum(), "n_valid_examples": n_valid,
          "per_example": per_example}


def _smooths(label_smoothing: float | jax.Array) -> bool:
  """False only for a literal zero: a traced value (AlgoPerf's baselines pass
  ``label_smoothing`` as a jit argument) is applied as arithmetic."""
  return not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0)


def softmax_cross_entropy(
    labels: jax.Array,
    logits: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> LossDict:
  """Cross-entropy of ``logits (..., C)`` against integer or one-hot labels.

  Label smoothing is `optax.smooth_labels` (``(1 - a) * y + a / C``), as in
  AlgoPerf's image and translation workloads. ``mask`` has the labels' batch
  shape (``(B,)`` for classification, ``(B, L)`` per token for translation);
  ``n_valid_examples`` is its sum (every entry counts without a mask).

  Example:
    >>> import jax.numpy as jnp
    >>> out = softmax_cross_entropy(jnp.array([0, 1]), jnp.zeros((2, 4)),
    ...                             mask=jnp.array([1.0, 0.0]))
    >>> round(float(out["summed"]), 4), float(out["n_valid_examples"])
    (1.3863, 1.0)
  """
  num_classes = logits.shape[-1]
  if labels.ndim == logits.ndim:  # already one-hot (or soft, e.g. mixup)
    targets = labels.astype(logits.dtype)
  elif labels.ndim == logits.ndim - 1:
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  else:
    raise ValueError(
        f"labels {labels.shape} fit neither logits {logits.shape} nor their "
        "batch shape")
  if _smooths(label_smoothing):
    targets = optax.smooth_labels(targets, label_smoothing)
  per_example = -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)
  if mask is None:
    return _result(per_example, jnp.asarray(per_example.size, logits.dtype))
  mask = jnp.reshape(mask, per_example.shape)
  per_example = jnp.where(mask > 0, per_example * mask, 0.0)
  return _result(per_example, mask.sum())


def sigmoid_cross_entropy(
    labels: jax.Array,
    logits: jax.Array,
    mask: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> LossDict:
  """Binary cross-entropy of ``logits`` (any shape) against 0/1 ``labels``.

  Computed stably as ``max(x, 0) - x*y + log1p(exp(-|x|))``. Label smoothing
  smooths over the last axis as `optax.smooth_labels` does
  (``y * (1 - a) + a / num_tasks``; OGBG's multi-task labels). ``mask`` has
  the logits' shape or is broadcastable to it (a per-example mask of a
  ``(B, 1)`` click logit); ``n_valid_examples`` counts its nonzero entries
  weighted by value.
  """
  labels = jnp.reshape(labels, logits.shape) if labels.size == logits.size else labels
  valid = None if mask is None else jnp.broadcast_to(
      jnp.reshape(mask, mask.shape + (1,) * (logits.ndim - mask.ndim)), logits.shape)
  if valid is not None:
    labels = jnp.where(valid > 0, labels, 0.0)  # masked labels may be NaN
  labels = labels.astype(logits.dtype)
  if _smooths(label_smoothing):
    labels = labels * (1.0 - label_smoothing) + label_smoothing / labels.shape[-1]
  per_example = (jnp.maximum(logits, 0.0) - logits * labels
                 + jnp.log1p(jnp.exp(-jnp.abs(logits))))
  if valid is None:
    return _result(per_example, jnp.asarray(per_example.size, logits.dtype))
  per_example = jnp.where(valid > 0, per_example * valid, 0.0)
  return _result(per_example, valid.sum())


def mean_absolute_error(
    targets: jax.Array,
    predictions: jax.Array,
    mask: jax.Array | None = None,
) -> LossDict:
  """Per-example mean |prediction - target| over all non-batch axes (fastMRI's L1).

  ``mask`` is per example, ``(B,)``; ``n_valid_examples`` is its sum.
  """
  per_example = jnp.mean(jnp.abs(predictions - targets),
                         axis=tuple(range(1, predictions.ndim)))
  if mask is None:
    return _result(per_example, jnp.asarray(per_example.shape[0], predictions.dtype))
  mask = jnp.reshape(mask, per_example.shape)
  return _result(jnp.where(mask > 0, per_example * mask, 0.0), mask.sum())


def ctc_loss(
    labels: jax.Array,
    label_paddings: jax.Array,
    logits: jax.Array,
    logit_paddings: jax.Array,
    mask: jax.Array | None = None,
    blank_id: int = 0,
) -> LossDict:
  """Connectionist temporal classification loss, normalised per target token.

  As AlgoPerf's LibriSpeech workloads: `optax.ctc_loss` of the log-softmax of
  ``logits (B, T, K)`` with ``logit_paddings (B, T)`` (1 = padded frame)
  against ``labels (B, N)`` with ``label_paddings (B, N)``; the per-utterance
  losses are summed and ``n_valid_examples`` is the number of (valid
  utterances') non-padded target tokens, at least 1. ``mask`` is per
  utterance, ``(B,)``.
  """
  per_example = optax.ctc_loss(jax.nn.log_softmax(logits), logit_paddings, labels,
                               label_paddings, blank_id=blank_id)
  tokens = 1.0 - label_paddings
  if mask is not None:
    mask = jnp.reshape(mask, per_example.shape)
    per_example = jnp.where(mask > 0, per_example * mask, 0.0)
    tokens = tokens * (mask[:, None] > 0)
  return _result(per_example, jnp.maximum(tokens.sum(), 1.0))
