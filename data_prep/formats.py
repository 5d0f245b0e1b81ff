"""The input formats and split keys `svlora prepare` accepts: plain constants, so the CLI can
build its help without importing the stage (torch, audio libraries)."""

PRESET_NAMES = ("esd", "ravdess", "crema-d", "emodb", "casia", "tess")  # data_prep.presets.PRESETS
FORMATS = ("csv", "jsonl", "folder", "kaldi", "sensevoice-jsonl", "hf", *PRESET_NAMES)
SPLIT_KEYS = ("auto", "speaker", "text", "speaker+text", "none")
