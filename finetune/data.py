"""Training examples (features + target ids, computed once per run) and padding-aware batches."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from svlora.features import pad_features, row_features
from svlora.manifest import ManifestRow
from svlora.model import BaseModel

FEATURE_FRAME_SECONDS = 0.06  # one LFR frame covers 60 ms


@dataclass
class Example:
    row: ManifestRow
    features: torch.Tensor
    target_ids: torch.Tensor


def build_examples(base: BaseModel, rows: list[ManifestRow], desc: str,
                   feature_cache: str | None = None) -> list[Example]:
    features = row_features(base, rows, desc, feature_cache)
    return [Example(row, feats, torch.tensor(base.target_ids(
        row.target, row.text_language, row.emo_target, row.event_target, row.with_or_wo_itn)))
        for row, feats in zip(rows, features)]


def make_batches(examples: list[Example], max_seconds: float, rng: random.Random | None,
                 pool_size: int = 64) -> list[list[Example]]:
    """Batches whose padded length x size stays under `max_seconds` of audio.

    With `rng`, examples are shuffled, then sorted by length within pools so padding is small;
    without it the order is by length (deterministic, for validation).
    """
    order = list(examples)
    if rng is None:
        order.sort(key=lambda e: e.features.shape[0])
        pools = [order]
    else:
        rng.shuffle(order)
        pools = [sorted(order[i:i + pool_size], key=lambda e: e.features.shape[0])
                 for i in range(0, len(order), pool_size)]
    batches: list[list[Example]] = []
    for pool in pools:
        current: list[Example] = []
        for example in pool:
            longest = max([e.features.shape[0] for e in current] + [example.features.shape[0]])
            if current and longest * (len(current) + 1) * FEATURE_FRAME_SECONDS > max_seconds:
                batches.append(current)
                current = []
            current.append(example)
        if current:
            batches.append(current)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(batch: list[Example], device: torch.device) -> dict:
    features, lengths = pad_features([e.features for e in batch])
    targets = torch.nn.utils.rnn.pad_sequence([e.target_ids for e in batch], batch_first=True,
                                              padding_value=-1)
    target_lengths = torch.tensor([len(e.target_ids) for e in batch], dtype=torch.int32)
    return {"speech": features.to(device), "speech_lengths": lengths.to(device),
            "text": targets.to(device), "text_lengths": target_lengths.to(device)}
