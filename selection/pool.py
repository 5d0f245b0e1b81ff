"""The unlabelled pool: every audio file under a folder (recursive, sorted), or the `source`
clips of a prepare manifest. A file that claims to be audio and cannot be read is a
PoolError, reported, never dropped without a word."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from svlora.errors import SvloraError

# Names that claim to be audio: such a file that libsndfile cannot decode is an error, not
# "not audio" (wider than what prepare reads on purpose: an .m4a pool should hear about it).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac",
                            ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64", ".webm", ".wma"})


@dataclass
class PoolError:
    path: str
    reason: str


@dataclass
class Pool:
    source: str
    paths: list[str]                                       # resolved, in a fixed order
    ignored: list[str] = field(default_factory=list)       # a folder's files that are not audio
    errors: list[PoolError] = field(default_factory=list)  # found, but not usable


def folder_pool(folder: Path) -> Pool:
    """Audio under `folder`, sorted; symlinked directories are not entered (no cycles)."""
    from svlora.audio import is_audio  # soundfile: imported when a folder is listed

    files = sorted(Path(parent) / name for parent, _, names in os.walk(folder) for name in names)
    audio, ignored = [], []
    for path in files:
        claimed = path.suffix.lower() in AUDIO_SUFFIXES
        (audio if claimed or is_audio(path) else ignored).append(path)
    if not audio:
        raise SvloraError(f"--pool {folder}: no audio file under this folder ({len(files)} other "
                          f"file(s)); give a folder of clips ({', '.join(sorted(AUDIO_SUFFIXES)[:6])}, ...) "
                          "or a prepare .jsonl manifest")
    return Pool(str(folder), [str(p.resolve()) for p in audio], [str(p) for p in ignored])


def manifest_pool(manifest: Path) -> Pool:
    """Each row's `source`, relative paths read from the manifest's folder."""
    from svlora.manifest import iter_json_objects

    paths = []
    try:
        for where, row in iter_json_objects(manifest):
            source = row.get("source")
            if not isinstance(source, str) or not source:
                raise SvloraError(f"{where}: no `source` path in this row; give a manifest "
                                  "`svlora prepare` wrote, or a folder of clips")
            paths.append(str((manifest.parent / source).resolve()))
    except UnicodeDecodeError:
        raise SvloraError(f"--pool {manifest}: not UTF-8 text; give a prepare .jsonl manifest") from None
    if not paths:
        raise SvloraError(f"--pool {manifest}: no rows; give a manifest with clips")
    return Pool(str(manifest), paths)


def list_pool(source: str) -> Pool:
    """A folder or a .jsonl manifest as a Pool; one clear error for anything else."""
    path = Path(source)
    if not path.exists():
        raise SvloraError(f"--pool {source}: not found; give a folder of clips or a prepare "
                          ".jsonl manifest")
    if path.is_dir():
        return folder_pool(path)
    if path.suffix.lower() != ".jsonl":
        raise SvloraError(f"--pool {source}: neither a folder nor a .jsonl manifest; give a "
                          "folder of clips or the train.jsonl `svlora prepare` wrote")
    return manifest_pool(path)
