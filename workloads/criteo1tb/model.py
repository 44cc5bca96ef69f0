"""DLRM-small for Criteo 1TB click prediction, as AlgoPerf's JAX model.

The architecture, initialisers and parameter tree follow AlgoPerf's
``DlrmSmall`` exactly (``Dense_0`` ... ``Dense_2`` for the bottom MLP,
``embedding_table``, ``Dense_3`` ... ``Dense_7`` for the top MLP), so
parameters move between the two without renaming. The sizes are fields, so
the CPU variant and the reduced-vocabulary test configuration run the same
code.

The input is AlgoPerf's batch ``inputs``: a ``(B, 13 + 26)`` float32 array
holding the transformed dense features and, as floats, the per-column hash
buckets of the categorical ones (`workloads.criteo1tb.input_pipeline`). The
model takes those buckets modulo ``vocab_size``: the second stage of the
two-stage hashing into one table shared by all columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf_avg.kit.layers import Dropout

DROPOUT_RATE = 0.0
VOCAB_SIZE = 4_194_304  # 32 * 128 * 1024 rows in the shared table
NUM_DENSE_FEATURES = 13
NUM_CATEGORICAL_FEATURES = 26


def dot_interact(features_BxFxD: jax.Array) -> jax.Array:
  """All pairwise dot products of ``F`` feature vectors, diagonal included.

  Returns ``(B, F * (F + 1) / 2)``: the upper triangle of the ``F x F`` Gram
  matrix of each example, row by row (`numpy.triu_indices` order).
  """
  num_features = features_BxFxD.shape[1]
  gram_BxFxF = jnp.matmul(features_BxFxD, jnp.swapaxes(features_BxFxD, 1, 2))
  rows, cols = np.triu_indices(num_features)
  return gram_BxFxF[:, rows, cols]


def _scaled_uniform(scale: float | jax.Array) -> nn.initializers.Initializer:
  """U[0, 1) times ``scale`` (AlgoPerf draws the table this way)."""
  base = jax.nn.initializers.uniform(scale=1.0)

  def init(key, shape, dtype=jnp.float32):
    return base(key, shape, dtype) * scale

  return init


class DlrmSmall(nn.Module):
  """DLRM-small: bottom MLP, one hashed embedding table, dot interaction, top MLP.

  The dense features go through the bottom MLP (ReLU after every layer); its
  output, read as ``width / embed_dim`` vectors of ``embed_dim``, is stacked
  with the 26 looked-up embeddings; all their pairwise dot products (upper
  triangle with the diagonal) are concatenated after the bottom output and
  fed to the top MLP (ReLU after every layer but the last, which has width 1
  and gives the click logit). Dropout, when its rate is not None, follows the
  second-to-last top layer.

  Attributes:
    vocab_size: rows of the shared embedding table (the second hashing stage
      takes bucket ids modulo this).
    num_dense_features: leading columns of ``inputs`` fed to the bottom MLP.
    mlp_bottom_dims: widths of the bottom MLP; the last must be a multiple of
      ``embed_dim``.
    mlp_top_dims: widths of the top MLP; the last is 1 (the logit).
    embed_dim: width of the embedding table.
  """

  vocab_size: int = VOCAB_SIZE
  num_dense_features: int = NUM_DENSE_FEATURES
  mlp_bottom_dims: Sequence[int] = (512, 256, 128)
  mlp_top_dims: Sequence[int] = (1024, 1024, 512, 256, 1)
  embed_dim: int = 128

  @nn.compact
  def __call__(
      self,
      inputs: jax.Array,
      train: bool,
      dropout_rate: float | jax.Array | None = DROPOUT_RATE,
  ) -> jax.Array:
    """Click logits ``(B, 1)`` for AlgoPerf's ``inputs`` ``(B, 13 + 26)``."""
    if self.mlp_bottom_dims[-1] % self.embed_dim:
      raise ValueError(
          f"the bottom MLP's last width {self.mlp_bottom_dims[-1]} is not a "
          f"multiple of embed_dim {self.embed_dim}")
    batch_size = inputs.shape[0]
    dense = inputs[:, : self.num_dense_features]
    # Bucket ids arrive as floats (AlgoPerf's batch is one float32 array).
    buckets = inputs[:, self.num_dense_features :].astype(jnp.int32)

    # Standard deviations are computed with jnp.sqrt in float32, as AlgoPerf
    # does, so that the same key draws bit-identical weights.
    x = dense
    for width in self.mlp_bottom_dims:
      x = nn.Dense(
          width,
          kernel_init=jax.nn.initializers.glorot_uniform(),
          bias_init=jax.nn.initializers.normal(stddev=jnp.sqrt(1.0 / width)),
      )(x)
      x = nn.relu(x)
    bottom_out = x

    table = self.param(
        "embedding_table", _scaled_uniform(1 / jnp.sqrt(self.vocab_size)),
        (self.vocab_size, self.embed_dim),
    )
    rows = jnp.reshape(buckets % self.vocab_size, (-1,))
    embedded = jnp.reshape(table[rows], (batch_size, -1, self.embed_dim))
    stacked = jnp.concatenate(
        [jnp.reshape(bottom_out, (batch_size, -1, self.embed_dim)), embedded],
        axis=1,
    )
    x = jnp.concatenate([bottom_out, dot_interact(stacked)], axis=-1)

    num_top = len(self.mlp_top_dims)
    for index, width in enumerate(self.mlp_top_dims):
      fan_in = x.shape[-1]
      x = nn.Dense(
          width,
          kernel_init=jax.nn.initializers.normal(
              stddev=jnp.sqrt(2.0 / (fan_in + width))),
          bias_init=jax.nn.initializers.normal(stddev=jnp.sqrt(1.0 / width)),
      )(x)
      if index < num_top - 1:
        x = nn.relu(x)
      if dropout_rate is not None and index == num_top - 2:
        x = Dropout()(x, dropout_rate, deterministic=not train)
    return x


# Widths of the small CPU variant (see `workloads.criteo1tb.synthetic`): a
# table of 8,192 x 16 and 191,889 parameters in all.
SMALL_WIDTHS = {
    "vocab_size": 8192,
    "mlp_bottom_dims": (64, 16),
    "mlp_top_dims": (128, 64, 1),
    "embed_dim": 16,
}
