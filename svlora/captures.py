"""The capture folder: what `svlora serve --capture DIR` keeps of real requests and what
reviewers say about them — the one format serve writes and review/select read.

    DIR/audio/<id>.<ext>     the request's audio bytes as received
    DIR/captures/<id>.json   a Capture record; written after its audio, so a record always has it
    DIR/feedback.jsonl       Feedback records, appended only (a later record corrects, never
                             overwrites, an earlier one)

Ids are `cap_<ms since epoch, 13 digits>_<8 hex>`: sortable by time, so the oldest go first
when the folder passes its size cap.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from svlora.errors import SvloraError
from svlora.io import atomic_path
from svlora.label_schema import KINDS, LabelSchema
from svlora.labels import tag_name

CAPTURES, AUDIO, FEEDBACK = "captures", "audio", "feedback.jsonl"
ID_PREFIX = "cap_"
MAX_TEXT_CHARS = 10_000
FEEDBACK_SOURCES = ("api", "ui", "labelstudio")


class CaptureError(SvloraError):
    """A capture folder or feedback record that cannot be used, with the reason and the fix."""


@dataclass
class Capture:
    id: str
    time: str                   # ISO 8601 UTC
    model: str                  # the name the request asked for (base, adapter or pipeline)
    kind: str                   # base | adapter | pipeline
    hashes: dict                # base_sha256, adapter identity, rules/cascade hashes as served
    audio: str                  # path of the audio, relative to DIR
    audio_sha256: str
    seconds: float
    response: dict              # text, raw, tags, probabilities, segments/words as returned
    endpoint: str = "transcriptions"  # transcriptions | realtime
    language: str = "auto"      # the language the request asked for


@dataclass
class Feedback:
    id: str                     # a Capture id
    labels: dict                # text / emotion / event / language / <head>: corrected values
    source: str = "api"         # api | ui | labelstudio
    reviewer: str | None = None
    time: str = field(default_factory=lambda: utc_now())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_capture_id(now: float | None = None) -> str:
    milliseconds = int((time.time() if now is None else now) * 1000)
    return f"{ID_PREFIX}{milliseconds:013d}_{secrets.token_hex(4)}"


def is_capture_id(value: str) -> bool:
    head, _, tail = value[len(ID_PREFIX):].partition("_")
    return (value.startswith(ID_PREFIX) and len(head) == 13 and head.isdigit() and len(tail) == 8
            and all(c in "0123456789abcdef" for c in tail))


def record_path(folder: Path, capture_id: str) -> Path:
    return folder / CAPTURES / f"{capture_id}.json"


def require_capture_dir(folder: str | os.PathLike, create: bool = False) -> Path:
    """The capture folder, created when asked (serve), or one clear error naming it."""
    path = Path(folder)
    if create:
        try:
            (path / CAPTURES).mkdir(parents=True, exist_ok=True)
            (path / AUDIO).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CaptureError(f"--capture {path}: cannot create it ({error.strerror}); "
                               "choose a writable directory") from None
        if not os.access(path, os.W_OK):
            raise CaptureError(f"--capture {path} is not writable; choose another directory")
    elif not (path / CAPTURES).is_dir():
        raise CaptureError(f"{path}: not a capture folder (no {CAPTURES}/); give the DIR that "
                           "`svlora serve --capture DIR` wrote")
    return path


def write_capture(folder: Path, capture: Capture, audio: bytes) -> None:
    """Audio then record, each atomically: a reader never sees a record without its audio."""
    with atomic_path(folder / capture.audio) as temporary:
        temporary.write_bytes(audio)
    with atomic_path(record_path(folder, capture.id)) as temporary:
        temporary.write_text(json.dumps(asdict(capture), ensure_ascii=False), encoding="utf-8")


def read_capture(folder: Path, capture_id: str) -> Capture | None:
    path = record_path(folder, capture_id)
    if not is_capture_id(capture_id) or not path.exists():
        return None
    return parse_capture(path)


def parse_capture(path: Path) -> Capture:
    try:
        return Capture(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise CaptureError(f"{path}: not a capture record ({error}); remove the file") from None


def read_captures(folder: Path) -> list[Capture]:
    """Every capture, oldest first."""
    return [parse_capture(path) for path in sorted((folder / CAPTURES).glob(f"{ID_PREFIX}*.json"))]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for sub in (CAPTURES, AUDIO) for p in (folder / sub).iterdir()
               if p.is_file())


def evict_oldest(folder: Path, max_bytes: int, incoming: int = 0) -> list[str]:
    """Remove the oldest captures (record first, then audio) until the folder and `incoming`
    bytes fit in `max_bytes`; their feedback stays in feedback.jsonl. Returns the ids removed."""
    records = sorted((folder / CAPTURES).glob(f"{ID_PREFIX}*.json"))
    sizes = {p.stem: p.stat().st_size for p in records}
    audio = {p.stem: p for p in (folder / AUDIO).iterdir() if p.is_file()}
    used = sum(sizes.values()) + sum(p.stat().st_size for p in audio.values()) + incoming
    removed = []
    for path in records:
        if used <= max_bytes:
            break
        path.unlink(missing_ok=True)
        used -= sizes[path.stem]
        if path.stem in audio:
            used -= audio[path.stem].stat().st_size
            audio[path.stem].unlink(missing_ok=True)
        removed.append(path.stem)
    return removed


def recorded_schema(capture: Capture) -> LabelSchema | None:
    """The label schema serve recorded in a capture's hashes ('labels', a resolved labels.json),
    None when it has none; CaptureError when it is not a resolved schema."""
    from svlora.errors import ManifestError
    from svlora.label_schema import SCHEMA_FORMAT

    recorded = (capture.hashes or {}).get("labels")
    if not isinstance(recorded, dict) or recorded.get("format") != SCHEMA_FORMAT:
        return None
    try:
        return LabelSchema.from_dict(recorded, f"capture {capture.id}: hashes.labels")
    except ManifestError as error:
        raise CaptureError(str(error)) from None


def allowed_labels(schema: LabelSchema) -> dict[str, tuple[str, ...]]:
    """{field: the values feedback may give}: the served schema's classes (names without
    <| |>) and extra heads' values; text takes any string."""
    allowed = {kind: tuple(tag[2:-2] for tag in schema.tags(kind)) for kind in KINDS}
    allowed["language"] = schema.languages
    allowed.update({head: tuple(values) for head, values in schema.heads.items()})
    return allowed


def checked_labels(labels: dict, schema: LabelSchema, where: str) -> dict:
    """The labels of a feedback record, each field known and each value in the schema
    (emotion/event/language named as 'HAPPY' or '<|HAPPY|>'); CaptureError naming the field."""
    allowed = allowed_labels(schema)
    if not labels:
        raise CaptureError(f"{where}: no labels given; send at least one of text, "
                           f"{', '.join(allowed)}")
    checked = {}
    for name, value in labels.items():
        if name == "text":
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS:
                raise CaptureError(f"{where}: text must be a non-empty string of at most "
                                   f"{MAX_TEXT_CHARS} characters (leave text out to keep the served one)")
            checked[name] = value
            continue
        if name not in allowed:
            raise CaptureError(f"{where}: unknown field {str(name)[:40]!r}; use text, {', '.join(allowed)}")
        plain = tag_name(value) if isinstance(value, str) else value
        if plain not in allowed[name]:
            raise CaptureError(f"{where}: {name} {str(value)[:40]!r} is not in the served label "
                               f"schema; use one of {', '.join(allowed[name])}")
        checked[name] = plain
    return checked


def append_feedback(folder: Path, feedback: Feedback) -> None:
    """One line appended under an exclusive lock and fsynced: concurrent writers never
    interleave, and nothing earlier is rewritten."""
    line = json.dumps(asdict(feedback), ensure_ascii=False) + "\n"
    with open(folder / FEEDBACK, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            end = handle.seek(0, os.SEEK_END)
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:  # a full disk mid-line: cut the partial line, so a resend is clean
                os.ftruncate(handle.fileno(), end)
                raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_feedback(folder: Path) -> list[Feedback]:
    """Every feedback record in the order written; a torn last line (a crash mid-write) is an
    error naming the line, never skipped."""
    path = folder / FEEDBACK
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(Feedback(**json.loads(line)))
        except (ValueError, TypeError) as error:
            raise CaptureError(f"{path}:{number}: not a feedback record ({error}); fix or delete "
                               "that line") from None
    return records

