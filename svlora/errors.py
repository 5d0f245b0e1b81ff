"""The few exception types svlora raises; the CLI catches them once and prints one line."""


class SvloraError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ManifestError(SvloraError):
    """A manifest or input table row is malformed (the message names file:line)."""


class RecipeError(SvloraError):
    """A recipe YAML or a key=value override is invalid."""


class ModelError(SvloraError):
    """A model directory cannot be loaded or does not look like SenseVoiceSmall."""


class AdapterError(SvloraError):
    """An adapter package is incomplete or does not match its base model."""


class AudioFileError(SvloraError):
    """One audio file cannot be transcribed (unreadable, or longer than allowed); `path` and
    `reason` apart, so a batch can record it and go on."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason
