"""Resumable checkpoints: trainable weights (safetensors) plus optimizer, scheduler, RNG and
data-order state (tensors and plain values, read back with weights_only=True). Written into a
staging dir and swapped into OUT/checkpoint in one rename."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from svlora.adapter_format import replace_dir
from svlora.errors import SvloraError

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
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=out))
    try:
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                   if p.requires_grad}
        save_file(weights, str(staging / WEIGHTS))
        torch.save({**trainer_state, "rng": rng_state()}, staging / STATE)
        replace_dir(staging, out / "checkpoint")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(out: Path, model: torch.nn.Module) -> dict:
    """Restore trainable weights and RNG; return the trainer state (optimizer etc.)."""
    directory = out / "checkpoint"
    if not (directory / WEIGHTS).is_file() or not (directory / STATE).is_file():
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
