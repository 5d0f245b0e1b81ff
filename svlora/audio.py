"""Decode any file libsndfile reads into 16 kHz mono float32 (soundfile + soxr)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000


class AudioDecodeError(Exception):
    """The file could not be decoded as audio (message says why)."""


def load_audio(path: str | Path, target_rate: int = TARGET_RATE) -> np.ndarray:
    """Mono float32 samples at `target_rate`; raises AudioDecodeError for unreadable files."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports corrupt files through several types
        raise AudioDecodeError(f"cannot decode audio ({error})") from error
    mono = samples.mean(axis=1)
    if rate != target_rate and mono.size:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    return mono
