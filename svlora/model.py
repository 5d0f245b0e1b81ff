"""Load a SenseVoiceSmall base (a local dir or a hub id) through FunASR, and turn audio and
labels into the tensors it trains and decodes on. Every stage loads its model here."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svlora.errors import ModelError
from svlora.frontend import FrontendConfig, compute_features, frontend_config
from svlora.io import sha256_file
from svlora.labels import EMOTION_TAGS, EVENT_TAGS, ITN_TAGS, LANGUAGE_TAGS

RICH_PREFIX_LENGTH = 4  # [language, emotion, event, itn] precede the text in SenseVoice targets


@contextlib.contextmanager
def stdout_to_stderr():
    """FunASR prints notices on import and load; keep stdout clean for --json output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def quiet_funasr_logging():
    """FunASR logs hub and checkpoint lines on every load, even for local dirs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def import_automodel():
    with stdout_to_stderr():
        from funasr import AutoModel
    return AutoModel


@dataclass
class BaseModel:
    """A SenseVoiceSmall nn.Module with its tokenizer, frontend settings and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    frontend: FrontendConfig
    model_dir: Path
    config: dict = field(repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weights_path(self) -> Path:
        return self.model_dir / "model.pt"

    def features(self, waveform: np.ndarray) -> torch.Tensor:
        """LFR+CMVN fbank features [frames, 560] of a 16 kHz mono float waveform, as the
        model's WavFrontend computes them (without dither)."""
        return compute_features(waveform, self.frontend)

    def target_ids(self, text: str, language: str, emotion: str, event: str, itn: str) -> list[int]:
        """The training target: [lang, emotion, event, itn] tag ids then the text's ids."""
        prefix = []
        for tag, vocabulary in ((language, LANGUAGE_TAGS), (emotion, EMOTION_TAGS),
                                (event, EVENT_TAGS), (itn, ITN_TAGS)):
            ids = self.tokenizer.encode(tag)
            if ids != [vocabulary[tag]]:
                raise ModelError(f"tokenizer of {self.model_dir} encodes {tag} as {ids}, expected "
                                 f"[{vocabulary[tag]}]: not a SenseVoiceSmall tokenizer")
            prefix += ids
        return prefix + self.tokenizer.encode(text)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)


def resolve_model_dir(model: str, hub: str = "ms") -> Path:
    """A local model dir as is; a hub id (e.g. iic/SenseVoiceSmall) downloaded by FunASR."""
    if os.path.isdir(model):
        return Path(model)
    try:
        with stdout_to_stderr():
            from funasr.download.download_model_from_hub import download_model
            kwargs = download_model(model=model, hub=hub, disable_update=True)
    except Exception as error:  # FunASR raises many types for an unreachable hub
        raise ModelError(f"cannot find or download model '{model}' ({error}); pass a local model "
                         "directory (config.yaml, model.pt, am.mvn, the .bpe.model)") from error
    return Path(kwargs["model_path"])


def load_base_model(model: str, device: str = "cpu", hub: str = "ms") -> BaseModel:
    """Build SenseVoiceSmall with FunASR's own AutoModel machinery and load its weights."""
    model_dir = resolve_model_dir(model, hub)
    if not (model_dir / "config.yaml").is_file() or not (model_dir / "model.pt").is_file():
        raise ModelError(f"{model_dir} is not a SenseVoiceSmall model dir: it needs config.yaml "
                         "and model.pt (run `svlora make-tiny-model DIR` for a test model)")
    AutoModel = import_automodel()
    threads = torch.get_num_threads()
    with stdout_to_stderr(), quiet_funasr_logging():
        module, kwargs = AutoModel.build_model(model=str(model_dir), device=device,
                                               disable_update=True, ncpu=threads, hub=hub)
    torch.set_num_threads(threads)
    if type(module).__name__ != "SenseVoiceSmall":
        raise ModelError(f"{model_dir} holds a {type(module).__name__}, not SenseVoiceSmall")
    module.to(device)
    # svlora's vectorised WavFrontend, without dither: eval is repeatable, features cacheable.
    return BaseModel(module, kwargs["tokenizer"], frontend_config(model_dir), model_dir, dict(kwargs))


def weights_sha256(model_dir: str | Path) -> str:
    """Identity of a base model: sha256 of its model.pt."""
    return sha256_file(Path(model_dir) / "model.pt")


def write_model_dir(state_dict: dict, source_dir: str | Path, out_dir: str | Path) -> Path:
    """A model dir in the base's layout: the base's files with model.pt replaced by `state_dict`.

    model.pt stays a plain tensor state dict because FunASR's loader reads that file name;
    it loads with torch.load(weights_only=True).
    """
    import shutil

    from svlora.io import atomic_path

    source, out = Path(source_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "model.pt" or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / item.name)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    with atomic_path(out / "model.pt") as temporary:
        torch.save(tensors, temporary)
    return out
