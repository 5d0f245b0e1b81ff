"""Decode any file libsndfile reads into 16 kHz mono float32 (soundfile + soxr)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000
FULL_SCALE = 0.999  # a sample at or above this magnitude counts as clipped


class AudioDecodeError(Exception):
    """The file could not be decoded as audio (message says why)."""


@dataclass
class DecodedAudio:
    samples: np.ndarray       # mono float32 at TARGET_RATE
    source_rate: int
    channels: int
    clipped_fraction: float   # of the original samples, before mixing and resampling


def is_audio(path: str | Path) -> bool:
    """Whether libsndfile recognises the file by its content (its header: the name may lie or
    lack a suffix)."""
    try:
        sf.info(str(path))
        return True
    except Exception:  # noqa: BLE001 — libsndfile's many ways of saying "not audio"
        return False


def wav_truncation(path: str | Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (its data chunk declares more bytes than the file
    holds; libsndfile would read the part that is there without a word), else None."""
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        size = Path(path).stat().st_size
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"data":
                available = size - handle.tell()
                if length != 0xFFFFFFFF and length > available:
                    return (f"truncated WAV: its header declares {length} bytes of audio, the "
                            f"file holds {available}; re-export or re-copy it")
                return None
            handle.seek(length + (length & 1), 1)


def missing_file_reason(path: str | Path) -> str | None:
    """"not found" or "not a file" (a directory, say), else None: checkable before any work."""
    if Path(path).is_file():
        return None
    return "not found" if not Path(path).exists() else "not a file"


def decode_audio(path: str | Path, target_rate: int = TARGET_RATE) -> DecodedAudio:
    """Decode by content (the extension may lie), mix to mono, resample with soxr HQ."""
    missing = missing_file_reason(path)
    if missing:
        raise AudioDecodeError(missing)
    truncated = wav_truncation(path)
    if truncated:
        raise AudioDecodeError(truncated)
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports corrupt files through several types
        raise AudioDecodeError(f"cannot decode audio ({error})") from error
    if not np.isfinite(samples).all():
        raise AudioDecodeError("audio contains NaN or infinite samples (a float file written "
                               "from a broken pipeline?)")
    clipped = float(np.mean(np.abs(samples) >= FULL_SCALE)) if samples.size else 0.0
    mono = samples.mean(axis=1)
    if rate != target_rate and mono.size:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    return DecodedAudio(np.ascontiguousarray(mono, dtype=np.float32), rate, samples.shape[1], clipped)


def load_audio(path: str | Path, target_rate: int = TARGET_RATE) -> np.ndarray:
    """Mono float32 samples at `target_rate`; raises AudioDecodeError for unreadable files."""
    return decode_audio(path, target_rate).samples
