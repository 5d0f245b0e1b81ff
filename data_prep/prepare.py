"""`svlora prepare`: read any supported input, validate every row (labels, then audio in
parallel workers), reject bad rows with a reason, drop nothing silently, split without
leakage, write the manifests, prepare_report.json and rejected.csv."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from svlora.data_prep.checks import AudioLimits, ClipReport, FeatureJob, inspect_clips
from svlora.data_prep.formats import FORMATS, SPLIT_KEYS
from svlora.data_prep.hf import HfColumns, read_hf
from svlora.data_prep.presets import PRESETS
from svlora.data_prep.readers import (InputRow, linked_dirs, read_csv, read_folder, read_jsonl,
                                      read_kaldi, read_sensevoice_jsonl)
from svlora.data_prep.rejections import rejected_csv
from svlora.data_prep.splits import SPLITS, fold_rows, split_rows
from svlora.errors import ManifestError, SvloraError
from svlora.io import require_output_dir, write_json_atomic, write_text_atomic
from svlora.label_schema import DEFAULT_SCHEMA, SCHEMA_FILE, LabelSchema, write_schema
from svlora.labels import emotion_tag, strip_rich_tags
from svlora.manifest import FRAMES_PER_SECOND, ManifestRow, write_manifest

MIN_CLASS_CLIPS, MIN_CLASS_SHARE = 20, 0.05
NO_EMOTION = "(none)"  # how text-only rows (--no-emotion) are counted in the report


@dataclass
class PrepareOptions:
    input: str
    out: str
    format: str = "csv"
    split_by: str = "auto"  # auto: speaker+text when every row has one of ≥ 3 speakers, else text
    val: float = 0.1
    test: float = 0.1
    folds: int = 0          # > 1: write fold{k}/train.jsonl and fold{k}/test.jsonl instead
    seed: int = 0
    label_map: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    event: str = "Speech"
    itn: str = "woitn"
    transcripts: str | None = None
    encoding: str = "utf-8"
    limits: AudioLimits = field(default_factory=AudioLimits)
    workers: int = 0        # 0: one process per core
    hf: HfColumns = field(default_factory=HfColumns)  # column names for --format hf
    features_model: str | None = None  # a model dir: also cache its frontend's features
    feature_cache: str | None = None   # default OUT/features
    no_emotion: bool = False  # a text-only corpus: rows without emotion kept (emo_target null)
    labels: LabelSchema = DEFAULT_SCHEMA  # --labels: the classes rows may carry
    word_times: str | None = None  # JSONL of {audio, words}: reference word timings for eval


def load_label_map(path: str | None, labels: LabelSchema = DEFAULT_SCHEMA) -> dict[str, str]:
    """A YAML mapping {domain label: emotion class of `labels`}, e.g. {calm: NEUTRAL}."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise SvloraError(f"--label-map {path}: file not found (a YAML mapping like 'calm: NEUTRAL')")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise SvloraError(f"--label-map {path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SvloraError(f"{path}: --label-map must be a YAML mapping like 'calm: NEUTRAL'")
    return checked_label_map(data, f"--label-map {path}", labels)


def checked_label_map(mapping: dict, source: str, labels: LabelSchema = DEFAULT_SCHEMA) -> dict[str, str]:
    """mapping as {str: str}, every value an emotion class of `labels`; else an error naming
    the key."""
    allowed = ", ".join(tag[2:-2] for tag in labels.emotion)
    owner = "a SenseVoice emotion" if labels.is_default else "an emotion of --labels"
    for key, value in mapping.items():
        if not isinstance(value, str) or labels.tag("emotion", value) is None:
            raise SvloraError(f"{source}: {key}: {value!r} is not {owner}; map each label to one "
                              f"of {allowed}")
    return {str(k): v for k, v in mapping.items()}


def read_rows(options: PrepareOptions) -> tuple[list[InputRow], set[str]]:
    path = Path(options.input)
    if not path.exists():
        raise ManifestError(f"{path}: input not found")
    directory_formats = {"folder", "kaldi", "hf", *PRESETS}
    if (options.format in directory_formats) != path.is_dir():
        kind = "a directory" if options.format in directory_formats else "a file"
        raise ManifestError(f"{path}: --format {options.format} needs {kind}")
    transcripts = Path(options.transcripts) if options.transcripts else None
    if options.format in ("csv", "jsonl"):
        rows, columns = (read_csv if options.format == "csv" else read_jsonl)(path, options.encoding)
        require_columns(path, columns, options)
        return rows, columns
    if options.format == "folder":
        return read_folder(path, transcripts, options.encoding)
    if options.format == "kaldi":
        return read_kaldi(path, options.encoding, needs_emotion=not options.no_emotion)
    if options.format == "sensevoice-jsonl":
        return read_sensevoice_jsonl(path, options.encoding)
    if options.format == "hf":
        return read_hf(path, Path(options.out) / "audio", options.hf)
    if options.format in PRESETS:
        reader = PRESETS[options.format]
        rows = reader(path, options.encoding, transcripts) if options.format == "casia" \
            else reader(path, options.encoding)
        if options.language:  # the flag overrides a preset's documented language
            for row in rows:
                row.language = options.language
        return rows, {"audio", "text", "emotion", "language", "speaker"}
    raise ManifestError(f"unknown --format {options.format!r}; use one of {', '.join(FORMATS)}")


def require_columns(path: Path, columns: set[str], options: PrepareOptions) -> None:
    """A table without a text or emotion column is a header problem: say so once, instead of
    rejecting every row."""
    needed = ["text"] + ([] if options.no_emotion else ["emotion"])
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = " (or pass --no-emotion for a text-only corpus)" if "emotion" in missing else ""
        raise ManifestError(f"{path}:1: no {' or '.join(repr(c) for c in missing)} column "
                            f"(found: {', '.join(sorted(columns)) or 'nothing'}); add it{hint}")


def emotion_counts(rows: list[ManifestRow]) -> dict[str, int]:
    return dict(sorted(Counter(r.emo_target or NO_EMOTION for r in rows).items()))


def label_problem(row: InputRow, options: PrepareOptions) -> tuple[dict | None, str | None]:
    """The row's SenseVoice tags, or why its labels cannot be used."""
    if row.problem:
        return None, row.problem
    if row.emotion is None and not options.no_emotion:
        return None, "missing emotion label (pass --no-emotion for a text-only corpus)"
    schema = options.labels
    emotion = emotion_tag(row.emotion, options.label_map, schema.emotion) \
        if row.emotion is not None else None
    if emotion is None and row.emotion is not None:
        if schema.is_default:
            return None, (f"unknown emotion label {row.emotion!r}: not a SenseVoice emotion; map "
                          "it with --label-map (e.g. 'calm: NEUTRAL') or declare it in --labels")
        return None, (f"unknown emotion label {row.emotion!r}: not declared in --labels "
                      f"({', '.join(t[2:-2] for t in schema.emotion)}); declare it or map it "
                      "with --label-map")
    if row.text is None:
        return None, "missing transcript" + (f" ({row.no_text_reason})" if row.no_text_reason else "")
    if strip_rich_tags(row.text) != row.text:
        return None, ("transcript contains a SenseVoice tag such as <|zh|>: put language, emotion "
                      "and event in their own columns and keep only the words in the text")
    language = (row.language or options.language or "").strip().lower()
    if not language:
        return None, "no language (add a 'language' column or pass --language)"
    known = {name.lower(): name for name in schema.languages}
    if language not in known:
        where = "SenseVoiceSmall knows" if schema.is_default else "--labels declares"
        return None, (f"unknown language {language!r}: {where} {', '.join(schema.languages)} "
                      "(pass --language to override, or declare it in --labels)")
    event = schema.tag("event", row.event or options.event)
    if event is None:
        return None, f"unknown event {row.event!r}; expected one of {', '.join(schema.event)}"
    itn = row.itn or options.itn
    if itn not in ("withitn", "woitn"):
        return None, f"unknown itn {itn!r}; expected withitn or woitn"
    heads, reason = head_labels(row, schema)
    if reason:
        return None, reason
    return {"emotion": emotion, "language": known[language], "event": event, "itn": itn,
            "heads": heads}, None


def head_labels(row: InputRow, schema: LabelSchema) -> tuple[dict | None, str | None]:
    """The row's value for each head of the schema (its column; empty: unlabelled for it)."""
    heads = {}
    for name, allowed in schema.heads.items():
        value = row.extra.get(name)
        if value is None:
            continue
        match = next((label for label in allowed if label.lower() == value.lower()), None)
        if match is None:
            return None, f"unknown {name} {value!r}; --labels declares {', '.join(allowed)}"
        heads[name] = match
    return heads or None, None


def make_keys(inputs: list[InputRow]) -> list[str]:
    """The input's own ids where unique, else clip file stems, else parent_stem; then _N."""
    def candidate(row: InputRow) -> str:
        return row.key or row.audio.stem
    counts = Counter(candidate(r) for r in inputs)
    keys, seen = [], Counter()
    for row in inputs:
        key = candidate(row) if counts[candidate(row)] == 1 else f"{row.audio.parent.name}_{row.audio.stem}"
        seen[key] += 1
        keys.append(key if seen[key] == 1 else f"{key}_{seen[key]}")
    return keys


def normalized_text(row: ManifestRow) -> str:
    return " ".join(row.target.lower().split())


def split_keys(split_by: str, rows: list[ManifestRow]) -> tuple[str, list]:
    """The resolved --split-by and the row keys that must not cross splits."""
    if split_by not in SPLIT_KEYS:
        raise SvloraError(f"--split-by {split_by!r}: use one of {', '.join(SPLIT_KEYS)}")
    if split_by == "auto":  # speakers only help when there are enough to share out
        speakers = {r.speaker for r in rows}
        split_by = "speaker+text" if None not in speakers and len(speakers) >= 3 else "text"
    if "speaker" in split_by and not all(r.speaker for r in rows):
        missing = next(r for r in rows if not r.speaker)
        raise ManifestError(f"{missing.key}: no speaker, but --split-by {split_by} needs one on "
                            "every row; add a 'speaker' column or use --split-by text")
    keys = {"speaker": [lambda r: r.speaker], "text": [normalized_text],
            "speaker+text": [lambda r: r.speaker, normalized_text], "none": []}[split_by]
    return split_by, keys


def leakage(splits: dict[str, list[ManifestRow]], content: dict[str, str]) -> dict:
    """For speaker, transcript and audio hash: values found in more than one split."""
    found = {}
    for name, key in (("speaker", lambda r: r.speaker), ("text", normalized_text),
                      ("audio_sha256", lambda r: content[r.key])):
        where = defaultdict(set)
        for split, rows in splits.items():
            for row in rows:
                if key(row):
                    where[key(row)].add(split)
        found[name] = sorted(value for value, in_splits in where.items() if len(in_splits) > 1)
    return found


def counts(rows: list[ManifestRow]) -> dict:
    return {"clips": len(rows), "audio_seconds": round(sum(r.audio_seconds for r in rows), 2),
            "emotion": emotion_counts(rows),
            "language": dict(sorted(Counter(r.text_language for r in rows).items())),
            "speakers": len({r.speaker for r in rows if r.speaker})}


def imbalance_warnings(rows: list[ManifestRow]) -> list[str]:
    emotions = Counter(r.emo_target for r in rows if r.has_emotion)
    return [f"class {tag} has {n} clips ({100 * n / len(rows):.1f}%): under "
            f"{MIN_CLASS_CLIPS} clips or {100 * MIN_CLASS_SHARE:.0f}% of the data"
            for tag, n in sorted(emotions.items())
            if n < MIN_CLASS_CLIPS or n / len(rows) < MIN_CLASS_SHARE]


def feature_job(options: PrepareOptions) -> FeatureJob | None:
    if not options.features_model:
        return None
    from svlora.frontend import frontend_config
    from svlora.model import resolve_model_dir

    cache = options.feature_cache or str(Path(options.out) / "features")
    return FeatureJob(cache, frontend_config(resolve_model_dir(options.features_model)))


def read_word_times(path: str) -> dict[str, tuple[str, list]]:
    """--word-times: each line {"audio": path (relative to the file's folder), "words":
    [{word, start, end}, ...]} → {resolved audio path: (file:line, words)}; the words are
    checked against the clip's length when the row is accepted."""
    from svlora.manifest import iter_json_objects
    from svlora.timestamps import checked_word_timings

    source = Path(path)
    if not source.is_file():
        raise ManifestError(f"--word-times {path}: not found")
    found: dict[str, tuple[str, list]] = {}
    for where, data in iter_json_objects(source):
        if not isinstance(data.get("audio"), str) or "words" not in data:
            raise ManifestError(f"{where}: expected {{\"audio\": path, \"words\": [...]}}")
        audio = str((source.parent / data["audio"]).resolve())
        if audio in found:
            raise ManifestError(f"{where}: {data['audio']} already has word times ({found[audio][0]})")
        try:
            found[audio] = (where, checked_word_timings(data["words"], None, where))
        except ValueError as error:
            raise ManifestError(str(error)) from None
    return found


def attach_word_times(rows: list[ManifestRow], word_times: dict[str, tuple[str, list]]) -> dict:
    """Each row's reference words (checked against its length); what matched, for the report."""
    from svlora.timestamps import checked_word_timings

    used = set()
    for row in rows:
        if row.source in word_times:
            where, words = word_times[row.source]
            try:
                row.words = checked_word_timings(words, row.audio_seconds, where)
            except ValueError as error:
                raise ManifestError(str(error)) from None
            used.add(row.source)
    return {"rows_with_word_times": len(used), "unmatched_entries": len(word_times) - len(used)}


def validate_options(options: PrepareOptions) -> None:
    if options.itn not in ("withitn", "woitn"):
        raise SvloraError(f"--itn {options.itn!r}: use withitn or woitn")
    languages = options.labels.languages
    if options.language and options.language.lower() not in {n.lower() for n in languages}:
        raise SvloraError(f"--language {options.language!r}: use one of {', '.join(languages)}"
                          + ("" if options.labels.is_default else " (as --labels declares)"))
    checked_label_map(options.label_map, "label_map", options.labels)


def output_files(options: PrepareOptions) -> list[Path]:
    out = Path(options.out)
    names = [f"fold{k}/{split}.jsonl" for k in range(options.folds) for split in ("train", "test")] \
        if options.folds > 1 else [f"{name}.jsonl" for name in SPLITS]
    return [out / name for name in (*names, "prepare_report.json", "rejected.csv", SCHEMA_FILE)]


def refuse_overwriting_input(options: PrepareOptions) -> None:
    """prepare never writes over what it reads (e.g. `--out .` beside train.jsonl)."""
    source = Path(options.input).resolve()
    for path in output_files(options):
        if path.resolve() == source:
            raise SvloraError(f"--out {options.out} would write {path.name} over the input "
                              f"{options.input}; choose another --out")


def prepare_corpus(options: PrepareOptions) -> dict:
    """Write the manifests, prepare_report.json and rejected.csv under options.out."""
    validate_options(options)
    refuse_overwriting_input(options)
    require_output_dir(options.out)
    inputs, columns = read_rows(options)
    word_times = read_word_times(options.word_times) if options.word_times else None
    # folder and presets walk directories; the symlinked ones they skip are named here
    link_warnings = linked_dirs(Path(options.input)) if options.format in ("folder", *PRESETS) else []
    if "language" not in columns and options.language is None:
        raise ManifestError(f"{options.input}: no 'language' column and no --language flag; "
                            "svlora never guesses the language")
    rejected: list[dict] = []

    def reject(row: InputRow, reason: str) -> None:
        rejected.append({"row": row.where, "audio": str(row.audio), "reason": reason,
                         "fields": row.as_fields()})

    labelled = []
    for row in inputs:
        tags, reason = label_problem(row, options)
        if reason:
            reject(row, reason)
        else:
            labelled.append((row, tags))
    reports = inspect_clips([str(row.audio) for row, _ in labelled], options.limits,
                            feature_job(options), options.workers)
    accepted: list[tuple[InputRow, dict, ClipReport]] = []
    first_with_content: dict[str, str] = {}
    for (row, tags), report in zip(labelled, reports):
        if report.reason:
            reject(row, report.reason)
        elif report.content_sha256 in first_with_content:
            reject(row, f"duplicate audio of {first_with_content[report.content_sha256]} "
                        "(kept once)")
        else:
            first_with_content[report.content_sha256] = row.where
            accepted.append((row, tags, report))
    if not accepted:
        first = rejected[0] if rejected else {"reason": "no rows", "row": options.input}
        raise SvloraError(f"every row of {options.input} was rejected; first reason: "
                          f"{first['reason']} ({first['row']})")

    keys = make_keys([row for row, _, _ in accepted])
    rows, content = [], {}
    for key, (row, tags, report) in zip(keys, accepted):
        rows.append(ManifestRow(
            key=key, source=str(row.audio.resolve()),
            source_len=max(1, round(report.seconds * FRAMES_PER_SECOND)), target=row.text,
            target_len=len(row.text), text_language=f"<|{tags['language']}|>",
            emo_target=tags["emotion"], event_target=tags["event"],
            with_or_wo_itn=f"<|{tags['itn']}|>", speaker=row.speaker, heads=tags["heads"]))
        content[key] = report.content_sha256
    timing = attach_word_times(rows, word_times) if word_times is not None else None

    split_by, keys_of = split_keys(options.split_by, rows)
    out = Path(options.out)
    if options.folds > 1:
        parts = fold_rows(rows, keys_of, lambda r: r.emo_target or NO_EMOTION, options.folds, options.seed)
        splits = {}
        for k, part in enumerate(parts):
            train_rows = [r for j, other in enumerate(parts) if j != k for r in other]
            write_manifest(out / f"fold{k}" / "train.jsonl", train_rows)
            write_manifest(out / f"fold{k}" / "test.jsonl", part)
            splits[f"fold{k}"] = part
    else:
        splits = split_rows(rows, keys_of, lambda r: r.emo_target or NO_EMOTION, options.val, options.test,
                            options.seed)
        for name in SPLITS:
            write_manifest(out / f"{name}.jsonl", splits[name])

    reasons = defaultdict(list)
    for item in rejected:
        reasons[item["reason"].split(" (")[0].split(":")[0]].append(item)
    report = {
        "input": str(options.input), "format": options.format, "split_by": split_by,
        "seed": options.seed, "folds": options.folds,
        "options": {**{k: v for k, v in asdict(options).items() if k not in ("input", "out")},
                    "labels": options.labels.to_dict()},
        "rows_read": len(inputs), "rows_accepted": len(rows), "rows_rejected": len(rejected),
        "emotion_counts": emotion_counts(rows),
        "warnings": link_warnings + imbalance_warnings(rows) + (
            [f"--word-times: {timing['unmatched_entries']} entries match no accepted row (a rejected "
             "row's, or audio not in the input)"] if timing and timing["unmatched_entries"] else []),
        "splits": {name: counts(split) for name, split in splits.items()},
        "leakage": leakage(splits, content),
        "rejected_by_reason": {reason: len(items) for reason, items in sorted(reasons.items())},
        **({"word_times": {"file": options.word_times, **timing}} if timing is not None else {}),
        "rejected": [{k: v for k, v in r.items() if k != "fields"} for r in rejected],
    }
    if not options.labels.is_default:  # train, eval, rules and cascades read it from here
        write_schema(out / SCHEMA_FILE, options.labels)
    elif (out / SCHEMA_FILE).exists():  # a stale schema from an earlier run with --labels
        (out / SCHEMA_FILE).unlink()
    write_text_atomic(out / "rejected.csv", rejected_csv(rejected))
    write_json_atomic(out / "prepare_report.json", report)
    return report


def summary(report: dict, examples_per_reason: int = 3) -> str:
    """A short human summary of a prepare report."""
    lines = [f"read {report['rows_read']} rows: {report['rows_accepted']} accepted, "
             f"{report['rows_rejected']} rejected; split by {report['split_by']}"]
    for name, split in report["splits"].items():
        emotions = ", ".join(f"{k.strip('<|>')}={v}" for k, v in split["emotion"].items())
        lines.append(f"  {name:6s} {split['clips']:5d} clips {split['audio_seconds']:8.1f}s "
                     f"{split['speakers']:3d} speakers  {emotions}")
    leaks = {k: len(v) for k, v in report["leakage"].items() if v}
    lines.append("  no speaker, transcript or audio in two splits" if not leaks else
                 "  shared across splits (not a split key): " +
                 ", ".join(f"{n} {k}" for k, n in leaks.items()))
    for warning in report["warnings"]:
        lines.append(f"  warning: {warning}")
    for reason, count in report["rejected_by_reason"].items():
        lines.append(f"  rejected {count} × {reason}")
        shown = [r for r in report["rejected"] if r["reason"].split(" (")[0].split(":")[0] == reason]
        for item in shown[:examples_per_reason]:
            lines.append(f"      {item['row']}: {item['reason']}")
    if report["rows_rejected"]:
        lines.append("  fix the rows in rejected.csv and run prepare on it again (--format csv)")
    return "\n".join(lines)
