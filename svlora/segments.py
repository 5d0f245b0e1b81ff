"""Long audio in bounded pieces: speech segments found by Silero VAD (its weights ship inside
its pip package), or fixed windows where it is not installed, none longer than
`max_seconds`. Encoder memory then depends on the segment cap, not on the file's length."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from svlora.audio import TARGET_RATE

MAX_SEGMENT_SECONDS = 30.0


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the file
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def fixed_windows(samples: int, max_seconds: float, rate: int = TARGET_RATE) -> list[Segment]:
    """Consecutive windows of `max_seconds` covering the whole file."""
    total = samples / rate
    starts = np.arange(0.0, total, max_seconds)
    return [Segment(float(s), float(min(s + max_seconds, total))) for s in starts]


def merge_speech(spans: list[tuple[float, float]], max_seconds: float) -> list[Segment]:
    """Neighbouring speech spans joined (with the pause between them) while the joined
    segment stays within `max_seconds`; a longer span is cut into windows."""
    segments: list[Segment] = []
    for start, end in spans:
        while end - start > max_seconds:
            segments.append(Segment(start, start + max_seconds))
            start += max_seconds
        if segments and end - segments[-1].start <= max_seconds:
            segments[-1] = Segment(segments[-1].start, end)
        else:
            segments.append(Segment(start, end))
    return segments


class SileroVad:
    """One Silero VAD model for files segmented at once, one file at a time. get_speech_timestamps
    keeps the model's recurrent state across a file's chunks (reset at its start), so two files
    on one model corrupt each other's state and crash the TorchScript runtime (SIGSEGV). A lock
    rather than a model per thread: its chunk loop is Python and holds the GIL, so 4 concurrent
    45 s files took 1.43 s on one model behind the lock and 1.45 s on four (2 CPUs)."""

    def __init__(self, model):
        self.model = model
        self.lock = threading.Lock()

    def speech_spans(self, waveform: np.ndarray) -> list[tuple[float, float]]:
        """(start, end) seconds of each stretch of speech."""
        import torch
        from silero_vad import get_speech_timestamps

        with self.lock:
            stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(waveform)), self.model,
                                           sampling_rate=TARGET_RATE, return_seconds=True)
        return [(float(s["start"]), float(s["end"])) for s in stamps]


def load_vad() -> SileroVad | None:
    """Silero VAD (TorchScript shipped in the silero-vad wheel), or None where not installed."""
    import warnings

    try:
        from silero_vad import load_silero_vad
    except ImportError:
        return None
    with warnings.catch_warnings():  # its importlib.resources and torch.jit deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        return SileroVad(load_silero_vad())


class LazyVad:
    """One SileroVad for its owner (a runtime, a server), made on the first long file (None
    where silero-vad is not installed)."""

    def __init__(self):
        self.vad = None
        self.lock = threading.Lock()

    def __call__(self) -> SileroVad | None:
        with self.lock:
            if self.vad is None:
                self.vad = load_vad() or False
        return self.vad or None


def speech_segments(waveform: np.ndarray, max_seconds: float = MAX_SEGMENT_SECONDS,
                    vad: SileroVad | None = None) -> tuple[list[Segment], str]:
    """The file's segments and how they were found: 'whole' (short enough), 'vad', or
    'fixed' (no VAD available, or it found no speech)."""
    seconds = waveform.size / TARGET_RATE
    if seconds <= max_seconds:
        return [Segment(0.0, seconds)], "whole"
    if vad is not None:
        spans = vad.speech_spans(waveform)
        if spans:
            return merge_speech(spans, max_seconds), "vad"
    return fixed_windows(waveform.size, max_seconds), "fixed"


def weighted_tag(tags: list[str | None], segments: list[Segment]) -> str | None:
    """The tag that covers the most seconds (a file-level emotion or event)."""
    seconds: Counter = Counter()
    for tag, segment in zip(tags, segments):
        if tag:
            seconds[tag] += segment.seconds
    return seconds.most_common(1)[0][0] if seconds else None
