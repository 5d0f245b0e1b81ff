"""svlora.data_prep: turn a user's clips and labels into validated SenseVoice manifests."""

import importlib

__all__ = ["PrepareOptions", "prepare"]


def __getattr__(name: str):
    # Loaded on first use, so `svlora --help` (which reads only data_prep.formats) stays light.
    if name in __all__:
        module = importlib.import_module("svlora.data_prep.prepare")
        globals().update(PrepareOptions=module.PrepareOptions, prepare=module.prepare)
        return globals()[name]
    raise AttributeError(f"module 'svlora.data_prep' has no attribute {name!r}")
