"""Features for manifest rows. An unreadable clip is an error naming it, never replaced."""

from __future__ import annotations

import torch
from tqdm import tqdm

from svlora.audio import AudioDecodeError, load_audio
from svlora.errors import ManifestError
from svlora.feature_cache import FeatureCache
from svlora.frontend import batch_features
from svlora.io import sha256_file
from svlora.manifest import ManifestRow
from svlora.model import BaseModel
from svlora.prefetch import prefetched


def row_features(base: BaseModel, rows: list[ManifestRow], desc: str = "features",
                 cache_dir: str | None = None) -> list[torch.Tensor]:
    """Frontend features of every row's audio, in row order; with `cache_dir`, read from (and
    added to) the feature cache of this model's frontend instead of decoding audio."""
    cache = FeatureCache(cache_dir, base.frontend) if cache_dir else None
    if base.device.type == "cuda" and not cache:
        return gpu_row_features(base, rows, desc)
    features = []
    for row in tqdm(rows, desc=desc, unit="clip", leave=False):
        try:
            digest = sha256_file(row.source) if cache else ""
            cached = cache.load(digest) if cache else None
            if cached is None:
                cached = base.features(row_audio(row))
                if cache:
                    cache.store(digest, cached)
            features.append(cached)
        except FileNotFoundError as error:
            raise unreadable(row, error) from error
    return features


def unreadable(row: ManifestRow, error: Exception) -> ManifestError:
    return ManifestError(f"clip {row.key} ({row.source}): {error}; fix or remove the row "
                         "(svlora prepare reports such rows)")


def row_audio(row: ManifestRow):
    """The row's audio, or a ManifestError naming the row."""
    try:
        return load_audio(row.source)
    except (AudioDecodeError, FileNotFoundError) as error:
        raise unreadable(row, error) from error


GPU_FRONTEND_CLIPS = 32  # clips per batched frontend call on a GPU


def gpu_row_features(base: BaseModel, rows: list[ManifestRow], desc: str) -> list[torch.Tensor]:
    """row_features on a GPU: audio decoded on the CPU (the next group's while this one's
    frontend runs), fbank/LFR/CMVN for 32 clips at once on the GPU
    (svlora.frontend.batch_features), features back in one copy per clip group."""
    features = []
    groups = [rows[start:start + GPU_FRONTEND_CLIPS] for start in range(0, len(rows), GPU_FRONTEND_CLIPS)]
    # the next group's audio is decoded on the CPU while this group's frontend runs on the GPU
    for _, audio in tqdm(prefetched(lambda group: [row_audio(row) for row in group], groups, ahead=1),
                         total=len(groups), desc=desc, unit="group", leave=False):
        if isinstance(audio, Exception):
            raise audio
        computed = batch_features(audio, base.frontend, base.device)
        sizes = [f.shape[0] for f in computed]
        features += list(torch.cat(computed).cpu().split(sizes)) if computed else []
    return features


FRAME_SECONDS = 0.06  # one LFR feature frame covers 60 ms


def pack_by_padded_seconds(lengths: list[int], max_seconds: float) -> list[list[int]]:
    """Cut positions 0..n-1 (in the given order) into batches whose padded audio — longest
    clip × clips — stays within `max_seconds` (a batch always holds at least one clip)."""
    batches, current, longest = [], [], 0
    for position, length in enumerate(lengths):
        if current and max(longest, length) * (len(current) + 1) * FRAME_SECONDS > max_seconds:
            batches.append(current)
            current, longest = [], 0
        current.append(position)
        longest = max(longest, length)
    return batches + [current] if current else batches


def pad_features(features: list[torch.Tensor], multiple_of: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch [B, T, D] zero-padded (T rounded up to a multiple of `multiple_of` when > 0, so a
    compiled encoder sees few shapes), and lengths [B]."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int32)
    padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
    extra = padded_frames(padded.shape[1], multiple_of) - padded.shape[1]
    return (torch.nn.functional.pad(padded, (0, 0, 0, extra)) if extra else padded), lengths


def padded_frames(frames: int, multiple_of: int) -> int:
    """`frames` rounded up to a multiple of `multiple_of` (0: unchanged)."""
    return frames if multiple_of <= 0 else -(-frames // multiple_of) * multiple_of
