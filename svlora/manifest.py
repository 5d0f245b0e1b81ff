"""The manifest row every stage exchanges: FunASR's SenseVoice jsonl schema, validated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from svlora.errors import ManifestError
from svlora.io import write_jsonl_atomic
from svlora.labels import EMOTION_TAGS, EVENT_TAGS, ITN_TAGS, LANGUAGE_TAGS

FRAMES_PER_SECOND = 100  # source_len counts 10 ms fbank frames
FIELD_TYPES = {"key": str, "source": str, "source_len": int, "target": str, "target_len": int,
               "text_language": str, "emo_target": (str, type(None)), "event_target": str,
               "with_or_wo_itn": str, "speaker": (str, type(None))}
TYPE_NAMES = {str: "a string", int: "an integer", type(None): "null"}


@dataclass
class ManifestRow:
    """One clip: FunASR SenseVoice jsonl fields plus the speaker (for leakage checks)."""

    key: str
    source: str
    source_len: int
    target: str
    target_len: int
    text_language: str
    emo_target: str | None  # None (null in the jsonl): a text-only row, no emotion label
    event_target: str
    with_or_wo_itn: str
    speaker: str | None = None

    @property
    def audio_seconds(self) -> float:
        return self.source_len / FRAMES_PER_SECOND

    def to_dict(self) -> dict:
        row = asdict(self)
        if row["speaker"] is None:
            del row["speaker"]
        return row

    @classmethod
    def from_dict(cls, data: dict, where: str = "<dict>") -> "ManifestRow":
        known = {f.name for f in fields(cls)}
        required = known - {"speaker"}
        missing = sorted(required - data.keys())
        if missing:
            raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
        row = cls(**{k: v for k, v in data.items() if k in known})
        row.validate(where)
        return row

    @property
    def has_emotion(self) -> bool:
        return self.emo_target is not None

    @property
    def itn_query(self) -> str:
        """The decoding query for this row's text normalisation: 'withitn' or 'woitn'."""
        return self.with_or_wo_itn.strip("<|>")

    def validate(self, where: str) -> None:
        for name, kind in FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ManifestError(f"{where}: {name}={value!r} should be "
                                    f"{' or '.join(TYPE_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))}")
        for name, vocabulary in (("text_language", LANGUAGE_TAGS), ("emo_target", EMOTION_TAGS),
                                 ("event_target", EVENT_TAGS), ("with_or_wo_itn", ITN_TAGS)):
            value = getattr(self, name)
            if name == "emo_target" and value is None:
                continue
            if value not in vocabulary:
                raise ManifestError(f"{where}: {name}={value!r} is not a SenseVoice tag; "
                                    f"expected one of {', '.join(vocabulary)}")
        if not isinstance(self.source_len, int) or self.source_len <= 0:
            raise ManifestError(f"{where}: source_len must be a positive integer")
        if not self.target.strip():
            raise ManifestError(f"{where}: target (the transcript) is empty")


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Rows of a SenseVoice jsonl manifest; a bad line raises ManifestError naming file:line."""
    rows = []
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    for where, data in iter_json_objects(path):
        rows.append(ManifestRow.from_dict(data, where))
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")
    return rows


def iter_json_objects(path: Path, text: str | None = None) -> Iterator[tuple[str, dict]]:
    """('file:line', object) for each non-blank line of a JSON-lines file (BOM tolerated);
    `text` is the file's already-decoded contents, if the caller has them."""
    if text is None:
        text = Path(path).read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{where}: not valid JSON ({error.msg})") from error
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        yield where, data


def write_manifest(path: str | Path, rows: list[ManifestRow]) -> None:
    write_jsonl_atomic(path, (row.to_dict() for row in rows))
