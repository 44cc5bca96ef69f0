"""The shared losses against optax's closed forms and hand-computed cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algoperf_avg.kit import losses


def _rng(seed=0):
  return np.random.default_rng(seed)


def test_softmax_cross_entropy_matches_optax_with_smoothing_and_mask():
  logits = jnp.asarray(_rng().normal(size=(6, 5)), jnp.float32)
  labels = jnp.array([0, 4, 2, 2, 1, 3])
  mask = jnp.array([1, 1, 0, 1, 1, 0], jnp.float32)
  out = losses.softmax_cross_entropy(labels, logits, mask, label_smoothing=0.1)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, 5), 0.1)
  expected = optax.softmax_cross_entropy(logits, targets) * mask
  np.testing.assert_allclose(out["per_example"], expected, rtol=1e-6)
  np.testing.assert_allclose(out["summed"], expected.sum(), rtol=1e-6)
  assert float(out["n_valid_examples"]) == 4
  # One-hot labels give the same, and no mask counts every example.
  one_hot = losses.softmax_cross_entropy(jax.nn.one_hot(labels, 5), logits)
  plain = losses.softmax_cross_entropy(labels, logits)
  np.testing.assert_allclose(one_hot["per_example"], plain["per_example"], rtol=1e-6)
  assert float(plain["n_valid_examples"]) == 6


def test_softmax_cross_entropy_per_token_mask():
  logits = jnp.zeros((2, 3, 4))  # uniform: log(4) per token
  labels = jnp.array([[1, 2, 0], [3, 0, 0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]], jnp.float32)
  out = losses.softmax_cross_entropy(labels, logits, mask)
  assert out["per_example"].shape == (2, 3)
  np.testing.assert_allclose(out["summed"], 4 * np.log(4), rtol=1e-6)
  assert float(out["n_valid_examples"]) == 4


def test_sigmoid_cross_entropy_matches_optax_and_ignores_masked_nan_labels():
  logits = jnp.asarray(_rng(1).normal(size=(4, 3)) * 5, jnp.float32)
  labels = jnp.array([[1, 0, np.nan], [0, 1, 1], [np.nan, np.nan, 0], [1, 1, 0]])
  mask = jnp.asarray(~np.isnan(np.asarray(labels)), jnp.float32)
  out = losses.sigmoid_cross_entropy(labels, logits, mask)
  expected = optax.sigmoid_binary_cross_entropy(logits, jnp.nan_to_num(labels)) * mask
  assert np.isfinite(float(out["summed"]))
  np.testing.assert_allclose(out["per_example"], expected, rtol=1e-5, atol=1e-7)
  assert float(out["n_valid_examples"]) == 9
  smoothed = losses.sigmoid_cross_entropy(labels, logits, mask, label_smoothing=0.3)
  soft = jnp.nan_to_num(labels) * 0.7 + 0.3 / 3
  np.testing.assert_allclose(
      smoothed["per_example"], optax.sigmoid_binary_cross_entropy(logits, soft) * mask,
      rtol=1e-5, atol=1e-7)


def test_sigmoid_cross_entropy_per_example_mask_on_column_logits():
  logits = jnp.array([[2.0], [-1.0], [0.5]])  # (B, 1) click logits
  labels = jnp.array([1.0, 0.0, 1.0])
  out = losses.sigmoid_cross_entropy(labels, logits, jnp.array([1.0, 1.0, 0.0]))
  expected = optax.sigmoid_binary_cross_entropy(logits[:2, 0], labels[:2]).sum()
  np.testing.assert_allclose(out["summed"], expected, rtol=1e-6)
  assert float(out["n_valid_examples"]) == 2


def test_mean_absolute_error_is_per_example_mean():
  targets = jnp.zeros((3, 2, 2))
  predictions = jnp.stack([jnp.full((2, 2), v) for v in (1.0, -2.0, 4.0)])
  out = losses.mean_absolute_error(targets, predictions, jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(out["per_example"], [1.0, 2.0, 0.0])
  assert float(out["summed"]) == 3.0 and float(out["n_valid_examples"]) == 2


def test_ctc_loss_is_optax_normalised_per_target_token():
  rng = _rng(2)
  logits = jnp.asarray(rng.normal(size=(2, 6, 5)), jnp.float32)
  logit_paddings = jnp.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], jnp.float32)
  labels = jnp.array([[1, 2, 3], [4, 0, 0]])
  label_paddings = jnp.array([[0, 0, 0], [0, 1, 1]], jnp.float32)
  out = losses.ctc_loss(labels, label_paddings, logits, logit_paddings)
  expected = optax.ctc_loss(jax.nn.log_softmax(logits), logit_paddings, labels,
                            label_paddings)
  np.testing.assert_allclose(out["per_example"], expected, rtol=1e-6)
  assert float(out["n_valid_examples"]) == 4  # target tokens, not utterances
  masked = losses.ctc_loss(labels, label_paddings, logits, logit_paddings,
                           mask=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(masked["summed"], expected[0], rtol=1e-6)
  assert float(masked["n_valid_examples"]) == 3


def test_mismatched_label_shape_is_an_error():
  with pytest.raises(ValueError, match="fit neither"):
    losses.softmax_cross_entropy(jnp.zeros((2, 3, 4, 5)), jnp.zeros((2, 4)))


@pytest.mark.parametrize("loss", [losses.softmax_cross_entropy, losses.sigmoid_cross_entropy])
def test_label_smoothing_may_be_a_traced_jit_argument(loss):
  """AlgoPerf's baselines pass ``label_smoothing`` into their jitted step."""
  logits = jax.random.normal(jax.random.key(0), (4, 3))
  labels = (jnp.array([0, 2, 1, 0]) if loss is losses.softmax_cross_entropy
            else jnp.array([[0.0, 1.0, 1.0]] * 4))
  traced = jax.jit(lambda a: loss(labels, logits, label_smoothing=a)["summed"])
  for a in (0.0, 0.2):
    np.testing.assert_allclose(traced(a), loss(labels, logits, label_smoothing=a)["summed"],
                               rtol=1e-6)
