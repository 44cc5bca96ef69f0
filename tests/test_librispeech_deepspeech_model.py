"""AlgoPerf's DeepSpeech: parameter tree and count, golden outputs, batch norm, small size.

The golden values are AlgoPerf's own JAX DeepSpeech's (commit 2c90454f,
``librispeech_deepspeech/librispeech_jax/models.py`` and ``lstm.py``) on the
tiny config below: from the same key its initial weights equal ours
exactly; on the same perturbed weights and input (one utterance with 4
padded frames) ours matched its eval logits to 6e-6 (max abs) and its
training-mode logits (dropout 0.1, same masks; SpecAugment off, since
AlgoPerf draws its key from another module path) to 2e-5, its updated batch
statistics to 4e-9. This test needs no AlgoPerf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from algoperf_avg import registry, spec
from workloads.librispeech_deepspeech import model


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def test_full_size_has_algoperfs_parameter_count_and_tree():
  workload = registry.get_workload("librispeech_deepspeech", "full")
  params, state = jax.eval_shape(workload.init_model_fn, jax.random.key(0))
  assert _count(params) == 18_381_312 == workload.num_params
  assert _count(state) == 9_216  # 6 + 3 batch norms x (mean, var) x 512
  assert sorted(params) == (
      [f"BatchRNN_{i}" for i in range(6)] + ["Dense_0"]
      + [f"FeedForwardModule_{i}" for i in range(3)] + ["LayerNorm_0", "Subsample_0"])
  lstm = params["BatchRNN_0"]["LSTM_0"]["LSTM"]
  assert sorted(lstm) == ["LSTMSequenceEncoder_0", "LSTMSequenceEncoder_1"]
  cell = lstm["LSTMSequenceEncoder_1"]["cell"]
  assert sorted(cell) == ["hf", "hg", "hi", "ho", "if", "ig", "ii", "io"]
  assert cell["ii"]["kernel"].shape == (512, 256) and cell["hi"]["bias"].shape == (256,)
  assert sorted(params["Subsample_0"]) == ["Conv2dSubsampling_0", "Conv2dSubsampling_1",
                                           "Dense_0"]
  assert params["Subsample_0"]["Dense_0"]["kernel"].shape == (20 * 512, 512)
  assert sorted(params["FeedForwardModule_0"]) == ["BatchNorm_0", "Dense_0"]
  assert sorted(state["batch_stats"]["BatchRNN_0"]["BatchNorm_0"]) == ["mean", "var"]
  assert params["Dense_0"]["kernel"].shape == (512, 1024)
  assert workload.is_output_params("Dense_0")


def _tiny(**fields):
  config = model.DeepSpeechConfig(vocab_size=32, encoder_dim=32, num_lstm_layers=2,
                                  num_ffn_layers=2, **fields)
  rng = np.random.default_rng(0)
  audio = (rng.standard_normal((2, 8_000)) * 3_000).astype(np.float32)
  paddings = np.zeros((2, 8_000), np.float32)
  paddings[1, 5_000:] = 1
  return model.DeepSpeech(config), audio, paddings


_EIGHT_FRAMES = 8 * 160  # samples: 8 more 10 ms frames


def _perturbed(variables):
  """Every weight moved off its initial value; running variances kept positive."""
  moved = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
                       variables)
  stats = jax.tree.map_with_path(
      lambda path, p: jnp.abs(p) + 0.5 if path[-1].key == "var" else p,
      moved["batch_stats"])
  return {"params": moved["params"], "batch_stats": stats}


def test_initialisation_equals_algoperfs():
  deepspeech, audio, paddings = _tiny()
  params = deepspeech.init({"params": jax.random.key(0)}, audio, paddings,
                           train=False)["params"]
  cell = params["BatchRNN_1"]["LSTM_0"]["LSTM"]["LSTMSequenceEncoder_1"]["cell"]
  # AlgoPerf's model initialised from the same key:
  np.testing.assert_allclose(float(jnp.abs(cell["ii"]["kernel"]).sum()), 74.42742919921875,
                             rtol=1e-6)
  np.testing.assert_allclose(float(cell["hi"]["kernel"][0, 0]), 0.20730221271514893,
                             rtol=1e-6)
  np.testing.assert_allclose(
      float(jnp.abs(params["Subsample_0"]["Conv2dSubsampling_1"]["kernel"]).sum()),
      468.74908447265625, rtol=1e-6)
  np.testing.assert_allclose(float(jnp.abs(params["Dense_0"]["kernel"]).sum()),
                             157.05715942382812, rtol=1e-6)
  total = sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(params))
  np.testing.assert_allclose(total, 3944.077392578125, rtol=1e-6)


def test_golden_outputs_equal_algoperfs():
  deepspeech, audio, paddings = _tiny()
  variables = _perturbed(deepspeech.init({"params": jax.random.key(0)}, audio, paddings,
                                         train=False))
  logits, logit_paddings = deepspeech.apply(variables, audio, paddings, train=False)
  assert logits.shape == (2, 12, 32)
  np.testing.assert_array_equal(np.asarray(logit_paddings).sum(axis=1), [0, 4])
  # AlgoPerf's model on the same weights and input:
  np.testing.assert_allclose(float(logits.sum()), 84.28565216064453, atol=2e-3)
  np.testing.assert_allclose(float(jnp.abs(logits).sum()), 784.102783203125, rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(logits[0, 0, :4]),
      [0.4354044795036316, -0.5724174380302429, 2.5090019702911377, -0.209311842918396],
      atol=2e-5)
  np.testing.assert_allclose(
      np.asarray(logits[1, 3, :4]),
      [0.30416643619537354, -0.14500053226947784, 2.7427918910980225, 0.008922025561332703],
      atol=2e-5)


def test_training_mode_equals_algoperfs_dropout_and_batch_statistics():
  deepspeech, audio, paddings = _tiny(use_specaug=False)
  variables = _perturbed(deepspeech.init({"params": jax.random.key(0)}, audio, paddings,
                                         train=False))
  (logits, _), state = deepspeech.apply(variables, audio, paddings, train=True,
                                        rngs={"dropout": jax.random.key(1)},
                                        mutable=["batch_stats"], dropout_rate=0.1)
  # AlgoPerf's model in training mode, same dropout key:
  np.testing.assert_allclose(float(logits.sum()), -19.934446334838867, atol=2e-3)
  np.testing.assert_allclose(float(jnp.abs(logits).sum()), 717.952880859375, rtol=1e-5)
  stats = state["batch_stats"]["BatchRNN_1"]["BatchNorm_0"]
  assert stats["mean"].shape == (32,)  # AlgoPerf's become (1, 1, 32): same numbers
  np.testing.assert_allclose(float(stats["mean"].sum()), -0.4362955689430237, atol=1e-5)
  np.testing.assert_allclose(float(stats["var"].sum()), 47.54384231567383, rtol=1e-6)


def test_batch_norm_counts_only_valid_frames_and_updates_in_training():
  # No dropout: its masks are drawn per frame, so they change with the length.
  deepspeech, audio, paddings = _tiny(feed_forward_dropout_rate=0.0)
  # Both utterances end in padding, so frames past the end are all padding
  # (a frame straddling the last sample would count as valid).
  paddings = paddings.copy()
  paddings[0, 6_000:] = 1
  variables = deepspeech.init({"params": jax.random.key(0)}, audio, paddings, train=False)

  def train_stats(audio, paddings):
    _, state = deepspeech.apply(variables, audio, paddings, train=True,
                                rngs={"dropout": jax.random.key(1)},
                                mutable=["batch_stats"], dropout_rate=0.0)
    return state["batch_stats"]

  stats = train_stats(audio, paddings)
  old = variables["batch_stats"]["FeedForwardModule_1"]["BatchNorm_0"]
  assert not np.allclose(stats["FeedForwardModule_1"]["BatchNorm_0"]["mean"], old["mean"])
  # A longer padded tail (8 more frames, 2 after subsampling, so the stride-2
  # grids stay aligned) adds only padded frames: the statistics must not move.
  longer = np.pad(audio, [(0, 0), (0, _EIGHT_FRAMES)], constant_values=20_000.0)
  longer_paddings = np.pad(paddings, [(0, 0), (0, _EIGHT_FRAMES)], constant_values=1.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
               stats, train_stats(longer, longer_paddings))
  # Without training or recomputation the statistics are only read.
  _, state = deepspeech.apply(variables, audio, paddings, train=False, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])


def test_valid_frames_do_not_depend_on_how_much_padding_follows():
  """The backward LSTM reads each utterance's valid frames only (no padding first).

  The tail grows by 8 frames, 2 after subsampling: an odd frame count would
  shift the "SAME" stride-2 convolutions' grid (as in AlgoPerf's model).
  """
  deepspeech, audio, paddings = _tiny()
  variables = _perturbed(deepspeech.init({"params": jax.random.key(0)}, audio, paddings,
                                         train=False))
  logits, logit_paddings = deepspeech.apply(variables, audio, paddings, train=False)
  longer = np.pad(audio, [(0, 0), (0, _EIGHT_FRAMES)])
  longer_paddings = np.pad(paddings, [(0, 0), (0, _EIGHT_FRAMES)], constant_values=1.0)
  more, more_paddings = deepspeech.apply(variables, longer, longer_paddings, train=False)
  valid = int(np.sum(1 - np.asarray(logit_paddings)[1]))
  assert valid == 8 and int(np.sum(1 - np.asarray(more_paddings)[1])) == valid
  np.testing.assert_allclose(np.asarray(more[1, :valid]), np.asarray(logits[1, :valid]),
                             rtol=1e-4, atol=1e-5)


def test_reverse_valid_frames_reverses_each_prefix_and_is_its_own_inverse():
  x = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5, 1)
  flipped = model.reverse_valid_frames(x, jnp.array([3, 5]))
  # The valid frames first, reversed; the padded ones after them (reversed too).
  np.testing.assert_array_equal(flipped[..., 0], [[2, 1, 0, 4, 3], [9, 8, 7, 6, 5]])
  np.testing.assert_array_equal(model.reverse_valid_frames(flipped, jnp.array([3, 5])), x)


def test_small_workload_learns_a_batch():
  workload = registry.get_workload("librispeech_deepspeech", "small")
  assert workload.loss_type == spec.LossType.CTC_LOSS
  params, state = workload.init_model_fn(jax.random.key(0))
  assert workload.num_params == _count(params) and _count(state) == (2 + 1) * 2 * 128
  batch = next(iter(workload.train_batches(jax.random.key(0), None, 8)))
  tx = optax.adam(3e-3)

  def loss(params, state):
    (logits, paddings), new_state = workload.model_fn(
        params, batch, state, spec.ForwardPassMode.TRAIN, jax.random.key(1),
        update_batch_norm=True)
    out = workload.loss_fn(batch["targets"], (logits, paddings))
    return out["summed"] / out["n_valid_examples"], new_state

  @jax.jit
  def step(params, state, opt_state):
    (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, value

  opt_state, initial_state = tx.init(params), state
  losses = []
  for _ in range(25):
    params, state, opt_state, value = step(params, state, opt_state)
    losses.append(float(value))
  assert np.isfinite(losses).all()
  assert not np.allclose(jax.tree.leaves(state)[0], jax.tree.leaves(initial_state)[0])
  assert losses[-1] < 0.5 * losses[0], losses
