"""The input formats and split keys `svlora prepare` accepts, light enough for the CLI to build
its help from (the presets' readers import no torch or audio library)."""

from svlora.data_prep.presets import PRESETS

# the presets are named once, by their readers
FORMATS = ("csv", "jsonl", "folder", "kaldi", "sensevoice-jsonl", "hf", *PRESETS)
SPLIT_KEYS = ("auto", "speaker", "text", "speaker+text", "none")
