"""Fitting the card: precision, gradient checkpointing over encoder blocks, peak-memory
measurement, and the preflight that runs the recipe's largest batch once."""

from __future__ import annotations

import functools
import resource
import sys

import torch
from torch.utils.checkpoint import checkpoint

from svlora.errors import SvloraError

GIB = 1 << 30


def resolve_precision(setting: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for this device."""
    if setting == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SvloraError("train.precision=bf16 but this GPU has no bf16; use fp32 or auto")
    return setting


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_base_dtype(setting: str, precision: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for the frozen weights: auto keeps them in bf16 when the step runs in
    bf16 on a GPU, so autocast finds them already cast instead of copying each one per step."""
    if setting == "auto":
        return "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"
    return setting


STORED_IN_BF16 = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)


def store_frozen_in_bf16(model: torch.nn.Module) -> int:
    """Cast the frozen weights of linear, convolution and embedding layers to bf16 (what bf16
    autocast would cast them to on every forward); trainable weights (LoRA, modules_to_save)
    and normalisation layers stay fp32. Returns the number of tensors cast."""
    cast = 0
    for module in model.modules():
        if not isinstance(module, STORED_IN_BF16):
            continue
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad and parameter.dtype == torch.float32:
                parameter.data = parameter.data.to(torch.bfloat16)
                cast += 1
    return cast


def encoder_blocks(sensevoice: torch.nn.Module) -> list[torch.nn.Module]:
    encoder = sensevoice.encoder
    return [*encoder.encoders0, *encoder.encoders, *encoder.tp_encoders]


def enable_gradient_checkpointing(sensevoice: torch.nn.Module) -> int:
    """Recompute every encoder block in backward instead of keeping its activations.

    The block's own forward is wrapped on the instance, so parameter names (and so adapter
    files) do not change. Returns the number of blocks wrapped.
    """
    blocks = encoder_blocks(sensevoice)
    for block in blocks:
        original = block.forward

        @functools.wraps(original)
        def forward(*args, _original=original, _block=block, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        block.forward = forward
    return len(blocks)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Peak memory of a region: CUDA allocator peak on a GPU, process peak RSS on a CPU
    (whole-process, so it includes the weights and Python; reset at entry where Linux allows)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / GIB
        return peak_rss_bytes() / GIB

    @property
    def kind(self) -> str:
        return "GPU memory allocated" if self.device.type == "cuda" else "process RSS"


def worst_case_batch(rows, max_seconds: float, device: torch.device,
                     feature_dim: int = 560) -> dict:
    """The largest batch the batch planner can make from these rows: as many of the longest
    clip as fit in `max_seconds` of padded audio, each with the longest transcript."""
    from svlora.features import FRAME_SECONDS
    from svlora.labels import EMOTION_TAGS, EVENT_TAGS, ITN_TAGS, LANGUAGE_TAGS

    longest_frames = max(-(-row.source_len // 6) for row in rows)  # 10 ms frames → LFR frames
    size = max(1, int(max_seconds // (longest_frames * FRAME_SECONDS)))
    text_length = max(row.target_len for row in rows)
    generator = torch.Generator().manual_seed(0)
    prefix = [LANGUAGE_TAGS["<|en|>"], EMOTION_TAGS["<|HAPPY|>"], EVENT_TAGS["<|Speech|>"],
              ITN_TAGS["<|woitn|>"]]
    text = torch.randint(3, 5000, (size, text_length), generator=generator)
    targets = torch.cat([torch.tensor(prefix).repeat(size, 1), text], dim=1)
    return {"speech": torch.randn(size, longest_frames, feature_dim, generator=generator).to(device),
            "speech_lengths": torch.full((size,), longest_frames, dtype=torch.int32, device=device),
            "text": targets.to(device),
            "text_lengths": torch.full((size,), targets.shape[1], dtype=torch.int32, device=device),
            "clips": size, "seconds": size * longest_frames * FRAME_SECONDS}
