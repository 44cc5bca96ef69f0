"""Synthesised speech in the LibriSpeech release's layout (the small variants' data).

Utterances are sentences of 2-4 words from a small vocabulary, spoken by
eSpeak NG (its library and voices ship in the ``espeakng-loader`` wheel; it
synthesises 22,050 Hz PCM offline through its C API) with a voice variant,
speaking rate and pitch drawn per utterance, resampled to 16 kHz, scaled and
mixed with noise at a drawn signal-to-noise ratio. They are written as flac
files with ``<speaker>-<chapter>.trans.txt`` transcripts, so the small
variants read them through the real pipeline (`kit.librispeech.prepare`).
Everything is a function of the seed: eSpeak's own noise (the breathy and
whispering variants) is seeded per utterance, and `prepared` synthesises in a
fresh process, because the length of eSpeak's output also depends on what the
process synthesised before. The prepared result is cached.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Sequence

import numpy as np

from algoperf_avg.kit import librispeech

WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT",
         "NINE", "YES", "NO", "UP", "DOWN", "LEFT", "RIGHT")
VOICES = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
          "klatt2", "klatt3", "croak", "whisper")
SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
# Part of the cache key: bumped whenever the same Config synthesises other audio.
GENERATOR_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Config:
  """What to synthesise; its fields (and the seed) name the cache entry."""

  num_train: int = 3_000
  num_validation: int = 300
  num_test: int = 300
  min_words: int = 2
  max_words: int = 4
  words: tuple[str, ...] = WORDS
  voices: tuple[str, ...] = VOICES
  rate_range: tuple[int, int] = (140, 200)  # words per minute
  pitch_range: tuple[int, int] = (25, 75)  # eSpeak's 0-100
  snr_db_range: tuple[float, float] = (10.0, 30.0)
  vocab_size: int = 32
  limits: librispeech.Limits = librispeech.Limits(audio=32_000, transcript_chars=64,
                                                  targets=32)
  seed: int = 0

  @property
  def subsets(self) -> dict[str, int]:
    return {"train-clean-100": self.num_train, "dev-clean": self.num_validation,
            "test-clean": self.num_test}

  def key(self) -> str:
    text = json.dumps(dataclasses.asdict(self) | {"generator": GENERATOR_VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class Speaker:
  """eSpeak NG through ctypes, synthesising into memory (one per process)."""

  def __init__(self):
    import espeakng_loader

    self._lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
    self._chunks: list[np.ndarray] = []

    def collect(wav, num_samples, events):
      del events
      if num_samples > 0:
        self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
      return 0

    self._callback = _CALLBACK(collect)  # kept alive with the object
    rate = self._lib.espeak_Initialize(2, 0, str(espeakng_loader.get_data_path()).encode(),
                                       0)  # 2: AUDIO_OUTPUT_SYNCHRONOUS
    if rate != ESPEAK_RATE:
      raise RuntimeError(f"eSpeak NG did not start (returned {rate})")
    self._lib.espeak_SetSynthCallback(self._callback)

  def say(self, text: str, voice: str, rate: int, pitch: int, seed: int = 0) -> np.ndarray:
    """int16 PCM at 22,050 Hz of ``text`` in English with variant ``voice``.

    ``seed`` seeds eSpeak's noise (unseeded, it comes from the clock).
    """
    if self._lib.espeak_SetVoiceByName(f"en-us+{voice}".encode()) != 0:
      raise RuntimeError(f"eSpeak NG has no voice en-us+{voice}")
    self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
    self._lib.espeak_SetParameter(1, rate, 0)  # espeakRATE
    self._lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
    self._chunks = []
    encoded = text.encode()
    self._lib.espeak_Synth(ctypes.c_char_p(encoded), ctypes.c_size_t(len(encoded) + 1),
                           0, 1, 0, 0, None, None)  # 1: POS_CHARACTER
    self._lib.espeak_Synchronize()
    return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


@functools.lru_cache(maxsize=1)
def speaker() -> Speaker:
  return Speaker()


def to_16k(pcm_22k: np.ndarray) -> np.ndarray:
  """Float samples resampled from 22,050 Hz to 16 kHz (polyphase, 320/441)."""
  from scipy import signal

  return signal.resample_poly(pcm_22k.astype(np.float64), 320, 441)


def utterance(config: Config, rng: np.random.Generator) -> tuple[str, np.ndarray]:
  """A transcript and its int16 16 kHz audio (speech + noise, random level)."""
  count = int(rng.integers(config.min_words, config.max_words + 1))
  text = " ".join(rng.choice(config.words, count))
  voice = str(rng.choice(config.voices))
  rate = int(rng.integers(*config.rate_range, endpoint=True))
  pitch = int(rng.integers(*config.pitch_range, endpoint=True))
  seed = int(rng.integers(1 << 31))
  speech = to_16k(speaker().say(text.lower(), voice, rate, pitch, seed))
  lead = np.zeros(int(rng.integers(0, 1600)))  # up to 0.1 s before speaking
  # Trailing silence so CTC can align any tokenisation: after the models' 4x
  # subsampling of 10 ms frames (640 samples a frame), at least 2 frames a
  # character (a blank between repeats) plus one.
  tail = np.zeros(max(0, 640 * (2 * (len(text) + 1) + 1) - len(lead) - len(speech)))
  speech = np.concatenate([lead, speech, tail])
  level = rng.uniform(0.3, 1.0) * 12_000 / max(np.abs(speech).max(), 1.0)
  speech = speech * level
  snr = rng.uniform(*config.snr_db_range)
  noise_std = np.sqrt(np.mean(speech**2) / 10 ** (snr / 10))
  audio = speech + rng.normal(0.0, noise_std, speech.shape)
  return text, np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def write_release(raw_dir: str, config: Config, subsets: dict[str, int] | None = None
                  ) -> dict[str, list[str]]:
  """Flac files and transcripts of ``config`` in the release layout under ``raw_dir``.

  Each voice is a speaker folder (``<voice index + 1>/<subset index + 1>/``).
  Returns the transcripts per subset.
  """
  import soundfile

  written: dict[str, list[str]] = {}
  for subset_index, (subset, count) in enumerate((subsets or config.subsets).items()):
    rng = np.random.default_rng([config.seed, subset_index])
    per_chapter: dict[tuple[int, int], list[str]] = {}
    written[subset] = []
    for _ in range(count):
      speaker_id = int(rng.integers(len(config.voices))) + 1
      chapter = subset_index + 1
      lines = per_chapter.setdefault((speaker_id, chapter), [])
      utterance_id = f"{speaker_id}-{chapter}-{len(lines):04d}"
      text, audio = utterance(dataclasses.replace(
          config, voices=(config.voices[speaker_id - 1],)), rng)
      folder = os.path.join(raw_dir, subset, str(speaker_id), str(chapter))
      os.makedirs(folder, exist_ok=True)
      soundfile.write(os.path.join(folder, utterance_id + ".flac"), audio, SAMPLE_RATE,
                      subtype="PCM_16")
      lines.append(f"{utterance_id} {text}")
      written[subset].append(text)
    for (speaker_id, chapter), lines in per_chapter.items():
      path = os.path.join(raw_dir, subset, str(speaker_id), str(chapter),
                          f"{speaker_id}-{chapter}.trans.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
  return written


_FRESH_CHILD = """
import json, sys
from algoperf_avg.kit import speech_synthetic
args = json.load(sys.stdin)
speech_synthetic.write_release(args["raw_dir"], speech_synthetic.config_from_dict(args["config"]))
"""


def config_from_dict(fields: dict) -> Config:
  """The `Config` that ``dataclasses.asdict`` (through JSON) came from."""
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return Config(**fields | {"limits": librispeech.Limits(**fields["limits"])})


def write_release_fresh(raw_dir: str, config: Config) -> None:
  """`write_release` in a fresh interpreter: the same files whatever this
  process synthesised before (eSpeak's output lengths depend on its history).
  A plain subprocess, not multiprocessing, so no caller's main module is
  imported again."""
  import subprocess
  import sys

  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [package_root, os.environ.get("PYTHONPATH")])))
  done = subprocess.run([sys.executable, "-c", _FRESH_CHILD],
                        input=json.dumps({"raw_dir": raw_dir, "config": dataclasses.asdict(config)}).encode(), capture_output=True,
                        env=env, check=False)
  if done.returncode:
    raise RuntimeError(f"synthesising {raw_dir} failed:\n"
                       + done.stderr.decode(errors="replace")[-3000:])


def cache_root() -> str:
  """``$ALGOPERF_AVG_CACHE`` or ``~/.cache/algoperf_avg``."""
  return os.environ.get("ALGOPERF_AVG_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "algoperf_avg"))


def prepared(config: Config = Config(), root: str | None = None) -> str:
  """The prepared small dataset of ``config`` (synthesised and prepared once, cached)."""
  out_dir = os.path.join(root or cache_root(), f"librispeech_small_{config.key()}")
  if librispeech.is_prepared(out_dir):
    return out_dir
  raw_dir = out_dir + ".raw"
  shutil.rmtree(raw_dir, ignore_errors=True)
  write_release_fresh(raw_dir, config)
  librispeech.prepare(raw_dir, out_dir, subsets=tuple(config.subsets),
                      tokenizer_subsets=("train-clean-100",),
                      vocab_size=config.vocab_size, limits=config.limits)
  shutil.rmtree(raw_dir, ignore_errors=True)
  return out_dir


def subsets_of(names: Sequence[str]) -> str:
  return "+".join(names)
