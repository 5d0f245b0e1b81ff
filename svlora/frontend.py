"""SenseVoice's WavFrontend (Kaldi fbank → LFR → CMVN), vectorised over frames.

FunASR computes fbank frame by frame (kaldi-native-fbank when torchaudio is absent); this
module computes the same numbers with one batched FFT per clip, reads the frontend settings
from a model dir's config.yaml and am.mvn without importing FunASR, and has a fingerprint that
keys the on-disk feature cache. Tests check it against FunASR's WavFrontend.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
import yaml

from svlora.errors import ModelError

PREEMPHASIS = 0.97
LOW_FREQ = 20.0
WINDOWS = ("hamming", "hanning", "povey", "rectangular")


@dataclass
class FrontendConfig:
    """WavFrontend's settings (FunASR's defaults) plus the CMVN vectors of am.mvn."""

    fs: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length: float = 25.0
    frame_shift: float = 10.0
    lfr_m: int = 1
    lfr_n: int = 1
    snip_edges: bool = True
    upsacle_samples: bool = True  # FunASR's spelling: scale [-1, 1] floats to int16 range
    cmvn_shift: list[float] = field(default_factory=list)
    cmvn_scale: list[float] = field(default_factory=list)

    @cached_property
    def cmvn_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.cmvn_shift:
            return None
        return (torch.tensor(self.cmvn_shift, dtype=torch.float32),
                torch.tensor(self.cmvn_scale, dtype=torch.float32))

    @cached_property
    def fingerprint(self) -> str:
        """Hash of everything that changes the features: a feature cache's key (computed once;
        make changed settings with dataclasses.replace)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_cmvn(path: Path) -> tuple[list[float], list[float]]:
    """AddShift and Rescale vectors from a Kaldi-nnet-text am.mvn (as FunASR's load_cmvn)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    vectors = {}
    for index, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        following = lines[index + 1].split()
        if head and head[0] in ("<AddShift>", "<Rescale>") and following[:1] == ["<LearnRateCoef>"]:
            vectors[head[0]] = [float(v) for v in following[3:-1]]
    if set(vectors) != {"<AddShift>", "<Rescale>"}:
        raise ModelError(f"{path}: no <AddShift>/<Rescale> vectors; not a FunASR am.mvn")
    return vectors["<AddShift>"], vectors["<Rescale>"]


def frontend_config(model_dir: str | Path) -> FrontendConfig:
    """The WavFrontend settings a SenseVoiceSmall model dir declares."""
    model_dir = Path(model_dir)
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    if config.get("frontend", "WavFrontend") != "WavFrontend":
        raise ModelError(f"{model_dir}: frontend {config['frontend']} is not WavFrontend")
    settings = dict(config.get("frontend_conf") or {})
    settings.pop("cmvn_file", None)
    known = {f for f in FrontendConfig.__dataclass_fields__ if not f.startswith("cmvn")}
    result = FrontendConfig(**{k: v for k, v in settings.items() if k in known})
    if result.window not in WINDOWS:
        raise ModelError(f"{model_dir}: frontend window {result.window!r} is not supported")
    if not (model_dir / "am.mvn").is_file():  # SenseVoiceSmall's features are always normalised
        raise ModelError(f"{model_dir}: am.mvn is missing; without it features would be "
                         "silently un-normalised. Copy am.mvn from the original model dir")
    result.cmvn_shift, result.cmvn_scale = read_cmvn(model_dir / "am.mvn")
    return result


def _mel(frequency):
    return 1127.0 * np.log(1.0 + np.asarray(frequency) / 700.0)


@lru_cache(maxsize=8)
def mel_banks(n_mels: int, fft_size: int, fs: int) -> torch.Tensor:
    """Kaldi's triangular mel filters [fft_size // 2 + 1, n_mels] (Nyquist column zero)."""
    nyquist = fs / 2
    low, high = _mel(LOW_FREQ), _mel(nyquist)
    delta = (high - low) / (n_mels + 1)
    left = low + delta * np.arange(n_mels)[:, None]
    center, right = left + delta, left + 2 * delta
    bins_mel = _mel(fs / fft_size * np.arange(fft_size // 2))[None, :]
    up = (bins_mel - left) / (center - left)
    down = (right - bins_mel) / (right - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights = np.pad(weights, ((0, 0), (0, 1)))
    return torch.from_numpy(weights.T.astype(np.float32))


@lru_cache(maxsize=8)
def window_function(kind: str, length: int) -> torch.Tensor:
    n = torch.arange(length, dtype=torch.float64)
    if kind == "hamming":
        values = 0.54 - 0.46 * torch.cos(2 * math.pi * n / (length - 1))
    elif kind == "hanning":
        values = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))
    elif kind == "povey":
        values = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))) ** 0.85
    else:
        values = torch.ones(length, dtype=torch.float64)
    return values.float()


def windowed_frames(waveform: torch.Tensor, config: FrontendConfig) -> torch.Tensor:
    """Kaldi's frames of one clip [frames, frame_size]: DC removed, pre-emphasised, windowed."""
    samples = waveform.numel()
    frame_ms = min(config.frame_length, samples / config.fs * 1000)
    frame_size = int(config.fs * frame_ms * 0.001)
    shift = int(config.fs * config.frame_shift * 0.001)
    if samples < frame_size or frame_size == 0:
        return torch.zeros((0, max(frame_size, 1)), device=waveform.device)
    if not config.snip_edges:
        raise ModelError("snip_edges=False frontends are not supported")
    # float32 throughout, as kaldi-native-fbank computes
    frames = waveform.float().unfold(0, frame_size, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
    return (frames - PREEMPHASIS * previous) * window_function(config.window, frame_size).to(frames.device)


def log_mel(frames: torch.Tensor, config: FrontendConfig) -> torch.Tensor:
    """Log mel energies [frames, n_mels] of windowed frames (one FFT for all of them)."""
    if frames.shape[0] == 0:
        return torch.zeros((0, config.n_mels), device=frames.device)
    fft_size = 1 << (frames.shape[1] - 1).bit_length()
    spectrum = torch.fft.rfft(frames, n=fft_size)
    power = (spectrum * spectrum.conj()).real  # |X|^2; fastest form on CPU
    energies = power @ mel_banks(config.n_mels, fft_size, config.fs).to(frames.device)
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


def kaldi_fbank(waveform: torch.Tensor, config: FrontendConfig) -> torch.Tensor:
    """Log mel filterbank [frames, n_mels] as Kaldi computes it (no dither, no energy)."""
    return log_mel(windowed_frames(waveform, config), config)


def low_frame_rate(features: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Stack m frames every n (FunASR's apply_lfr: first frame repeated on the left, last
    frame repeated to fill the right)."""
    if m == 1 and n == 1:
        return features
    frames = features.shape[0]
    output_frames = math.ceil(frames / n)
    left = features[:1].repeat((m - 1) // 2, 1)
    needed = (output_frames - 1) * n + m
    padded = torch.cat((left, features))
    if padded.shape[0] < needed:
        padded = torch.cat((padded, features[-1:].repeat(needed - padded.shape[0], 1)))
    return padded.unfold(0, m, n)[:output_frames].transpose(1, 2).reshape(output_frames, -1)


def compute_features(samples: np.ndarray, config: FrontendConfig,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """fbank → LFR → CMVN features [frames, n_mels * lfr_m] of a 16 kHz mono float clip,
    computed on `device` (and left there)."""
    return batch_features([samples], config, device)[0]


def batch_features(clips: list[np.ndarray], config: FrontendConfig,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """compute_features of several clips with one FFT and one mel matmul over all their
    frames, on `device` (a GPU decodes this way: the audio goes over once, as float32 samples).
    Each clip's features equal its own compute_features up to float rounding."""
    waveforms = [torch.as_tensor(np.asarray(c, dtype=np.float32)).to(device) for c in clips]
    if config.upsacle_samples:
        waveforms = [w * (1 << 15) for w in waveforms]
    framed = [windowed_frames(w, config) for w in waveforms]
    if len({f.shape[1] for f in framed}) == 1:  # one FFT size: every frame in one call
        mels = list(log_mel(torch.cat(framed), config).split([f.shape[0] for f in framed]))
    else:  # a clip shorter than one frame uses a shorter frame, as Kaldi does
        mels = [log_mel(f, config) for f in framed]
    outputs = []
    for mel in mels:
        features = low_frame_rate(mel, config.lfr_m, config.lfr_n)
        if config.cmvn_tensors is not None:
            dim = features.shape[1]
            shift, scale = (t.to(features.device) for t in config.cmvn_tensors)
            features = (features + shift[:dim]) * scale[:dim]
        outputs.append(features.float().contiguous())
    return outputs
