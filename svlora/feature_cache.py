"""On-disk cache of frontend features, keyed by the audio file's sha256 and the frontend's
fingerprint: a changed frontend (config.yaml frontend_conf or am.mvn) reads a different folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svlora.frontend import FrontendConfig
from svlora.io import atomic_path, write_json_atomic


class FeatureCache:
    def __init__(self, root: str | Path, config: FrontendConfig):
        self.root = Path(root)
        self.directory = self.root / config.fingerprint
        self.config = config

    def path(self, audio_sha256: str) -> Path:
        return self.directory / audio_sha256[:2] / f"{audio_sha256}.npy"

    def load(self, audio_sha256: str) -> torch.Tensor | None:
        path = self.path(audio_sha256)
        if not path.is_file():
            return None
        return torch.from_numpy(np.load(path, allow_pickle=False))

    def store(self, audio_sha256: str, features: torch.Tensor) -> None:
        path = self.path(audio_sha256)
        if not (self.directory / "frontend.json").is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.directory / "frontend.json", {
                "fingerprint": self.config.fingerprint, "fs": self.config.fs,
                "window": self.config.window, "n_mels": self.config.n_mels,
                "frame_length": self.config.frame_length, "frame_shift": self.config.frame_shift,
                "lfr_m": self.config.lfr_m, "lfr_n": self.config.lfr_n})
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, features.numpy().astype(np.float32), allow_pickle=False)
