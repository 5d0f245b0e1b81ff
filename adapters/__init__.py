"""svlora.adapters: load adapters into a serving runtime (attach, merge, transcribe) and export."""

from svlora.adapters.export import export_adapter
from svlora.adapters.runtime import SenseVoiceRuntime, load_model

__all__ = ["SenseVoiceRuntime", "export_adapter", "load_model"]
