"""`svlora prepare`: validate every input row, reject bad ones with a reason, split, write."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from svlora.audio import TARGET_RATE, AudioDecodeError, load_audio
from svlora.data_prep.readers import InputRow, read_input
from svlora.data_prep.splits import SPLITS, split_rows
from svlora.errors import ManifestError, SvloraError
from svlora.io import write_json_atomic
from svlora.labels import EVENT_TAGS, ITN_TAGS, LANGUAGES, emotion_tag, tag_of
from svlora.manifest import FRAMES_PER_SECOND, ManifestRow, write_manifest


@dataclass
class PrepareOptions:
    input: str
    out: str
    format: str = "csv"
    split_by: str = "speaker"  # speaker | text | none
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    label_map: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    event: str = "Speech"
    itn: str = "woitn"
    transcripts: str | None = None
    min_seconds: float = 0.1
    max_seconds: float = 30.0
    silence_rms: float = 1e-4


def load_label_map(path: str | None) -> dict[str, str]:
    """A YAML mapping {domain label: SenseVoice emotion}, e.g. {calm: NEUTRAL}."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise SvloraError(f"{path}: --label-map must be a YAML mapping like 'calm: NEUTRAL'")
    return {str(k): str(v) for k, v in data.items()}


def check_row(row: InputRow, options: PrepareOptions) -> tuple[ManifestRow | None, str | None]:
    """A manifest row, or the reason this input row is rejected."""
    emotion = emotion_tag(row.emotion, options.label_map) if row.emotion else None
    if row.emotion is None:
        return None, "missing emotion label"
    if emotion is None:
        return None, (f"unknown emotion label {row.emotion!r}: not a SenseVoice emotion; map it "
                      "with --label-map")
    if row.text is None:
        return None, "missing transcript"
    language = row.language or options.language
    if language is None:
        return None, "no language (add a 'language' column or pass --language)"
    if language.strip().lower() not in LANGUAGES:
        return None, f"unknown language {language!r}; expected one of {', '.join(LANGUAGES)}"
    event = tag_of(row.event or options.event, EVENT_TAGS)
    if event is None:
        return None, f"unknown event {row.event!r}; expected one of {', '.join(EVENT_TAGS)}"
    if not row.audio.is_file():
        return None, f"audio file not found: {row.audio}"
    try:
        samples = load_audio(row.audio)
    except AudioDecodeError as error:
        return None, f"unreadable audio: {error}"
    seconds = samples.size / TARGET_RATE
    if samples.size == 0:
        return None, "empty audio (zero samples)"
    if float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) < options.silence_rms:
        return None, f"silent audio (RMS below {options.silence_rms})"
    if seconds < options.min_seconds:
        return None, f"too short ({seconds:.2f}s < {options.min_seconds}s)"
    if seconds > options.max_seconds:
        return None, f"too long ({seconds:.1f}s > {options.max_seconds}s)"
    return ManifestRow(
        key="", source=str(row.audio.resolve()), source_len=max(1, int(seconds * FRAMES_PER_SECOND)),
        target=row.text, target_len=len(row.text), text_language=f"<|{language.strip().lower()}|>",
        emo_target=emotion, event_target=event, with_or_wo_itn=f"<|{options.itn}|>",
        speaker=row.speaker), None


def assign_keys(rows: list[ManifestRow], inputs: list[InputRow]) -> None:
    """Clip file stems as keys, or parent_stem where stems repeat."""
    stems = Counter(i.audio.stem for i in inputs)
    seen: Counter = Counter()
    for row, source in zip(rows, inputs):
        key = source.audio.stem if stems[source.audio.stem] == 1 else \
            f"{source.audio.parent.name}_{source.audio.stem}"
        seen[key] += 1
        row.key = key if seen[key] == 1 else f"{key}_{seen[key]}"


def group_function(split_by: str):
    if split_by == "speaker":
        return lambda row: row.speaker
    if split_by == "text":
        return lambda row: " ".join(row.target.lower().split())
    if split_by == "none":
        return lambda row: row.key
    raise SvloraError(f"--split-by {split_by!r}: use speaker, text or none")


def counts(rows: list[ManifestRow]) -> dict:
    return {"clips": len(rows), "audio_seconds": round(sum(r.audio_seconds for r in rows), 2),
            "emotion": dict(sorted(Counter(r.emo_target for r in rows).items())),
            "language": dict(sorted(Counter(r.text_language for r in rows).items())),
            "speakers": len({r.speaker for r in rows if r.speaker})}


def prepare(options: PrepareOptions) -> dict:
    """Write train/val/test jsonl and prepare_report.json under options.out; return the report."""
    if options.itn not in ("withitn", "woitn"):
        raise SvloraError(f"--itn {options.itn!r}: use withitn or woitn")
    if options.language and options.language.lower() not in LANGUAGES:
        raise SvloraError(f"--language {options.language!r}: use one of {', '.join(LANGUAGES)}")
    inputs, columns = read_input(options.input, options.format, options.transcripts)
    if "language" not in columns and options.language is None:
        raise ManifestError(f"{options.input}: no 'language' column and no --language flag; "
                            "svlora never guesses the language")
    if options.split_by == "speaker" and any(row.speaker is None for row in inputs):
        missing = next(row for row in inputs if row.speaker is None)
        raise ManifestError(f"{missing.where}: no speaker, but --split-by speaker needs one on every "
                            "row; add a 'speaker' column or use --split-by text")
    accepted, accepted_inputs, rejected = [], [], []
    for row in tqdm(inputs, desc="checking clips", unit="clip"):
        manifest_row, reason = check_row(row, options)
        if manifest_row is None:
            rejected.append({"row": row.where, "audio": str(row.audio), "reason": reason})
        else:
            accepted.append(manifest_row)
            accepted_inputs.append(row)
    if not accepted:
        raise SvloraError(f"every row of {options.input} was rejected; first reason: "
                          f"{rejected[0]['reason']} ({rejected[0]['row']})")
    assign_keys(accepted, accepted_inputs)
    splits = split_rows(accepted, group_function(options.split_by), options.val, options.test,
                        options.seed)
    out = Path(options.out)
    for name in SPLITS:
        write_manifest(out / f"{name}.jsonl", splits[name])
    report = {
        "input": str(options.input), "format": options.format, "split_by": options.split_by,
        "seed": options.seed, "rows_read": len(inputs), "rows_accepted": len(accepted),
        "rows_rejected": len(rejected),
        "splits": {name: counts(splits[name]) for name in SPLITS},
        "rejected": rejected,
        "rejected_by_reason": dict(Counter(r["reason"].split(":")[0] for r in rejected)),
    }
    write_json_atomic(out / "prepare_report.json", report)
    return report


def summary(report: dict) -> str:
    """A short human summary of a prepare report."""
    lines = [f"read {report['rows_read']} rows: {report['rows_accepted']} accepted, "
             f"{report['rows_rejected']} rejected"]
    for name, split in report["splits"].items():
        emotions = ", ".join(f"{k.strip('<|>')}={v}" for k, v in split["emotion"].items())
        lines.append(f"  {name:5s} {split['clips']:5d} clips {split['audio_seconds']:8.1f}s  {emotions}")
    for rejection in report["rejected"][:10]:
        lines.append(f"  rejected {rejection['row']}: {rejection['reason']}")
    if report["rows_rejected"] > 10:
        lines.append(f"  ... {report['rows_rejected'] - 10} more in prepare_report.json")
    return "\n".join(lines)
