"""Resumable checkpoints: trainable weights (safetensors) plus optimizer, scheduler, RNG and
data-order state (tensors and plain values, read back with weights_only=True). Written into a
staging dir and swapped into OUT/checkpoint in one rename."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from svlora.adapter_format import replace_dir
from svlora.errors import SvloraError
from svlora.io import staging_dir

WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.pt"


def rng_state() -> dict:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, model: torch.nn.Module, trainer_state: dict) -> None:
    """Write OUT/checkpoint atomically; the previous checkpoint survives until the swap."""
    staging = staging_dir(out, ".checkpoint.")
    try:
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                   if p.requires_grad}
        save_file(weights, str(staging / WEIGHTS))
        torch.save({**trainer_state, "rng": rng_state()}, staging / STATE)
        replace_dir(staging, out / "checkpoint")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def readable_state(directory: Path) -> dict | None:
    """The trainer state of a complete checkpoint directory, else None."""
    if not (directory / WEIGHTS).is_file() or not (directory / STATE).is_file():
        return None
    try:
        load_file(str(directory / WEIGHTS))
        return torch.load(directory / STATE, map_location="cpu", weights_only=True)
    except Exception:  # a file cut short by a kill: not a checkpoint
        return None


def settle_checkpoints(out: Path) -> Path | None:
    """OUT/checkpoint as the newest complete checkpoint, whichever of OUT/checkpoint, a staged
    `.checkpoint.*` or the `.checkpoint.old` a kill between two renames left behind; every
    other leftover is removed. None when there is none."""
    candidates = [out / "checkpoint", *sorted(out.glob(".checkpoint.*"))]
    states = {d: readable_state(d) for d in candidates if d.is_dir()}
    complete = {d: s for d, s in states.items() if s is not None}
    if not complete:
        for directory in candidates[1:]:
            shutil.rmtree(directory, ignore_errors=True)
        return None
    newest = max(complete, key=lambda d: (complete[d]["step"], d == out / "checkpoint"))
    if newest != out / "checkpoint":
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        newest.replace(out / "checkpoint")
    for directory in candidates[1:]:
        shutil.rmtree(directory, ignore_errors=True)
    return out / "checkpoint"


def load_checkpoint(out: Path, model: torch.nn.Module) -> dict:
    """Restore trainable weights and RNG from the newest complete checkpoint; return the
    trainer state (optimizer etc.)."""
    directory = settle_checkpoints(out)
    if directory is None:
        raise SvloraError(f"{out}: no checkpoint to resume from (OUT/checkpoint is written every "
                          "train.checkpoint_every steps); start without --resume")
    weights = load_file(str(directory / WEIGHTS))
    parameters = dict(model.named_parameters())
    missing = sorted(set(weights) ^ {n for n, p in parameters.items() if p.requires_grad})
    if missing:
        raise SvloraError(f"{directory}: its trainable weights do not match this recipe's (e.g. "
                          f"{missing[0]}); resume with the recipe the run started with")
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    state = torch.load(directory / STATE, map_location="cpu", weights_only=True)
    set_rng_state(state.pop("rng"))
    return state
