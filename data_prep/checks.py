"""Per-clip audio checks, run in parallel workers: decode, measure, hash, and optionally
compute and cache the model frontend's features. A failing clip yields a reason, never a
substitute."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from svlora.audio import TARGET_RATE, AudioDecodeError, decode_audio
from svlora.frontend import FrontendConfig, compute_features
from svlora.io import sha256_file


@dataclass(frozen=True)
class AudioLimits:
    min_seconds: float = 0.1
    max_seconds: float = 30.0
    silence_rms: float = 1e-4         # below this RMS a clip is silent
    max_clipped_fraction: float = 0.02  # more samples than this at full scale: heavily clipped


@dataclass
class ClipReport:
    reason: str | None = None
    seconds: float = 0.0
    source_rate: int = 0
    channels: int = 0
    content_sha256: str = ""  # of the decoded 16 kHz mono samples: finds duplicates


@dataclass(frozen=True)
class FeatureJob:
    cache_root: str
    config: FrontendConfig


def inspect_clip(path: str, limits: AudioLimits, features: FeatureJob | None = None) -> ClipReport:
    """Check one clip; with `features`, also compute and cache its frontend features."""
    if not os.path.isfile(path):
        return ClipReport(reason=f"audio file not found: {path}")
    try:
        decoded = decode_audio(path)
    except AudioDecodeError as error:
        return ClipReport(reason=f"unreadable audio: {error}")
    samples = decoded.samples
    report = ClipReport(seconds=samples.size / TARGET_RATE, source_rate=decoded.source_rate,
                        channels=decoded.channels,
                        content_sha256=hashlib.sha256(samples.tobytes()).hexdigest())
    report.reason = audio_problem(samples, decoded.clipped_fraction, limits)
    if report.reason is None and features is not None:
        from svlora.feature_cache import FeatureCache

        cache = FeatureCache(features.cache_root, features.config)
        file_sha256 = sha256_file(path)  # the cache's key, as training and eval look it up
        if not cache.path(file_sha256).is_file():
            cache.store(file_sha256, compute_features(samples, features.config))
    return report


def audio_problem(samples: np.ndarray, clipped_fraction: float, limits: AudioLimits) -> str | None:
    """Why decoded samples are unusable, or None."""
    if samples.size == 0:
        return "empty audio (zero samples)"
    seconds = samples.size / TARGET_RATE
    if float(np.sqrt(np.dot(samples, samples) / samples.size)) < limits.silence_rms:
        return f"silent audio (RMS below {limits.silence_rms})"
    if seconds < limits.min_seconds:
        return f"too short ({seconds:.2f}s < {limits.min_seconds}s)"
    if seconds > limits.max_seconds:
        return f"too long ({seconds:.1f}s > {limits.max_seconds}s)"
    if clipped_fraction > limits.max_clipped_fraction:
        return (f"heavily clipped ({100 * clipped_fraction:.1f}% of samples at full scale > "
                f"{100 * limits.max_clipped_fraction:.1f}%)")
    return None


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription


def _inspect(arguments: tuple) -> ClipReport:
    return inspect_clip(*arguments)


def inspect_clips(paths: list[str], limits: AudioLimits, features: FeatureJob | None = None,
                  workers: int = 0) -> list[ClipReport]:
    """ClipReports in input order; `workers` > 1 uses that many processes (0: one per core)."""
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(path, limits, features) for path in paths]
    progress = dict(total=len(jobs), desc="checking clips", unit="clip")
    if workers <= 1 or len(jobs) < 32:
        return [inspect_clip(*job) for job in tqdm(jobs, **progress)]
    # fork, as torch's DataLoader does on Linux: workers start in milliseconds instead of
    # re-importing torch; each uses one thread.
    context = get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        chunk = max(1, min(64, len(jobs) // (8 * workers)))
        return list(tqdm(pool.map(_inspect, jobs, chunksize=chunk), **progress))
