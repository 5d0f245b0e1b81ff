"""What the model says about each pool clip, in one batched pass: its pooled encoder
embedding (mean over the speech frames) and its emotion distribution."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from svlora.decoding import iter_transcribe_files
from svlora.model import BaseModel
from svlora.selection.pool import PoolError


@dataclass
class ClipScores:
    """The readable clips of a pool, in pool order, and the files that could not be used."""

    paths: list[str]
    embeddings: np.ndarray                   # [clips, encoder dims]
    emotion_probs: list[dict[str, float]]    # per clip: {emotion tag: probability}
    errors: list[PoolError] = field(default_factory=list)


def file_embedding(result: dict) -> list[float]:
    """A clip's pooled output; a long file cut into segments: their duration-weighted mean."""
    if "pooled" in result:
        return result["pooled"]
    weights = np.array([s["end"] - s["start"] for s in result["segments"]])
    pooled = np.array([s["pooled"] for s in result["segments"]])
    return (weights @ pooled / max(weights.sum(), 1e-9)).tolist()


def score_clips(base: BaseModel, paths: list[str], language: str = "auto",
                ban_emo_unknown: bool = False, max_seconds: float | None = None,
                progress: bool = True) -> ClipScores:
    """Embeddings and emotion distributions of `paths` (decoded in duration-sorted batches,
    memory bounded); an unreadable or too long file becomes a PoolError, the rest go on."""
    kept, embeddings, distributions, errors = [], [], [], []
    # groups of 240 s of audio: a GPU's full batch, and this bar (not one per group) moves
    results = iter_transcribe_files(base, paths, language=language, max_file_seconds=max_seconds,
                                    ban_emo_unknown=ban_emo_unknown, with_pooled=True,
                                    keep_going=True, pending_seconds=240.0)
    for result in tqdm(results, total=len(paths), desc="scoring pool", unit="clip",
                       disable=not progress):
        if "error" in result:
            errors.append(PoolError(result["path"], result["error"]))
            continue
        kept.append(result["path"])
        embeddings.append(file_embedding(result))
        distributions.append(result["emotion_probs"])
    dims = len(embeddings[0]) if embeddings else 0
    return ClipScores(kept, np.array(embeddings, np.float32).reshape(len(kept), dims),
                      distributions, errors)
