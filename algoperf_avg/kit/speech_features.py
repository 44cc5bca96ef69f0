"""Speech features both LibriSpeech models compute in-model: log-mel and SpecAugment.

The front end is AlgoPerf's (after lingvo's ``MelAsrFrontend``): 16 kHz PCM
scaled by 2**-15, 25 ms frames every 10 ms (401 samples with the extra one
pre-emphasis needs), HTK-flavoured pre-emphasis 0.97, a periodic Hann
window, the power of a 512-point FFT, 80 HTK mel bins over 125-7600 Hz
(`tf.signal.linear_to_mel_weight_matrix`), the log of the energies floored
at 1e-5, and a fixed per-bin mean/std normalisation (LibriSpeech's training
statistics). A frame is padding when every sample it covers is.

SpecAugment (Park et al., 2019), as AlgoPerf's JAX models use it in
training: 2 frequency masks of up to 27 bins and 10 time masks, each up to
5% of the utterance's frames.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# Per-bin statistics of the log-mel energies of LibriSpeech's training data
# (lingvo's, the numbers AlgoPerf's models normalise with).
LIBRISPEECH_MEAN = (
    -7.604781627655029, -7.120622634887695, -6.886424541473389, -6.870576858520508, -6.966772079467773,
    -7.108409404754639, -6.952802658081055, -6.783994197845459, -6.619552135467529, -6.487626552581787,
    -6.4120659828186035, -6.394047737121582, -6.424487113952637, -6.399371147155762, -6.515827178955078,
    -6.713799953460693, -6.847687721252441, -6.988500118255615, -6.922138690948486, -7.146148681640625,
    -7.204040050506592, -7.053755283355713, -7.314038276672363, -7.1223249435424805, -7.30251407623291,
    -7.121214389801025, -7.242573261260986, -7.173053741455078, -7.0979413986206055, -7.088747501373291,
    -6.984991073608398, -6.878773212432861, -6.760275363922119, -6.630094528198242, -6.5145769119262695,
    -6.424505710601807, -6.356513500213623, -6.31787633895874, -6.266077041625977, -6.246832847595215,
    -6.2821526527404785, -6.190838813781738, -6.2484354972839355, -6.147264003753662, -6.092472553253174,
    -6.0171003341674805, -5.925040245056152, -5.853583335876465, -5.820910930633545, -5.811892986297607,
    -5.80783748626709, -5.771462917327881, -5.745373249053955, -5.770565509796143, -5.776564121246338,
    -5.783167362213135, -5.795408725738525, -5.799482345581055, -5.802347660064697, -5.804711818695068,
    -5.8168182373046875, -5.884479999542236, -5.972710609436035, -6.044466018676758, -6.128486633300781,
    -6.2257585525512695, -6.315749645233154, -6.39061164855957, -6.492859840393066, -6.5498456954956055,
    -6.605432033538818, -6.6508378982543945, -6.66917610168457, -6.672688961029053, -6.684234619140625,
    -6.697457790374756, -6.75471830368042, -6.794914245605469, -6.8634209632873535, -6.94186544418335,
)
LIBRISPEECH_STD = (
    3.435328245162964, 3.5962932109832764, 3.701247215270996, 3.7369205951690674, 3.7535104751586914,
    3.693629264831543, 3.6922497749328613, 3.7641522884368896, 3.8419716358184814, 3.899984836578369,
    3.9294240474700928, 3.9317409992218018, 3.9139585494995117, 3.9031598567962646, 3.8691999912261963,
    3.8155081272125244, 3.7644970417022705, 3.7099106311798096, 3.6965086460113525, 3.600376605987549,
    3.5493226051330566, 3.5465121269226074, 3.45003604888916, 3.4712812900543213, 3.408461093902588,
    3.4408135414123535, 3.4104881286621094, 3.4217638969421387, 3.4312851428985596, 3.4199209213256836,
    3.4305806159973145, 3.4382665157318115, 3.4580366611480713, 3.4817991256713867, 3.495871067047119,
    3.5036792755126953, 3.5047574043273926, 3.498873472213745, 3.493056058883667, 3.4822943210601807,
    3.459430456161499, 3.4612770080566406, 3.455906391143799, 3.4755423069000244, 3.497154951095581,
    3.532655715942383, 3.5705199241638184, 3.592031240463257, 3.596907377243042, 3.5913500785827637,
    3.5865931510925293, 3.5826809406280518, 3.5837743282318115, 3.5895791053771973, 3.5819313526153564,
    3.583786964416504, 3.586118459701538, 3.588958978652954, 3.592214822769165, 3.5939455032348633,
    3.585663080215454, 3.588411331176758, 3.592102289199829, 3.5870490074157715, 3.5806570053100586,
    3.5731067657470703, 3.561753273010254, 3.54980731010437, 3.5527374744415283, 3.547536611557007,
    3.538784980773926, 3.525617837905884, 3.503183603286743, 3.4922726154327393, 3.487964630126953,
    3.4725594520568848, 3.455838918685913, 3.435182809829712, 3.428429365158081, 3.429917097091675,
)


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
  """The log-mel front end (AlgoPerf's ``LibrispeechPreprocessingConfig``)."""

  sample_rate: float = 16_000.0
  frame_size_ms: float = 25.0
  frame_step_ms: float = 10.0
  preemphasis: float = 0.97
  num_bins: int = 80
  lower_edge_hertz: float = 125.0
  upper_edge_hertz: float = 7_600.0
  log_floor: float = 1e-5
  input_scale: float = 2.0**-15  # int16 PCM -> [-1, 1)

  @property
  def frame_step(self) -> int:
    return int(round(self.sample_rate * self.frame_step_ms / 1000.0))

  @property
  def frame_size(self) -> int:
    """Samples per frame, one more than the window for the pre-emphasis."""
    return int(round(self.sample_rate * self.frame_size_ms / 1000.0)) + 1

  @property
  def fft_size(self) -> int:
    return 2 ** math.ceil(math.log2(self.frame_size))

  def num_frames(self, num_samples: int) -> int:
    """Frames of an input of ``num_samples`` samples (no end padding)."""
    return (num_samples - self.frame_size) // self.frame_step + 1


def _hertz_to_mel(hertz):
  return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)


def mel_weights(num_bins: int, num_spectrogram_bins: int, sample_rate: float,
                lower_edge_hertz: float, upper_edge_hertz: float) -> np.ndarray:
  """``(num_spectrogram_bins, num_bins)`` triangular HTK mel filters.

  Equal to `tf.signal.linear_to_mel_weight_matrix`: the DC bin gets no weight;
  band ``m`` rises linearly in mel from edge ``m`` to centre ``m + 1`` and
  falls to edge ``m + 2`` of ``num_bins + 2`` equally spaced mel edges.
  """
  if not 0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2:
    raise ValueError(f"need 0 <= {lower_edge_hertz} < {upper_edge_hertz} <= "
                     f"{sample_rate / 2} (Nyquist)")
  # float32 as TensorFlow computes them, so the filters match to rounding.
  frequencies = np.linspace(0.0, sample_rate / 2, num_spectrogram_bins,
                            dtype=np.float32)[1:]
  mel = (1127.0 * np.log(1.0 + frequencies / np.float32(700.0))).astype(np.float32)
  edges = np.linspace(_hertz_to_mel(lower_edge_hertz), _hertz_to_mel(upper_edge_hertz),
                      num_bins + 2).astype(np.float32)
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (mel[:, None] - lower) / (centre - lower)
  falling = (upper - mel[:, None]) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
  return np.concatenate([np.zeros((1, num_bins), np.float32), weights])


def frame_paddings(paddings_BxN: jax.Array, config: FrontendConfig) -> jax.Array:
  """``(B, frames)``: 1 where every sample under the frame is padding."""
  return jax.lax.reduce_window(
      paddings_BxN, 1.0, jax.lax.min, (1, config.frame_size),
      (1, config.frame_step), "VALID")


def log_mel(audio_BxN: jax.Array, paddings_BxN: jax.Array,
            config: FrontendConfig = FrontendConfig(),
            mean: tuple[float, ...] | None = LIBRISPEECH_MEAN,
            std: tuple[float, ...] | None = LIBRISPEECH_STD,
            ) -> tuple[jax.Array, jax.Array]:
  """Normalised log-mel energies ``(B, frames, bins)`` and frame paddings.

  ``audio_BxN`` is PCM in int16 units (any float or int dtype); padded
  samples are zeroed first.
  """
  audio = audio_BxN.astype(jnp.float32) * (1.0 - paddings_BxN)
  audio = audio * config.input_scale
  num_frames = config.num_frames(audio.shape[1])
  starts = np.arange(num_frames) * config.frame_step
  frames = audio[:, starts[:, None] + np.arange(config.frame_size)]  # (B, T, 401)
  # HTK pre-emphasis: the first sample scaled by (1 - a), then x[n] - a x[n-1].
  a = config.preemphasis
  emphasised = jnp.concatenate(
      [frames[..., :1] * (1.0 - a), frames[..., 1:-1] - a * frames[..., :-2]], axis=-1)
  window_size = config.frame_size - 1
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window_size) / window_size)
  spectrum = jnp.fft.rfft(emphasised * window.astype(np.float32), config.fft_size,
                          axis=-1)
  power = jnp.square(jnp.abs(spectrum))
  weights = mel_weights(config.num_bins, power.shape[-1], config.sample_rate,
                        config.lower_edge_hertz, config.upper_edge_hertz)
  energies = jnp.einsum("btf,fn->btn", power, weights)
  features = jnp.log(jnp.maximum(energies, config.log_floor))
  if mean is not None:
    features = (features - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return features, frame_paddings(paddings_BxN.astype(jnp.float32), config)


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
  """AlgoPerf's SpecAugment settings (dynamic time-mask width)."""

  freq_mask_count: int = 2
  freq_mask_max_bins: int = 27
  time_mask_count: int = 10
  time_mask_max_ratio: float = 0.05


def _band_masks(rng: jax.Array, choose_range_B: jax.Array, max_width_B: jax.Array,
                bound_B: jax.Array, count: int, size: int) -> jax.Array:
  """``(B, size)`` keep-mask (1 keep, 0 masked) of ``count`` bands per row.

  Band width ``floor(max_width * u)`` capped at ``bound`` (at least 1); its
  start ``floor(v * (range - width + 1))``, with ``u, v`` uniform.
  """
  width_rng, start_rng = jax.random.split(rng)
  batch = choose_range_B.shape[0]
  width = (max_width_B[:, None] * jax.random.uniform(width_rng, (batch, count))
           ).astype(jnp.int32)
  width = jnp.minimum(width, jnp.maximum(bound_B, 1)[:, None])
  start = (jax.random.uniform(start_rng, (batch, count))
           * (choose_range_B[:, None] - width + 1)).astype(jnp.int32)
  position = jnp.arange(size)[None, None, :]
  inside = (position >= start[..., None]) & (position < (start + width)[..., None])
  return 1.0 - jnp.any(inside, axis=1).astype(jnp.float32)


def spec_augment(rng: jax.Array, features_BxTxF: jax.Array, paddings_BxT: jax.Array,
                 config: SpecAugmentConfig = SpecAugmentConfig()) -> jax.Array:
  """Features with time and frequency bands zeroed (training only)."""
  batch, time, bins = features_BxTxF.shape
  time_rng, freq_rng = jax.random.split(rng)
  lengths = jnp.sum(1.0 - paddings_BxT, axis=1).astype(jnp.int32)
  if config.time_mask_count and config.time_mask_max_ratio > 0:
    keep_t = _band_masks(
        time_rng, lengths, lengths * config.time_mask_max_ratio,
        (config.time_mask_max_ratio * lengths).astype(jnp.int32),
        config.time_mask_count, time)
    features_BxTxF = features_BxTxF * keep_t[:, :, None]
  if config.freq_mask_count and config.freq_mask_max_bins:
    full = jnp.full((batch,), bins, jnp.int32)
    keep_f = _band_masks(freq_rng, full, jnp.full((batch,), config.freq_mask_max_bins,
                                                  jnp.float32),
                         full, config.freq_mask_count, bins)
    features_BxTxF = features_BxTxF * keep_f[:, None, :]
  return features_BxTxF
