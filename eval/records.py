"""The eval stage's records: a scored clip (one arm's output on one clip, a predictions.jsonl
cell) and the A/B report (report.json), each with a schema version and to_dict/from_dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from svlora.errors import SvloraError

REPORT_SCHEMA = "svlora-eval-report"
# 3: schema_version; the `adapter`/`delta` aliases name only an adapter arm (never rules or
# cascade); predictions.jsonl rows carry schema_version too
REPORT_VERSION = 3
READABLE_VERSIONS = (2, 3)


@dataclass(frozen=True)
class ScoredClip:
    """One arm's output on one clip, scored against the manifest row."""

    raw: str
    text: str
    emotion: str                   # the decoded tag, or NO_EMOTION
    language: str | None
    event: str | None
    chars: dict                    # {ref, sub, del, ins} in characters (spaces not counted)
    words: dict | None             # the same in words (en clips only)
    empty: bool                    # no text although the reference has some
    errors: int                    # headline edits: words for en clips, else characters
    units: int                     # headline reference length
    unit: str                      # "word" or "char"
    emotion_correct: bool | None   # None: a text-only clip, in no emotion metric
    emotion_probs: dict | None
    emotion_confidence: float | None  # the decoder's probability of its decoded emotion
    language_correct: bool
    event_correct: bool
    heads: dict | None = None         # a cascade's extra heads: {head: predicted label}
    terms: dict | None = None         # with --terms: svlora.eval.terms.score_terms' record
    timing: dict | None = None        # reference word times: svlora.timestamps.timing_errors' record

    def to_dict(self) -> dict:
        data = asdict(self)
        for optional in ("heads", "terms", "timing"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "<clip>") -> "ScoredClip":
        return cls(**_known_fields(cls, data, where, frozenset({"heads", "terms", "timing"})))


def _known_fields(cls, data: dict, where: str, optional: frozenset = frozenset()) -> dict:
    names = {f.name for f in fields(cls)}
    missing = sorted(names - data.keys() - optional)
    if missing:
        raise SvloraError(f"{where}: missing field(s) {', '.join(missing)}; it was not written "
                          "by svlora eval (or by an older version: re-run the eval)")
    return {k: v for k, v in data.items() if k in names}


@dataclass
class EvalReport(Mapping):
    """The A/B report. Also a read-only mapping over report.json's keys (report["arms"],
    report["decision"], ...), including the derived aliases of the first report format:
    `base` (the base arm's metrics), `adapter_path`, `adapter` and `delta` (the first adapter
    arm's metrics and change; absent without an adapter arm, never a rules or cascade arm)."""

    model: str
    base_sha256: str
    data: str
    data_sha256: str
    n: int
    bootstrap: dict
    arm_names: list[str]
    adapters: dict[str, str]          # adapter arm name -> adapter dir
    cascade_arms: dict[str, dict]     # name -> {stage1, cascade}
    rules_arms: dict[str, dict]       # name -> {stage1, rules}
    arms: dict[str, dict]             # name -> metrics
    deltas: dict[str, dict]           # name -> change against base
    best_arm: str
    deltas_vs_best: dict[str, dict]
    decision: list[dict] = field(default_factory=list)
    slices: dict = field(default_factory=dict)
    changed_clips: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    gates_passed: bool = True
    retention: dict | None = None     # {data, n, arms, delta} with --general
    labels: dict = field(default_factory=dict)  # the label schema scored (LabelSchema.to_dict)
    hotword_arms: dict[str, dict] = field(default_factory=dict)  # name -> {stage1, hotwords, ...}
    terms: dict | None = None         # with --terms: {file, sha256, n_terms, per_term}
    timing: dict | None = None        # references with word times: {arm: timing_summary}

    @property
    def adapter_arm(self) -> str | None:
        """The first adapter arm: what the aliases `adapter` and `delta` show."""
        return next((arm for arm in self.arm_names if arm in self.adapters), None)

    def aliases(self) -> dict:
        derived = {"base": self.arms["base"],
                   "adapter_path": self.adapters[self.adapter_arm] if self.adapter_arm else None}
        if self.adapter_arm:
            derived.update(adapter=self.arms[self.adapter_arm], delta=self.deltas[self.adapter_arm])
        return derived

    def to_dict(self) -> dict:
        data = {"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION,
                "version": REPORT_VERSION,  # the first format's name for schema_version
                **{f.name: getattr(self, f.name) for f in fields(self)}, **self.aliases()}
        for optional in ("retention", "terms", "timing"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "report.json") -> "EvalReport":
        if data.get("schema") != REPORT_SCHEMA:
            raise SvloraError(f"{where}: not an svlora eval report (schema {data.get('schema')!r})")
        version = data.get("schema_version", data.get("version"))
        if version not in READABLE_VERSIONS:
            raise SvloraError(f"{where}: report schema version {version!r} is not one this svlora "
                              f"reads ({', '.join(map(str, READABLE_VERSIONS))}); re-run svlora eval")
        optional = frozenset(f.name for f in fields(cls)
                             if f.default is not MISSING or f.default_factory is not MISSING)
        return cls(**_known_fields(cls, data, where, optional))

    # the mapping view: report.json's keys
    def __getitem__(self, key: str):
        if key in {f.name for f in fields(self)}:
            if key in ("retention", "terms", "timing") and getattr(self, key) is None:
                raise KeyError(key)
            return getattr(self, key)
        if key in ("schema", "schema_version", "version"):
            return REPORT_SCHEMA if key == "schema" else REPORT_VERSION
        return self.aliases()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def read_report(path: str | Path) -> EvalReport:
    """An EvalReport from report.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SvloraError(f"{path}: cannot read the report ({error}); re-run svlora eval") from None
    return EvalReport.from_dict(data, str(path))
