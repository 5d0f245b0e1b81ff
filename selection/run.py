"""`svlora select`: a pool scored by the model, the clips to label chosen, and the list a
labeller works down written as CSV (atomically), with the files that could not be used."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svlora.errors import SvloraError
from svlora.io import write_csv_atomic
from svlora.labels import tag_name
from svlora.selection.choose import Selection, emotion_margin, select_clips
from svlora.selection.pool import PoolError, list_pool
from svlora.selection.score import ClipScores, score_clips

LIST_COLUMNS = ("path", "rank", "cluster", "margin", "predicted_emotion")


@dataclass
class SelectOptions:
    pool: str                    # a folder of clips or a prepare .jsonl manifest
    budget: int                  # clips to label
    model: str
    out: str                     # the CSV to write
    adapter: str | None = None
    language: str = "auto"
    clusters: int | None = None  # default: choose.default_clusters(budget)
    seed: int = 0
    device: str = "auto"
    hub: str = "ms"
    allow_base_mismatch: bool = False
    trust_remote_code: bool = False
    ban_emo_unknown: bool = False
    max_seconds: float | None = 120.0  # a clip to label is an utterance; longer: an error
    progress: bool = True


@dataclass
class SelectReport:
    out: str
    chosen: int
    scored: int                  # readable clips in the pool
    quotas: list[int]            # clips chosen per cluster
    errors: list[PoolError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors_file: str | None = None


def check_options(options: SelectOptions) -> None:
    """The settings that can be wrong before anything loads, each one line with the fix."""
    if options.budget < 1:
        raise SvloraError(f"--budget {options.budget}: give the number of clips to label (1 or more)")
    if options.clusters is not None and options.clusters < 1:
        raise SvloraError(f"--clusters {options.clusters}: give 1 or more (or leave it out)")
    if options.seed < 0:
        raise SvloraError(f"--seed {options.seed}: give 0 or more")
    if options.max_seconds is not None and options.max_seconds <= 0:
        raise SvloraError(f"--max-seconds {options.max_seconds:g}: give a positive number of seconds")
    out = Path(options.out)
    if out.is_dir():
        raise SvloraError(f"--out {out} is a directory; give a CSV file path such as {out / 'to_label.csv'}")
    if out.suffix.lower() != ".csv":
        raise SvloraError(f"--out {out}: give a .csv path (the list is CSV)")


def errors_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.errors.csv")


def list_rows(scores: ClipScores, selection: Selection, margins: np.ndarray,
              emotions: list[str]) -> list[dict]:
    """One row per chosen clip, rank order: what the labeller reads."""
    rows = []
    for rank, index in enumerate(selection.order, start=1):
        probabilities = scores.emotion_probs[index]
        rows.append({"path": scores.paths[index], "rank": rank,
                     "cluster": selection.clusters[index], "margin": f"{margins[index]:.4f}",
                     "predicted_emotion": tag_name(max(probabilities, key=probabilities.get)),
                     **{f"p_{tag_name(t)}": f"{probabilities.get(t, 0.0):.4f}" for t in emotions}})
    return rows


def write_outputs(out: Path, rows: list[dict], emotions: list[str],
                  errors: list[PoolError]) -> str | None:
    """The list and, when some files could not be used, OUT.errors.csv beside it (a stale
    one from an earlier run is removed, so it always describes this list)."""
    columns = [*LIST_COLUMNS, *(f"p_{tag_name(t)}" for t in emotions)]
    write_csv_atomic(out, rows, columns)
    problems = errors_path(out)
    if not errors:
        problems.unlink(missing_ok=True)
        return None
    write_csv_atomic(problems, [{"path": e.path, "reason": e.reason} for e in errors], ["path", "reason"])
    return str(problems)


def load_stage1(options: SelectOptions):
    """The model whose view of the clips decides (base, or base + adapter in its labels)."""
    from svlora.adapters import load_model

    base = load_model(options.model, adapter=options.adapter, device=options.device,
                      hub=options.hub, allow_base_mismatch=options.allow_base_mismatch,
                      trust_remote_code=options.trust_remote_code).base
    if options.language not in base.model.lid_dict:
        raise SvloraError(f"--language {options.language}: use auto or one of "
                          f"{', '.join(k for k in base.model.lid_dict if k != 'auto')}")
    return base


def run_selection(options: SelectOptions) -> SelectReport:
    """Score the pool, choose `budget` clips (selection.choose) and write the list."""
    check_options(options)
    pool = list_pool(options.pool)
    base = load_stage1(options)
    scores = score_clips(base, pool.paths, options.language, options.ban_emo_unknown,
                         options.max_seconds, options.progress)
    errors = pool.errors + scores.errors
    if not scores.paths:
        first = errors[0]
        raise SvloraError(f"--pool {options.pool}: none of its {len(pool.paths)} clip(s) could be "
                          f"read (e.g. {first.path}: {first.reason}); fix them or give another pool")
    margins = np.array([emotion_margin(p) for p in scores.emotion_probs])
    selection = select_clips(scores.embeddings, margins, options.budget, options.clusters,
                             options.seed)
    emotions = list(base.labels.emotion)
    out = Path(options.out)
    problems = write_outputs(out, list_rows(scores, selection, margins, emotions), emotions, errors)
    return SelectReport(str(out), len(selection.order), len(scores.paths), selection.quotas,
                        errors, pool.ignored, problems)
