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
    """Zero random mel bands (the same bins in every stacked LFR frame) and time spans.

    The widths and starts are drawn on the CPU from `generator` (a few numbers per clip, so a
    step's masks are a function of its seed on any device); the masks are built and applied
    where `features` are, so GPU features never travel to the host. `lengths`: a CPU tensor.
    """
    batch, frames, dim = features.shape
    stacked, device = dim // MEL_BINS, features.device
    lengths = lengths.to("cpu", torch.long)
    band_width = torch.randint(0, settings.freq_width + 1, (batch, settings.freq_masks), generator=generator)
    band_start = (torch.rand((batch, settings.freq_masks), generator=generator)
                  * (MEL_BINS - band_width + 1)).long()
    span_width = torch.minimum(
        torch.randint(0, settings.time_width + 1, (batch, settings.time_masks), generator=generator),
        (lengths // 5)[:, None])
    span_start = (torch.rand((batch, settings.time_masks), generator=generator)
                  * (lengths[:, None] - span_width + 1).clamp_min(1)).long()
    bands = spans_mask(band_start, band_width, MEL_BINS, device)   # [B, 80]
    spans = spans_mask(span_start, span_width, frames, device)     # [B, T]
    masked = bands[:, None, None, :] | spans[:, :, None, None]
    view = features.view(batch, frames, stacked, MEL_BINS)
    return torch.where(masked, torch.zeros((), dtype=features.dtype, device=device), view).view(batch, frames, dim)


def spans_mask(starts: torch.Tensor, widths: torch.Tensor, size: int, device) -> torch.Tensor:
    """[B, size] True inside any of each row's [start, start + width) spans."""
    positions = torch.arange(size, device=device)
    starts, ends = starts.to(device, non_blocking=True), (starts + widths).to(device, non_blocking=True)
    inside = (positions >= starts[..., None]) & (positions < ends[..., None])
    return inside.any(dim=1)


def collate(batch: list[Example], device: torch.device, bucket_frames: int = 0) -> dict:
    """Padded features (to a multiple of `bucket_frames` when > 0: compiled shapes repeat) and
    targets on `device`; on a GPU through pinned memory with non-blocking copies (the copy
    overlaps the previous step's kernels)."""
    features, lengths = pad_features([e.features for e in batch], bucket_frames)
    targets = torch.nn.utils.rnn.pad_sequence([e.target_ids for e in batch], batch_first=True,
                                              padding_value=-1)
    target_lengths = torch.tensor([len(e.target_ids) for e in batch], dtype=torch.int32)
    pin = device.type == "cuda"

    def moved(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=pin)

    return {"speech": moved(features), "speech_lengths": moved(lengths), "text": moved(targets),
            "text_lengths": moved(target_lengths)}


def clip_frames(batch: list[Example]) -> torch.Tensor:
    """The clips' feature lengths as a CPU tensor (SpecAugment's bounds, read without a sync)."""
    return torch.tensor([e.features.shape[0] for e in batch])
