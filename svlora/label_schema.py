"""The user's label set: emotion, event and language classes, each with its token id, plus
extra per-clip heads. SenseVoice's own sets are the default schema; a name SenseVoice lacks
gets one of the tokenizer's reserved <|SPECIAL_TOKEN_n|> tokens (and, for a language, an
unused row of the query embedding). Declared in YAML, resolved once by `svlora prepare` into
labels.json beside the manifests, recorded in every adapter, cascade and export."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from svlora.errors import ManifestError
from svlora.labels import (EMOTION_TAGS, EVENT_TAGS, FIRST_SPECIAL_ID, ITN_TAGS, LANGUAGE_TAGS,
                           SPECIAL_TOKENS_FROM_24884, split_output, tag_of)

SCHEMA_FILE = "labels.json"
SCHEMA_FORMAT, SCHEMA_VERSION = "svlora-labels", 1
KINDS = ("emotion", "event", "language")
SENSEVOICE_TAGS = {"emotion": EMOTION_TAGS, "event": EVENT_TAGS, "language": LANGUAGE_TAGS}

# SenseVoice's maintainers reserve <|SPECIAL_TOKEN_15|> and up for extensions: some earlier
# ones were used and dropped (QwenAudio/SenseVoice#86).
FIRST_SPARE_TOKEN = 15
SPARE_TOKENS: dict[str, int] = {
    token: FIRST_SPECIAL_ID + index for index, token in enumerate(SPECIAL_TOKENS_FROM_24884)
    if token.startswith("<|SPECIAL_TOKEN_") and int(token[16:-2]) >= FIRST_SPARE_TOKEN}
# Rows of FunASR's 16-row query embedding that no SenseVoice query uses (lid_dict holds
# auto 0, zh 3, en 4, yue 7, ja 11, ko 12, nospeech 13; 1-2 are the event/emotion queries and
# 14-15 the text-norm queries): a new language's query.
SENSEVOICE_QUERY_ROWS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
SPARE_QUERY_ROWS = (5, 6, 8, 9, 10)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
RESERVED_HEADS = {"emotion", "event", "language", "itn", "text", "raw", "path", "segments"}


@dataclass(frozen=True)
class LabelSchema:
    """Each kind's classes as {'<|NAME|>': token id}, in the user's order; query_rows gives
    each language its query-embedding row; heads are extra per-clip labels (no token: the
    cascade learns them). Frozen: what is derived from it is computed once (cached_property),
    as decoding asks for it per clip and manifests per row."""

    emotion: dict[str, int] = field(default_factory=lambda: dict(EMOTION_TAGS))
    event: dict[str, int] = field(default_factory=lambda: dict(EVENT_TAGS))
    language: dict[str, int] = field(default_factory=lambda: dict(LANGUAGE_TAGS))
    query_rows: dict[str, int] = field(default_factory=lambda: dict(SENSEVOICE_QUERY_ROWS))
    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @cached_property
    def is_default(self) -> bool:
        return self == DEFAULT_SCHEMA

    def tags(self, kind: str) -> dict[str, int]:
        return {"emotion": self.emotion, "event": self.event, "language": self.language,
                "itn": ITN_TAGS}[kind]

    @property
    def tag_sets(self) -> dict[str, dict[str, int]]:
        """{kind: tags} for split_output, with the ITN tags."""
        return {kind: self.tags(kind) for kind in (*KINDS, "itn")}

    def new_tags(self) -> dict[str, int]:
        """The classes SenseVoice lacks (on spare tokens), every kind together."""
        return {tag: token for kind in KINDS for tag, token in self.tags(kind).items()
                if tag not in SENSEVOICE_TAGS[kind]}

    def new_languages(self) -> list[str]:
        return [tag[2:-2] for tag in self.language if tag not in LANGUAGE_TAGS]

    @property
    def languages(self) -> tuple[str, ...]:
        """The language names a manifest row may carry (nospeech is the decoder's, not a row's)."""
        return tuple(tag[2:-2] for tag in self.language if tag != "<|nospeech|>")

    @property
    def decode_languages(self) -> tuple[str, ...]:
        """The language queries a request may ask for."""
        return ("auto", *self.languages)

    def banned_ids(self) -> list[int]:
        """SenseVoice's emotion, event and language tokens this schema leaves out, and (for any
        schema but SenseVoice's own) the spare tokens it does not use: decoding never emits them
        (as FunASR's ban_emo_unk bans <|EMO_UNKNOWN|>)."""
        left_out = [token for kind in KINDS for tag, token in SENSEVOICE_TAGS[kind].items()
                    if tag not in self.tags(kind)]
        if self.is_default:
            return left_out
        used = set(self.new_tags().values())
        return left_out + [token for token in SPARE_TOKENS.values() if token not in used]

    @cached_property
    def token_names(self) -> dict[str, str]:
        """{'<|SPECIAL_TOKEN_n|>': '<|NAME|>'} for every new class: the tokenizer's spelling
        of a spare token and the user's name for it."""
        spelling = {token_id: token for token, token_id in SPARE_TOKENS.items()}
        return {spelling[token]: tag for tag, token in self.new_tags().items()}

    def rename(self, raw: str) -> str:
        """A decoded output with spare tokens spelt as the user's names."""
        for token, tag in self.token_names.items():
            raw = raw.replace(token, tag)
        return raw

    def split(self, raw: str) -> dict[str, str | None]:
        """split_output over this schema's classes."""
        return split_output(raw, self.tag_sets)

    def tag(self, kind: str, value: str) -> str | None:
        """The class of `kind` that `value` names ('X' or '<|X|>', any case), or None."""
        return tag_of(value, self.tags(kind))

    def to_dict(self) -> dict:
        return {"format": SCHEMA_FORMAT, "version": SCHEMA_VERSION, "emotion": self.emotion,
                "event": self.event, "language": self.language, "query_rows": self.query_rows,
                "heads": {name: list(values) for name, values in self.heads.items()}}

    @classmethod
    def from_dict(cls, data: dict, where: str = "labels") -> "LabelSchema":
        """A resolved schema (labels.json, an adapter's svlora.json 'labels'), checked. The
        'labels' of adapters written before schemas existed (SenseVoice's vocabulary, with
        'itn') read as the default schema."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: a label schema must be a mapping")
        try:
            schema = cls(emotion=dict(data["emotion"]), event=dict(data["event"]),
                         language=dict(data["language"]),
                         query_rows=dict(data.get("query_rows", SENSEVOICE_QUERY_ROWS)),
                         heads={k: tuple(v) for k, v in data.get("heads", {}).items()})
        except (KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"{where}: not a resolved label schema ({error}); write it with "
                                "`svlora prepare --labels LABELS.yaml`") from None
        check_resolved(schema, where)
        return schema


DEFAULT_SCHEMA = LabelSchema()


def check_resolved(schema: LabelSchema, where: str) -> None:
    """Every token is SenseVoice's for that class or a spare one, used once; every language
    has a query row, used once."""
    seen: dict[int, str] = {}
    for kind in KINDS:
        for tag, token in schema.tags(kind).items():
            if not (isinstance(token, int) and RICH_TAG.fullmatch(tag)):
                raise ManifestError(f"{where}: {kind} {tag!r}: {token!r} is not a token id")
            own = SENSEVOICE_TAGS[kind].get(tag)
            if token != own and token not in SPARE_TOKENS.values():
                raise ManifestError(f"{where}: {kind} {tag} has token {token}, which is neither "
                                    f"SenseVoice's {tag} nor a spare <|SPECIAL_TOKEN_n|> "
                                    f"(n ≥ {FIRST_SPARE_TOKEN})")
            if token in seen:
                raise ManifestError(f"{where}: {tag} and {seen[token]} share token {token}")
            seen[token] = tag
    rows = {name: schema.query_rows.get(name) for name in ("auto", *schema.languages, "nospeech")}
    missing = [name for name, row in rows.items() if row is None]
    if missing or len(set(rows.values())) != len(rows):
        raise ManifestError(f"{where}: query_rows must give auto, nospeech and each language its "
                            f"own row (missing: {', '.join(missing) or 'none'})")


RICH_TAG = re.compile(r"<\|[A-Za-z][A-Za-z0-9_]*\|>")


def resolve_schema(declared: dict, where: str, pinned: LabelSchema | None = None) -> LabelSchema:
    """The schema a labels YAML declares: SenseVoice names keep their tokens (any case), new
    names take the lowest free spare token in declaration order (emotion, event, language),
    kinds left out keep SenseVoice's classes. `pinned` (an earlier labels.json) keeps the
    token and query row of every name it already has, so ids stay stable as classes are
    added."""
    if not isinstance(declared, dict):
        raise ManifestError(f"{where}: expected a mapping with emotion, event, language and/or "
                            "heads lists")
    unknown = sorted(set(declared) - {*KINDS, "heads"})
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r}; use emotion, event, language "
                            "and heads")
    pinned_tokens = pinned.new_tags() if pinned else {}
    free_tokens = [t for t in SPARE_TOKENS.values() if t not in pinned_tokens.values()]
    pinned_rows = {n: r for n, r in (pinned.query_rows if pinned else {}).items()
                   if n not in SENSEVOICE_QUERY_ROWS}
    free_rows = [r for r in SPARE_QUERY_ROWS if r not in pinned_rows.values()]
    kinds: dict[str, dict[str, int]] = {}
    names_seen: dict[str, str] = {}
    for kind in KINDS:
        if kind not in declared:
            kinds[kind] = dict(SENSEVOICE_TAGS[kind])
            continue
        kinds[kind] = {}
        for name in checked_names(declared[kind], f"{where}: {kind}"):
            tag = tag_of(name, SENSEVOICE_TAGS[kind]) or f"<|{name}|>"
            if names_seen.get(tag.lower()) == kind:
                raise ManifestError(f"{where}: {kind}: {name!r} is listed twice (names are "
                                    "case-insensitive)")
            if tag.lower() in names_seen:
                raise ManifestError(f"{where}: {name!r} is declared twice (as {names_seen[tag.lower()]} "
                                    f"and {kind}); every class needs its own name")
            names_seen[tag.lower()] = kind
            if tag in SENSEVOICE_TAGS[kind]:
                kinds[kind][tag] = SENSEVOICE_TAGS[kind][tag]
            elif tag in pinned_tokens:
                kinds[kind][tag] = pinned_tokens[tag]
            elif not free_tokens:
                raise ManifestError(f"{where}: {name}: all {len(SPARE_TOKENS)} spare tokens "
                                    f"(<|SPECIAL_TOKEN_{FIRST_SPARE_TOKEN}|> up) are taken")
            else:
                kinds[kind][tag] = free_tokens.pop(0)
    kinds["language"].setdefault("<|nospeech|>", LANGUAGE_TAGS["<|nospeech|>"])
    query_rows = {n: r for n, r in SENSEVOICE_QUERY_ROWS.items()
                  if n in ("auto", "nospeech") or f"<|{n}|>" in kinds["language"]}
    for tag in kinds["language"]:
        name = tag[2:-2]
        if name in query_rows:
            continue
        if name in pinned_rows:
            query_rows[name] = pinned_rows[name]
        elif not free_rows:
            raise ManifestError(f"{where}: language {name}: SenseVoice's query embedding has only "
                                f"{len(SPARE_QUERY_ROWS)} unused rows for new languages")
        else:
            query_rows[name] = free_rows.pop(0)
    return LabelSchema(kinds["emotion"], kinds["event"], kinds["language"], query_rows,
                       checked_heads(declared.get("heads", {}), where))


def checked_names(values, where: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise ManifestError(f"{where}: expected a non-empty list of names, e.g. [NEUTRAL, STRESSED]")
    for value in values:
        if not isinstance(value, str) or not NAME.fullmatch(value.strip().strip("<|>")):
            raise ManifestError(f"{where}: {value!r} is not a class name (a letter, then letters, "
                                "digits or _; at most 32)")
    names = [value.strip().strip("<|>") for value in values]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"{where}: {repeated[0]!r} is listed twice")
    return names


def checked_heads(heads, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(heads, dict):
        raise ManifestError(f"{where}: heads: expected a mapping like {{role: [teacher, student]}}")
    checked = {}
    for name, values in heads.items():
        if not isinstance(name, str) or not NAME.fullmatch(name) or name.lower() in RESERVED_HEADS:
            raise ManifestError(f"{where}: heads: {name!r} cannot name a head (a letter, then "
                                f"letters, digits or _, not one of {', '.join(sorted(RESERVED_HEADS))})")
        labels = checked_names(values, f"{where}: heads: {name}")
        if len(labels) < 2:
            raise ManifestError(f"{where}: heads: {name} needs at least two labels")
        checked[name] = tuple(labels)
    return checked


def read_yaml_or_json(path: Path, flag: str) -> dict:
    if not path.is_file():
        raise ManifestError(f"{flag} {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ManifestError(f"{flag} {path}: invalid YAML ({str(error).splitlines()[0]})") from None
    return data


def load_schema(path: str | Path, pinned: LabelSchema | None = None) -> LabelSchema:
    """A labels YAML (declared names) or a resolved labels.json (token ids) as a schema."""
    path = Path(path)
    data = read_yaml_or_json(path, "--labels")
    if isinstance(data, dict) and data.get("format") == SCHEMA_FORMAT:
        return LabelSchema.from_dict(data, str(path))
    return resolve_schema(data, str(path), pinned)


def write_schema(path: str | Path, schema: LabelSchema) -> None:
    from svlora.io import write_json_atomic

    write_json_atomic(path, schema.to_dict())


def schema_beside(manifest: str | Path) -> LabelSchema:
    """The schema `svlora prepare` wrote beside a manifest (its folder, or the folder above for
    fold{k}/ manifests); SenseVoice's own when there is none."""
    folder = Path(manifest).resolve().parent
    candidates = [folder / SCHEMA_FILE]
    if re.fullmatch(r"fold\d+", folder.name):
        candidates.append(folder.parent / SCHEMA_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return read_schema_file(candidate)
    return DEFAULT_SCHEMA


def read_schema_file(path: Path) -> LabelSchema:
    """A resolved labels.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: invalid JSON ({error})") from None
    return LabelSchema.from_dict(data, str(path))


def schema_of_meta(meta: dict, where: str) -> LabelSchema:
    """The schema an adapter's or cascade's metadata records (the default when absent)."""
    return LabelSchema.from_dict(meta["labels"], where) if meta.get("labels") else DEFAULT_SCHEMA
