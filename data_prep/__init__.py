"""svlora.data_prep: turn a user's clips and labels into validated SenseVoice manifests.

The public surface, loaded on first use so that `svlora --help` (which reads only
data_prep.formats) imports no audio or torch libraries."""

import importlib

_PUBLIC = {"PrepareOptions": "prepare", "prepare": "prepare", "summary": "prepare",
           "load_label_map": "prepare", "AudioLimits": "checks", "HfColumns": "hf",
           "check_manifests": "check", "render_findings": "check"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        module = importlib.import_module(f"svlora.data_prep.{_PUBLIC[name]}")
        # every public name of that module at once: importing data_prep.prepare sets this
        # package's `prepare` attribute to the module, which the function must replace
        globals().update({n: getattr(module, n) for n, m in _PUBLIC.items() if m == _PUBLIC[name]})
        return globals()[name]
    raise AttributeError(f"module 'svlora.data_prep' has no attribute {name!r}")
