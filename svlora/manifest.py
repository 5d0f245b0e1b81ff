"""The manifest row every stage exchanges: FunASR's SenseVoice jsonl schema, validated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from svlora.errors import ManifestError
from svlora.io import write_jsonl_atomic
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema, schema_beside
from svlora.labels import ITN_TAGS

FRAMES_PER_SECOND = 100  # source_len counts 10 ms fbank frames
FIELD_TYPES = {"key": str, "source": str, "source_len": int, "target": str, "target_len": int,
               "text_language": str, "emo_target": (str, type(None)), "event_target": str,
               "with_or_wo_itn": str, "speaker": (str, type(None)), "heads": (dict, type(None)),
               "words": (list, type(None))}
TYPE_NAMES = {str: "a string", int: "an integer", type(None): "null", dict: "an object", list: "a list"}
OPTIONAL_FIELDS = {"speaker", "heads", "words"}


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
    heads: dict[str, str] | None = None  # the schema's extra per-clip labels, e.g. {"role": "nurse"}
    words: list[dict] | None = None  # reference word times [{word, start, end}] (s), for eval

    @property
    def audio_seconds(self) -> float:
        return self.source_len / FRAMES_PER_SECOND

    def to_dict(self) -> dict:
        row = asdict(self)
        for name in OPTIONAL_FIELDS:
            if row[name] is None:
                del row[name]
        return row

    @classmethod
    def from_dict(cls, data: dict, where: str = "<dict>",
                  schema: LabelSchema = DEFAULT_SCHEMA) -> "ManifestRow":
        known = {f.name for f in fields(cls)}
        required = known - OPTIONAL_FIELDS
        missing = sorted(required - data.keys())
        if missing:
            raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
        row = cls(**{k: v for k, v in data.items() if k in known})
        row.validate(where, schema)
        return row

    @property
    def has_emotion(self) -> bool:
        return self.emo_target is not None

    @property
    def itn_query(self) -> str:
        """The decoding query for this row's text normalisation: 'withitn' or 'woitn'."""
        return self.with_or_wo_itn.strip("<|>")

    def head(self, name: str) -> str | None:
        return (self.heads or {}).get(name)

    def validate(self, where: str, schema: LabelSchema = DEFAULT_SCHEMA) -> None:
        """Field types, and every label one of `schema`'s classes."""
        for name, kind in FIELD_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ManifestError(f"{where}: {name}={value!r} should be "
                                    f"{' or '.join(TYPE_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))}")
        owner = "a SenseVoice" if schema.is_default else "a label schema"
        for name, vocabulary in (("text_language", schema.language), ("emo_target", schema.emotion),
                                 ("event_target", schema.event), ("with_or_wo_itn", ITN_TAGS)):
            value = getattr(self, name)
            if name == "emo_target" and value is None:
                continue
            if value not in vocabulary:
                raise ManifestError(f"{where}: {name}={value!r} is not {owner} tag; "
                                    f"expected one of {', '.join(vocabulary)}")
        for head, value in (self.heads or {}).items():
            if head not in schema.heads:
                raise ManifestError(f"{where}: head {head!r} is not in the label schema "
                                    f"(heads: {', '.join(schema.heads) or 'none'}); declare it "
                                    "under heads: in --labels")
            if value is not None and value not in schema.heads[head]:
                raise ManifestError(f"{where}: {head}={value!r}; expected one of "
                                    f"{', '.join(schema.heads[head])}")
        if not isinstance(self.source_len, int) or self.source_len <= 0:
            raise ManifestError(f"{where}: source_len must be a positive integer")
        if not self.target.strip():
            raise ManifestError(f"{where}: target (the transcript) is empty")
        if self.words is not None:
            from svlora.timestamps import checked_word_timings

            try:
                self.words = checked_word_timings(self.words, self.audio_seconds, where)
            except ValueError as error:
                raise ManifestError(str(error)) from None


def read_manifest(path: str | Path, schema: LabelSchema | None = None) -> list[ManifestRow]:
    """Rows of a SenseVoice jsonl manifest, validated against `schema` (default: the one
    `svlora prepare` wrote beside it, else SenseVoice's); a bad line raises ManifestError
    naming file:line."""
    rows = []
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    schema = schema or schema_beside(path)
    for where, data in iter_json_objects(path):
        rows.append(ManifestRow.from_dict(data, where, schema))
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
