"""LibriSpeech release -> AlgoPerf's prepared layout -> padded batches (kit.librispeech).

The release is written here as real flac files and transcripts (synthesised
speech, `kit.speech_synthetic`), then prepared through `setup_data`'s code.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from algoperf_avg import spec
from algoperf_avg.kit import librispeech, speech_synthetic

SUBSETS = {"train-clean-100": 12, "dev-clean": 5, "test-clean": 4}
LIMITS = librispeech.Limits(audio=40_000, transcript_chars=30, targets=24)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  raw = str(tmp_path_factory.mktemp("raw"))
  config = dataclasses.replace(speech_synthetic.Config(), seed=3)
  written = speech_synthetic.write_release(raw, config, SUBSETS)
  # One transcript too long, one over the audio limit, one without its flac.
  chapter = os.path.join(raw, "dev-clean", "99", "9")
  os.makedirs(chapter)
  import soundfile

  soundfile.write(os.path.join(chapter, "99-9-0000.flac"),
                  np.zeros(1_000, np.int16), 16_000, subtype="PCM_16")
  soundfile.write(os.path.join(chapter, "99-9-0001.flac"),
                  np.ones(LIMITS.audio + 1, np.int16), 16_000, subtype="PCM_16")
  with open(os.path.join(chapter, "99-9.trans.txt"), "w") as f:
    f.write("99-9-0000 " + "NINE " * 10 + "\n99-9-0001 UP\n99-9-0002 DOWN\n")
  return raw, written


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory):
  raw, _ = release
  out = str(tmp_path_factory.mktemp("prepared") / "librispeech")
  return librispeech.prepare(raw, out, subsets=tuple(SUBSETS), vocab_size=32,
                             limits=LIMITS)


def test_prepared_layout_is_algoperfs(prepared, release):
  _, written = release
  assert not os.path.exists(prepared + ".partial")
  with open(os.path.join(prepared, "dev-clean.csv"), newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["", "id"]
  assert [r[0] for r in rows[1:]] == [str(i) for i in range(len(rows) - 1)]
  ids = [r[1] for r in rows[1:]]
  assert len(ids) == SUBSETS["dev-clean"]  # the three bad utterances were skipped
  assert not any(i.startswith("99-9") for i in ids)
  audio = np.load(os.path.join(prepared, "dev-clean", ids[0] + "_audio.npy"))
  targets = np.load(os.path.join(prepared, "dev-clean", ids[0] + "_targets.npy"))
  assert audio.dtype == np.int64 and targets.dtype == np.int32
  tokenizer = librispeech.Tokenizer(os.path.join(prepared, librispeech.TOKENIZER_FILE))
  assert targets[-1] == 2  # EOS
  speaker, chapter, _ = ids[0].split("-")
  flac = os.path.join(release[0], "dev-clean", speaker, chapter, ids[0] + ".flac")
  np.testing.assert_array_equal(audio, librispeech.read_flac(flac))
  transcripts = dict(line.split(" ", 1) for line in open(
      os.path.join(os.path.dirname(flac), f"{speaker}-{chapter}.trans.txt")).read().splitlines())
  assert tokenizer.detokenize(targets) == transcripts[ids[0]]
  assert sorted(transcripts.values()) == sorted(
      t for t in written["dev-clean"] if t in transcripts.values())


def test_split_pads_as_algoperf(prepared):
  split = librispeech.Split(prepared, "dev-clean+test-clean", LIMITS)
  assert len(split) == SUBSETS["dev-clean"] + SUBSETS["test-clean"]
  example = split.example(0)
  (audio, audio_paddings), (targets, target_paddings) = example["inputs"], example["targets"]
  assert audio.shape == audio_paddings.shape == (LIMITS.audio,)
  assert targets.shape == (LIMITS.targets,) and audio.dtype == np.float32
  n = int((1 - audio_paddings).sum())
  assert audio_paddings[:n].sum() == 0 and audio_paddings[n:].min() == 1
  assert (audio[n:] == 0).all() and (targets[int((1 - target_paddings).sum()):] == 0).all()


def test_train_stream_resumes_and_shards_the_global_batch(prepared):
  split = librispeech.Split(prepared, "train-clean-100", LIMITS)
  stream = librispeech.train_batches(split, 4, seed=1)
  batches = [next(stream) for _ in range(5)]  # crosses an epoch (12 utterances)
  state = stream.checkpoint("unused")
  assert state == 5
  resumed = librispeech.train_batches(split, 4, seed=1, start=3)
  np.testing.assert_array_equal(next(resumed)["inputs"][0], batches[3]["inputs"][0])
  halves = [next(librispeech.train_batches(split, 2, seed=1, shard_index=i, num_shards=2))
            for i in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([h["inputs"][0] for h in halves]), batches[0]["inputs"][0])
  epoch = np.concatenate([b["targets"][0] for b in batches[:3]])
  assert len({row.tobytes() for row in epoch}) == len(split)  # each once per epoch


def test_eval_pass_sees_each_utterance_once_over_shards(prepared):
  split = librispeech.Split(prepared, "dev-clean", LIMITS)
  seen = [b["inputs"][0] for i in range(2)
          for b in librispeech.eval_batches(split, 2, shard_index=i, num_shards=2)]
  np.testing.assert_array_equal(np.concatenate(seen),
                                split.batch(range(len(split)))["inputs"][0])


def test_missing_subset_is_a_usage_error(release, tmp_path):
  with pytest.raises(spec.UsageError, match="train-clean-360"):
    librispeech.prepare(release[0], str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_synthesised_dataset_is_the_same_whatever_ran_before(tmp_path):
  """The small variants' data is a function of its Config: eSpeak's noise is
  seeded, and `prepared` synthesises in a fresh process (here, after this
  process has synthesised other sentences, which change eSpeak's output)."""
  config = dataclasses.replace(speech_synthetic.Config(), num_train=8, num_validation=4,
                               num_test=4, voices=("f5", "whisper", "m1"), vocab_size=26,
                               seed=7)
  speaker = speech_synthetic.speaker()
  first = speech_synthetic.prepared(config, root=str(tmp_path / "a"))
  speaker.say("left right up", "whisper", 150, 40)
  speaker.say("zero nine", "f5", 190, 60)
  second = speech_synthetic.prepared(config, root=str(tmp_path / "b"))
  assert os.path.basename(first) == os.path.basename(second)
  arrays = sorted(os.path.relpath(os.path.join(d, f), first)
                  for d, _, files in os.walk(first) for f in files if f.endswith(".npy"))
  assert len(arrays) == 2 * 16
  for name in arrays:
    np.testing.assert_array_equal(np.load(os.path.join(first, name)),
                                  np.load(os.path.join(second, name)), err_msg=name)


def test_config_survives_json_for_the_fresh_process():
  config = dataclasses.replace(speech_synthetic.Config(), voices=("f5", "m1"), seed=7)
  text = json.dumps(dataclasses.asdict(config))
  assert speech_synthetic.config_from_dict(json.loads(text)) == config
