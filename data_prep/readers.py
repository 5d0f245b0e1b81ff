"""Read the user's input table (csv, jsonl or an emotion-named folder tree) into raw rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from svlora.errors import ManifestError
from svlora.manifest import iter_json_objects

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".opus"}


@dataclass
class InputRow:
    """One clip as the user described it, before validation. `where` names file:line."""

    where: str
    audio: Path
    text: str | None
    emotion: str | None
    language: str | None = None
    event: str | None = None
    speaker: str | None = None


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _row_from_fields(fields: dict, where: str, base_dir: Path) -> InputRow:
    audio = _clean(fields.get("audio"))
    if audio is None:
        raise ManifestError(f"{where}: no 'audio' value (the clip's path is required)")
    path = Path(audio)
    return InputRow(where=where, audio=path if path.is_absolute() else base_dir / path,
                    text=_clean(fields.get("text")), emotion=_clean(fields.get("emotion")),
                    language=_clean(fields.get("language")), event=_clean(fields.get("event")),
                    speaker=_clean(fields.get("speaker")))


def read_csv(path: Path) -> tuple[list[InputRow], set[str]]:
    """Rows of a CSV with a header (audio, text, emotion[, language, event, speaker])."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip() for c in (reader.fieldnames or [])}
        if "audio" not in columns:
            raise ManifestError(f"{path}:1: header has no 'audio' column (found: "
                                f"{', '.join(sorted(columns)) or 'nothing'})")
        rows = [_row_from_fields({k.strip(): v for k, v in record.items() if k}, f"{path}:{number}",
                                 path.parent)
                for number, record in enumerate(reader, start=2)]
    return rows, columns


def read_jsonl(path: Path) -> tuple[list[InputRow], set[str]]:
    """Rows of a JSON-lines file with the same fields as the CSV format."""
    rows, columns = [], set()
    for where, record in iter_json_objects(path):
        columns |= record.keys()
        rows.append(_row_from_fields(record, where, path.parent))
    return rows, columns


def read_transcripts(path: Path) -> dict[str, str]:
    """`id<TAB>text[<TAB>...]` lines (ESD style) or `id text` lines (Kaldi style)."""
    transcripts = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split(maxsplit=1)
            if len(parts) >= 2 and parts[1].strip():
                transcripts[parts[0].strip()] = parts[1].strip()
    return transcripts


def read_folder(root: Path, transcripts_file: Path | None) -> tuple[list[InputRow], set[str]]:
    """`root/<emotion>/<clip>`; transcripts from `transcripts_file` or a single top-level .txt."""
    if transcripts_file is None:
        candidates = sorted(root.glob("*.txt"))
        transcripts_file = candidates[0] if len(candidates) == 1 else None
    transcripts = read_transcripts(transcripts_file) if transcripts_file else {}
    rows = []
    for emotion_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for clip in sorted(emotion_dir.rglob("*")):
            if clip.suffix.lower() in AUDIO_EXTENSIONS and clip.is_file():
                rows.append(InputRow(where=str(clip), audio=clip, text=transcripts.get(clip.stem),
                                     emotion=emotion_dir.name))
    if not rows:
        raise ManifestError(f"{root}: no audio files under <emotion>/ folders "
                            f"(extensions {', '.join(sorted(AUDIO_EXTENSIONS))})")
    return rows, {"audio", "emotion"} | ({"text"} if transcripts else set())


def read_input(path: str | Path, input_format: str,
               transcripts_file: str | Path | None = None) -> tuple[list[InputRow], set[str]]:
    """Raw rows and the set of columns the input provides."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: input not found")
    if input_format == "csv":
        return read_csv(path)
    if input_format == "jsonl":
        return read_jsonl(path)
    if input_format == "folder":
        if not path.is_dir():
            raise ManifestError(f"{path}: --format folder needs a directory")
        return read_folder(path, Path(transcripts_file) if transcripts_file else None)
    raise ManifestError(f"unknown --format {input_format!r}; use csv, jsonl or folder")
