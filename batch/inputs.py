"""What a batch job transcribes: a folder (recursive; audio recognised by content), a manifest
(`.jsonl`, each row's `source`), or a text file of paths (one per line). Paths are resolved and
kept in a deterministic order: the folder's sorted walk, the file's own order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from svlora.errors import SvloraError


@dataclass
class Inputs:
    paths: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)  # a folder's files that are not audio


def list_inputs(source: str) -> Inputs:
    path = Path(source)
    if not path.exists():
        raise SvloraError(f"{source}: not found; give a folder, a .jsonl manifest or a text file of paths")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        from svlora.audio import is_audio  # soundfile: imported when a folder is listed

        audio = [p for p in files if is_audio(p)]
        if not audio:
            raise SvloraError(f"{source}: no audio file under this folder ({len(files)} other files)")
        skipped = [str(p) for p in files if p not in set(audio)]
        return Inputs([str(p.resolve()) for p in audio], str(path), skipped)
    if path.suffix == ".jsonl":
        from svlora.manifest import iter_json_objects

        paths = []
        for where, row in iter_json_objects(path):
            value = row.get("source", row.get("audio"))
            if not isinstance(value, str) or not value:
                raise SvloraError(f"{where}: no `source` (or `audio`) path in this row")
            paths.append(str((path.parent / value).resolve()))
        return Inputs(paths, str(path))
    paths = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(str((path.parent / line).resolve()))
    if not paths:
        raise SvloraError(f"{source}: no paths (one audio path per line; # comments)")
    return Inputs(paths, str(path))
