"""Reviewed captures → a CSV that `svlora prepare --format csv` reads: one row per audio,
the reviewers' labels (later feedback winning field by field, over every capture of that
audio), absolute audio paths, and provenance columns prepare carries along unread."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from svlora.captures import (FEEDBACK, Capture, CaptureError, Feedback, checked_labels, is_capture_id,
                             read_captures, read_feedback)
from svlora.io import sha256_file, write_csv_atomic
from svlora.label_schema import KINDS, LabelSchema, write_schema
from svlora.manifest import iter_json_objects
from svlora.review.queue import group_by_audio
from svlora.review.served import prediction_of, served_schema

LABEL_COLUMNS = ("audio", "text", "emotion", "event", "language")
PROVENANCE_COLUMNS = ("capture_id", "model", "reviewer_source", "reviewer")


@dataclass
class ReviewedAudio:
    capture: Capture           # the capture of the latest feedback on this audio
    labels: dict               # every feedback on the audio merged, later records winning
    last: Feedback
    schema: LabelSchema


@dataclass
class ManifestCounts:
    rows: int = 0
    unreviewed: int = 0        # audio without feedback
    no_text: int = 0           # reviewed without text (and no --keep-model-text)
    no_emotion: int = 0        # rows whose emotion cell is empty
    no_language: int = 0       # rows whose language cell is empty (prepare has no default for it)
    evicted: int = 0           # feedback whose capture the size cap removed
    dropped: dict[str, int] = field(default_factory=dict)  # {--exclude manifest: rows dropped}
    unhashed: int = 0          # --exclude rows whose audio could not be read (compared by path only)
    schema_file: Path | None = None  # the rows' own label schema, when not SenseVoice's
    schemas: int = 1           # distinct schemas among the rows

    def lines(self, out: Path) -> list[str]:
        lines = [f"wrote {out}: {self.rows} rows; {self.unreviewed} unreviewed audio left out"]
        lines += [f"{n} dropped: already in {name}" for name, n in self.dropped.items() if n]
        notes = [(self.no_text, "reviewed without text left out (pass --keep-model-text to use the "
                  "served text)"),
                 (self.no_emotion, "rows have no reviewed emotion (empty cell: prepare --no-emotion "
                  "keeps them; --keep-model-tags fills in the prediction)"),
                 (self.no_language, "rows have no reviewed language (empty cell: give prepare "
                  "--language LANG, or --keep-model-tags fills in the prediction)"),
                 (self.evicted, "feedback records name captures no longer in the folder (evicted "
                  "by the size cap)"),
                 (self.unhashed, "--exclude rows have no readable audio: compared by path only")]
        lines += [f"{count} {note}" for count, note in notes if count]
        if self.schema_file:
            lines.append(f"the rows' label schema: {self.schema_file} (svlora prepare {out} --format csv "
                         f"--labels {self.schema_file} ...)")
        if self.schemas > 1:
            lines.append(f"the rows come from models of {self.schemas} label schemas: prepare them "
                         "with --labels of the one you train")
        return lines


def schema_file_of(out: Path) -> Path:
    """reviewed.csv → reviewed.labels.json: the schema prepare --labels takes for it."""
    return out.with_name(f"{out.stem}.labels.json")


def reviewed_by_audio(folder: Path, captures: list[Capture], records: list[Feedback],
                      fallback: LabelSchema) -> tuple[dict[str, ReviewedAudio], int]:
    """{audio sha256: its merged review}, and how many records name a capture not in DIR;
    every record's labels checked against the schema of the capture it names."""
    by_id = {c.id: c for c in captures}
    reviewed: dict[str, ReviewedAudio] = {}
    evicted = 0
    for record in records:
        capture = by_id.get(record.id)
        if capture is None and not is_capture_id(str(record.id)):
            raise CaptureError(f"{folder / FEEDBACK}: {str(record.id)[:40]!r} is not a capture id; fix "
                               "or delete that record")
        if capture is None:  # the size cap removed it; its feedback stays by design
            evicted += 1
            continue
        schema = served_schema(capture, fallback)
        labels = checked_labels(record.labels, schema, f"{folder / FEEDBACK}: feedback on {record.id}")
        entry = reviewed.get(capture.audio_sha256)
        if entry is None:
            reviewed[capture.audio_sha256] = ReviewedAudio(capture, dict(labels), record, schema)
        else:
            entry.labels.update(labels)
            entry.capture, entry.last, entry.schema = capture, record, schema
    return reviewed, evicted


def manifest_fields(folder: Path, review: ReviewedAudio, keep_model_text: bool,
                    keep_model_tags: bool) -> dict | None:
    """The CSV row of one reviewed audio; None when it has no text to train on."""
    prediction = prediction_of(review.capture)
    text = review.labels.get("text")
    if text is None and keep_model_text:
        text = prediction.text
    if not (text or "").strip():
        return None

    def label(name: str, predicted: str | None) -> str:
        value = review.labels.get(name) or (predicted if keep_model_tags else None)
        return "" if value in (None, "nospeech") else value

    row = {"audio": str((folder / review.capture.audio).resolve()), "text": text.strip(),
           **{kind: label(kind, prediction.tags[kind]) for kind in KINDS}}
    row.update({head: label(head, prediction.heads.get(head)) for head in review.schema.heads})
    row.update(capture_id=review.capture.id, model=review.capture.model,
               reviewer_source=review.last.source, reviewer=review.last.reviewer or "")
    return row


@dataclass
class Exclusion:
    name: str                  # as the user gave it: "data/train.jsonl"
    hashes: set[str]
    paths: set[str]


def read_exclusion(path: Path) -> tuple[Exclusion, int]:
    """The audio a manifest already uses (file sha256 and resolved path of each row's
    `source`), and how many of its rows name no readable file."""
    if not path.is_file():
        raise CaptureError(f"--exclude {path}: manifest not found")
    hashes, paths, unreadable = set(), set(), 0
    for where, row in iter_json_objects(path):
        source = row.get("source")
        if not isinstance(source, str) or not source:
            raise CaptureError(f"{where}: no `source` audio path; --exclude takes manifests "
                               "`svlora prepare` wrote (train.jsonl, test.jsonl, ...)")
        audio = Path(source) if Path(source).is_absolute() else path.parent / source
        paths.add(str(audio.resolve()))
        if audio.is_file():
            hashes.add(sha256_file(audio))
        else:
            unreadable += 1
    return Exclusion(str(path), hashes, paths), unreadable


def first_exclusion(row: dict, capture: Capture, exclusions: list[Exclusion]) -> Exclusion | None:
    return next((e for e in exclusions if capture.audio_sha256 in e.hashes or row["audio"] in e.paths),
                None)


def write_review_manifest(folder: Path, out: Path, fallback: LabelSchema, exclude: list[Path] = (),
                          keep_model_text: bool = False, keep_model_tags: bool = False) -> ManifestCounts:
    """Write `out` (atomically) from the reviewed captures of `folder`; the counts of what was
    left out and why."""
    exclusions, unhashed = [], 0
    for path in exclude:  # the user's files first: a wrong path fails before any work
        exclusion, unreadable = read_exclusion(Path(path))
        exclusions.append(exclusion)
        unhashed += unreadable
    captures = read_captures(folder)
    reviewed, evicted = reviewed_by_audio(folder, captures, read_feedback(folder), fallback)
    if not reviewed:
        raise CaptureError(f"{folder}: no reviewed clips yet; review some first (--ui, "
                           "--import-labelstudio, or the server's feedback API)")
    counts = ManifestCounts(evicted=evicted, unhashed=unhashed, dropped={e.name: 0 for e in exclusions},
                            unreviewed=len(set(group_by_audio(captures)) - set(reviewed)))
    heads = list(dict.fromkeys(h for r in reviewed.values() for h in r.schema.heads))
    clash = sorted(set(heads) & {*LABEL_COLUMNS, *PROVENANCE_COLUMNS})
    if clash:
        raise CaptureError(f"head {clash[0]!r} has the name of a manifest column; rename the head")
    rows, schemas = [], []
    for review in sorted(reviewed.values(), key=lambda r: r.capture.id):
        row = manifest_fields(folder, review, keep_model_text, keep_model_tags)
        if row is None:
            counts.no_text += 1
            continue
        exclusion = first_exclusion(row, review.capture, exclusions)
        if exclusion is not None:
            counts.dropped[exclusion.name] += 1
            continue
        counts.no_emotion += not row["emotion"]
        counts.no_language += not row["language"]
        rows.append(row)
        schemas += [review.schema] if review.schema not in schemas else []
    counts.rows, counts.schemas = len(rows), len(schemas)
    write_csv_atomic(out, rows, [*LABEL_COLUMNS, *heads, *PROVENANCE_COLUMNS])
    if len(schemas) == 1 and not schemas[0].is_default:
        counts.schema_file = schema_file_of(out)
        write_schema(counts.schema_file, schemas[0])
    return counts
