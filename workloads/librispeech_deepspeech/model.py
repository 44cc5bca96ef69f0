"""AlgoPerf's DeepSpeech for LibriSpeech (Amodei et al., 2016), in Flax.

The modules, parameter names and initialisers are those of AlgoPerf's JAX
model (``librispeech_deepspeech/librispeech_jax/models.py`` and
``lstm.py``), so a key gives the same weights and the same outputs::

    log-mel features (kit.speech_features); SpecAugment in training
    Subsample: two 3x3 stride-2 ReLU convolutions, Dense to the model width, dropout
    6 x  x = x + BatchRNN(x)          # padding-aware batch norm, bidirectional LSTM
    3 x  x = x + FeedForwardModule(x) # padding-aware batch norm, Dense, ReLU, dropout
    LayerNorm, Dense to the vocabulary (the CTC head)

There is no position embedding. Each direction of a bidirectional LSTM has
half the model width and the two are concatenated. The backward direction
reads each utterance's valid frames last-to-first (its padding stays at the
end); both directions also run over the padded frames, whose outputs the
next batch norm zeroes.

Two details kept from AlgoPerf on purpose: the feed-forward blocks drop out
at a fixed 0.1 (AlgoPerf's residual branch never passes its dropout rate on),
while ``dropout_rate`` sets only the dropout after the subsampling; and the
batch norm is in its training form (batch statistics) whenever training or
recomputing statistics.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from algoperf_avg.kit import layers, speech_layers


@dataclasses.dataclass(frozen=True)
class DeepSpeechConfig(speech_layers.SpeechModelConfig):
  """Model hyperparameters (AlgoPerf's ``DeepspeechConfig`` defaults)."""

  num_lstm_layers: int = 6
  num_ffn_layers: int = 3
  feed_forward_dropout_rate: float = speech_layers.DROPOUT_RATE


def reverse_valid_frames(x_BxTxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """Each row's first ``length`` frames in reverse order, then its padded frames (reversed).

  Frame ``t`` of the result is frame ``(length - 1 - t) mod T`` of the input,
  so applying it twice gives back the input.
  """
  time = x_BxTxD.shape[1]
  source_BxT = (lengths_B[:, None] - 1 - jnp.arange(time)[None, :]) % time
  return jnp.take_along_axis(x_BxTxD, source_BxT[:, :, None], axis=1)


class SequenceEncoder(nn.Module):
  """One direction: an `nn.OptimizedLSTMCell` (named ``cell``) run over every frame from zeros."""

  hidden_size: int
  reverse: bool = False

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    if self.reverse:
      x_BxTxD = reverse_valid_frames(x_BxTxD, lengths_B)
    over_time = nn.scan(nn.OptimizedLSTMCell, variable_broadcast="params",
                        split_rngs={"params": False}, in_axes=1, out_axes=1)
    cell = over_time(self.hidden_size, name="cell")
    batch = x_BxTxD.shape[0]
    zeros = jnp.zeros((batch, self.hidden_size), x_BxTxD.dtype)
    _, outputs_BxTxH = cell((zeros, zeros), x_BxTxD)
    if self.reverse:
      outputs_BxTxH = reverse_valid_frames(outputs_BxTxH, lengths_B)
    return outputs_BxTxH


class Bidirectional(nn.Module):
  """Forward and backward `SequenceEncoder`, outputs concatenated (forward first)."""

  hidden_size: int

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    # AlgoPerf's names: <parent name>SequenceEncoder_<cell index>.
    forward = SequenceEncoder(self.hidden_size, name=f"{self.name}SequenceEncoder_0")
    backward = SequenceEncoder(self.hidden_size, reverse=True,
                               name=f"{self.name}SequenceEncoder_1")
    return jnp.concatenate([forward(x_BxTxD, lengths_B), backward(x_BxTxD, lengths_B)],
                           axis=-1)


class LSTM(nn.Module):
  """A bidirectional LSTM layer, under AlgoPerf's ``LSTM_i/LSTM`` parameter path."""

  hidden_size: int

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    return Bidirectional(self.hidden_size, name="LSTM")(x_BxTxD, lengths_B)


class BatchRNN(nn.Module):
  """Padding-aware batch norm, then a bidirectional LSTM of half the width per direction."""

  config: DeepSpeechConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, use_running_average, update_batch_norm):
    config = self.config
    y = speech_layers.BatchNorm(config.encoder_dim, config.batch_norm_momentum,
                                config.batch_norm_epsilon)(
        x, paddings_BxT, use_running_average=use_running_average, update=update_batch_norm)
    lengths = jnp.sum(1 - paddings_BxT, axis=-1).astype(jnp.int32)
    return LSTM(config.encoder_dim // 2)(y, lengths)


class FeedForwardModule(nn.Module):
  """Padding-aware batch norm, Dense, ReLU, padded frames zeroed, dropout."""

  config: DeepSpeechConfig

  @nn.compact
  def __call__(self, x, paddings_BxT, train, use_running_average, update_batch_norm):
    config = self.config
    y = speech_layers.BatchNorm(config.encoder_dim, config.batch_norm_momentum,
                                config.batch_norm_epsilon)(
        x, paddings_BxT, use_running_average=use_running_average, update=update_batch_norm)
    y = nn.relu(nn.Dense(config.encoder_dim, kernel_init=speech_layers.XAVIER)(y))
    y = y * (1 - paddings_BxT)[..., None]
    return layers.Dropout()(y, config.feed_forward_dropout_rate, deterministic=not train)


class DeepSpeech(speech_layers.SpeechModel):
  """PCM ``(B, N)`` and paddings -> CTC logits ``(B, T, vocab)`` and frame paddings.

  `speech_layers.SpeechModel` with ``num_lstm_layers`` `BatchRNN` then
  ``num_ffn_layers`` `FeedForwardModule`, each residual, as the encoder.
  """

  config: DeepSpeechConfig

  def encode(self, x, paddings_BxT, train, update_batch_norm, use_running_average_bn,
             dropout_rate):
    """The residual LSTM and feed-forward blocks (their dropout rate is the config's)."""
    del dropout_rate
    for _ in range(self.config.num_lstm_layers):
      x = x + BatchRNN(self.config)(x, paddings_BxT, use_running_average_bn,
                                    update_batch_norm)
    for _ in range(self.config.num_ffn_layers):
      x = x + FeedForwardModule(self.config)(x, paddings_BxT, train,
                                             use_running_average_bn, update_batch_norm)
    return x
