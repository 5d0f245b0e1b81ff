"""Training examples (features + target ids, computed once per run), the clips of each epoch
(replay mixing, emotion balancing), padding-aware batches, and SpecAugment."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch

from svlora.features import pack_by_padded_seconds, pad_features, row_features
from svlora.finetune.recipe import AugmentSettings
from svlora.manifest import ManifestRow
from svlora.model import BaseModel

MEL_BINS = 80


@dataclass
class Example:
    row: ManifestRow
    features: torch.Tensor
    target_ids: torch.Tensor
    replay: bool = False


def build_examples(base: BaseModel, rows: list[ManifestRow], desc: str,
                   feature_cache: str | None = None, replay: bool = False) -> list[Example]:
    features = row_features(base, rows, desc, feature_cache)
    return [Example(row, feats, torch.tensor(base.target_ids(
        row.target, row.text_language, row.emo_target, row.event_target, row.with_or_wo_itn)),
        replay)
        for row, feats in zip(rows, features)]


def epoch_examples(domain: list[Example], replay: list[Example], replay_ratio: float,
                   balance_emotions: bool, rng: random.Random) -> list[Example]:
    """The clips of one epoch: the domain clips (or an emotion-balanced draw of as many), plus
    replay clips so that they make up `replay_ratio` of the epoch."""
    clips = list(domain)
    if balance_emotions:
        frequency = Counter(e.row.emo_target for e in domain)
        weights = [1.0 / frequency[e.row.emo_target] for e in domain]
        clips = rng.choices(domain, weights=weights, k=len(domain))
    if replay_ratio > 0 and replay:
        wanted = round(len(clips) * replay_ratio / (1 - replay_ratio))
        clips += rng.sample(replay, wanted) if wanted <= len(replay) else rng.choices(replay, k=wanted)
    return clips


def make_batches(examples: list[Example], max_seconds: float, rng: random.Random | None,
                 pool_size: int = 64) -> list[list[Example]]:
    """Batches whose padded length x size stays under `max_seconds` of audio.

    With `rng`, examples are shuffled, then sorted by length within pools (duration bucketing,
    so padding is small) and the batches shuffled; without it the order is by length.
    """
    order = list(examples)
    if rng is None:
        order.sort(key=lambda e: e.features.shape[0])
        pools = [order]
    else:
        rng.shuffle(order)
        pools = [sorted(order[i:i + pool_size], key=lambda e: e.features.shape[0])
                 for i in range(0, len(order), pool_size)]
    batches = [[pool[p] for p in batch] for pool in pools
               for batch in pack_by_padded_seconds([e.features.shape[0] for e in pool], max_seconds)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, settings: AugmentSettings,
                 generator: torch.Generator) -> torch.Tensor:
    """Zero random mel bands (the same bins in every stacked LFR frame) and time spans."""
    features = features.clone()
    batch, frames, dim = features.shape
    stacked = dim // MEL_BINS
    view = features.view(batch, frames, stacked, MEL_BINS)
    for b in range(batch):
        for _ in range(settings.freq_masks):
            width = int(torch.randint(0, settings.freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, MEL_BINS - width + 1, (1,), generator=generator))
            view[b, :, :, start:start + width] = 0
        length = int(lengths[b])
        for _ in range(settings.time_masks):
            width = min(int(torch.randint(0, settings.time_width + 1, (1,), generator=generator)),
                        max(0, length // 5))
            start = int(torch.randint(0, max(1, length - width + 1), (1,), generator=generator))
            view[b, start:start + width] = 0
    return features


def collate(batch: list[Example], device: torch.device) -> dict:
    features, lengths = pad_features([e.features for e in batch])
    targets = torch.nn.utils.rnn.pad_sequence([e.target_ids for e in batch], batch_first=True,
                                              padding_value=-1)
    target_lengths = torch.tensor([len(e.target_ids) for e in batch], dtype=torch.int32)
    return {"speech": features.to(device), "speech_lengths": lengths.to(device),
            "text": targets.to(device), "text_lengths": target_lengths.to(device)}
