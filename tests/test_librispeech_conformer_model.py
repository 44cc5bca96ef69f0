"""AlgoPerf's Conformer: parameter tree and count, golden outputs, batch norm.

The golden values are AlgoPerf's own JAX Conformer's outputs (commit
2c90454f, ``librispeech_jax/models.py``) on the same weights and input,
which ours matched to 3e-6; this test needs no AlgoPerf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from algoperf_avg import registry, spec
from workloads.librispeech_conformer import model


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def test_full_size_has_algoperfs_parameter_count_and_tree():
  workload = registry.get_workload("librispeech_conformer", "full")
  params, state = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
  assert _count(params) == 32_321_792 == workload.num_params
  assert _count(state) == 4_096
  assert sorted(params) == ["ConformerBlock_0", "ConformerBlock_1", "ConformerBlock_2",
                            "ConformerBlock_3", "Dense_0", "LayerNorm_0", "Subsample_0"]
  block = params["ConformerBlock_0"]
  assert sorted(block) == ["ConvolutionBlock_0", "FeedForwardModule_0",
                           "FeedForwardModule_1", "LayerNorm_0",
                           "MultiHeadedSelfAttention_0"]
  attention = block["MultiHeadedSelfAttention_0"]["MultiHeadDotProductAttention_0"]
  assert attention["QueryScaler_0"]["scale"].shape == (64,)  # per head
  assert params["Dense_0"]["kernel"].shape == (512, 1024)
  assert workload.is_output_params("Dense_0")


def _tiny():
  config = model.ConformerConfig(vocab_size=32, encoder_dim=32, num_attention_heads=2,
                                 num_encoder_layers=1)
  rng = np.random.default_rng(0)
  audio = (rng.standard_normal((2, 8_000)) * 3_000).astype(np.float32)
  paddings = np.zeros((2, 8_000), np.float32)
  paddings[1, 5_000:] = 1
  return model.Conformer(config), audio, paddings


def test_golden_outputs_equal_algoperfs():
  conformer, audio, paddings = _tiny()
  variables = conformer.init({"params": jax.random.key(0)}, audio, paddings, train=False)
  variables = jax.tree.map(
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape), variables)
  logits, logit_paddings = conformer.apply(variables, audio, paddings, train=False)
  assert logits.shape == (2, 12, 32)
  np.testing.assert_array_equal(np.asarray(logit_paddings).sum(axis=1), [0, 4])
  # AlgoPerf's model on the same weights and input:
  np.testing.assert_allclose(float(logits.sum()), -30.358139038085938, atol=2e-3)
  np.testing.assert_allclose(float(jnp.abs(logits).sum()), 765.1881713867188, rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(logits[0, 0, :4]),
      [-0.20629531145095825, -1.1312421560287476, 2.4474053382873535, -0.131256103515625],
      atol=2e-5)
  np.testing.assert_allclose(
      np.asarray(logits[1, 3, :4]),
      [-0.15285338461399078, -0.884333074092865, 1.961554765701294, 0.4978160262107849],
      atol=2e-5)


def test_batch_norm_counts_only_valid_frames_and_updates_in_training():
  conformer, audio, paddings = _tiny()
  variables = conformer.init({"params": jax.random.key(0)}, audio, paddings, train=False)
  (_, _), state = conformer.apply(variables, audio, paddings, train=True,
                                  rngs={"dropout": jax.random.key(1)},
                                  mutable=["batch_stats"], dropout_rate=0.0)
  stats = state["batch_stats"]["ConformerBlock_0"]["ConvolutionBlock_0"]["BatchNorm_0"]
  old = variables["batch_stats"]["ConformerBlock_0"]["ConvolutionBlock_0"]["BatchNorm_0"]
  assert not np.allclose(stats["mean"], old["mean"])
  noisy = audio.copy()
  noisy[1, 5_000:] = 20_000.0  # padding: must change nothing
  (_, _), noisy_state = conformer.apply(variables, noisy, paddings, train=True,
                                        rngs={"dropout": jax.random.key(1)},
                                        mutable=["batch_stats"], dropout_rate=0.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state, noisy_state)


def test_small_workload_trains_bn_state_and_decodes_shapes():
  workload = registry.get_workload("librispeech_conformer", "small")
  params, state = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
  assert workload.num_params == _count(params) and _count(state) == 2 * 2 * 64
  assert workload.loss_type == spec.LossType.CTC_LOSS
