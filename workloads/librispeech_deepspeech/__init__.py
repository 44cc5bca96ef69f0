"""LibriSpeech DeepSpeech: AlgoPerf's ``librispeech_deepspeech`` and a CPU-scale variant."""
