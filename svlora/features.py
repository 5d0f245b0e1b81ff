"""Features for manifest rows. An unreadable clip is an error naming it, never replaced."""

from __future__ import annotations

import torch
from tqdm import tqdm

from svlora.audio import AudioDecodeError, load_audio
from svlora.errors import ManifestError
from svlora.manifest import ManifestRow
from svlora.model import BaseModel


def row_features(base: BaseModel, rows: list[ManifestRow], desc: str = "features") -> list[torch.Tensor]:
    """Frontend features of every row's audio, in row order."""
    features = []
    for row in tqdm(rows, desc=desc, unit="clip", leave=False):
        try:
            features.append(base.features(load_audio(row.source)))
        except (AudioDecodeError, FileNotFoundError) as error:
            raise ManifestError(f"clip {row.key} ({row.source}): {error}; fix or remove the row "
                                "(svlora prepare reports such rows)") from error
    return features


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch [B, T, D] zero-padded, and lengths [B]."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int32)
    return torch.nn.utils.rnn.pad_sequence(features, batch_first=True), lengths
