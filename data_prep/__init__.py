"""svlora.data_prep: turn a user's clips and labels into validated SenseVoice manifests.

The public surface, loaded on first use so that `svlora --help` (which reads only
data_prep.formats) imports no audio or torch libraries. No public name is also a module's
name: `svlora.data_prep.prepare` is always the module, `prepare_corpus` its function."""

import importlib

_PUBLIC = {"PrepareOptions": "prepare", "prepare_corpus": "prepare", "summary": "prepare",
           "load_label_map": "prepare", "AudioLimits": "checks", "HfColumns": "hf",
           "RejectLimit": "rejections", "rejected_line": "rejections",
           "check_manifests": "check", "render_findings": "check"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        module = importlib.import_module(f"svlora.data_prep.{_PUBLIC[name]}")
        globals().update({n: getattr(module, n) for n, m in _PUBLIC.items() if m == _PUBLIC[name]})
        return globals()[name]
    raise AttributeError(f"module 'svlora.data_prep' has no attribute {name!r}")
