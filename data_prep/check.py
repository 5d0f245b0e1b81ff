"""`svlora check`: lint SenseVoice jsonl manifests, ours or hand-made. Errors: bad rows, tags
outside the vocabulary, missing/unreadable audio, source_len that disagrees with the audio,
duplicate keys, the same audio in two manifests. Warnings: a constant emotion column,
non-16 kHz or silent audio, target_len off, duplicate audio within a manifest, a speaker or
transcript shared by two manifests (leakage a single-speaker corpus cannot avoid)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from svlora.data_prep.checks import AudioLimits, inspect_clips
from svlora.errors import ManifestError
from svlora.label_schema import LabelSchema, schema_beside
from svlora.manifest import ManifestRow, iter_json_objects

CONSTANT_COLUMN_MIN_ROWS = 10
SOURCE_LEN_TOLERANCE = 0.05  # relative; FunASR batches by source_len


def read_rows(path: Path, errors: list, labels: LabelSchema | None = None) -> list[tuple[str, ManifestRow]]:
    """Valid rows (against `labels`, default the schema beside the manifest); an error each
    for the others."""
    rows = []
    try:
        schema = labels or schema_beside(path)
        for where, data in iter_json_objects(path):
            try:
                rows.append((where, ManifestRow.from_dict(data, where, schema)))
            except (ManifestError, TypeError) as error:
                errors.append({"where": where, "message": str(error).removeprefix(f"{where}: ")})
    except (ManifestError, OSError, UnicodeDecodeError) as error:
        errors.append({"where": str(path), "message": str(error)})
        return rows
    if not rows and not any(e["where"].startswith(f"{path}:") for e in errors):
        errors.append({"where": str(path), "message": "the manifest has no rows"})
    return rows


def require_manifest_files(paths: list[str]) -> None:
    """A path that is no file is a mistyped argument, not a finding: one line, before any work."""
    for path in map(Path, paths):
        if path.is_dir():
            raise ManifestError(f"{path} is a directory; pass its manifests, e.g. {path / '*.jsonl'}")
        if not path.is_file():
            raise ManifestError(f"{path}: manifest not found; check the path (prepare writes "
                                "train.jsonl, val.jsonl and test.jsonl into its --out folder)")


def check_manifests(paths: list[str], decode_audio: bool = True, workers: int = 0,
                    labels: LabelSchema | None = None) -> dict:
    require_manifest_files(paths)
    errors: list[dict] = []
    warnings: list[dict] = []
    per_manifest = {p: read_rows(Path(p), errors, labels) for p in paths}
    everything = [(p, where, row) for p, rows in per_manifest.items() for where, row in rows]

    for path, rows in per_manifest.items():
        emotions = {row.emo_target for _, row in rows if row.has_emotion}
        if len(rows) >= CONSTANT_COLUMN_MIN_ROWS and len(emotions) == 1:
            warnings.append({"where": path, "message": f"emo_target is {emotions.pop()} on all "
                             f"{len(rows)} rows: was a default filled in?"})
        keys = defaultdict(list)
        for where, row in rows:
            keys[row.key].append(where)
            if row.target_len != len(row.target):
                warnings.append({"where": where, "message": f"target_len {row.target_len} but the "
                                 f"transcript has {len(row.target)} characters"})
        for key, places in keys.items():
            if len(places) > 1:
                errors.append({"where": places[1], "message": f"duplicate key {key!r} (first at "
                               f"{places[0]})"})

    content_of: dict[tuple[str, str], str] = {}
    if decode_audio and everything:
        limits = AudioLimits(min_seconds=0.0, max_seconds=float("inf"), max_clipped_fraction=1.0)
        reports = inspect_clips([row.source for _, _, row in everything], limits, workers=workers)
        for (path, where, row), report in zip(everything, reports):
            if report.reason and not report.reason.startswith("silent"):
                errors.append({"where": where, "message": f"{row.source}: {report.reason}"})
                continue
            if report.reason:
                warnings.append({"where": where, "message": f"{row.source}: {report.reason}"})
            content_of[(path, where)] = report.content_sha256
            if report.source_rate != 16000:
                warnings.append({"where": where, "message": f"audio is {report.source_rate} Hz "
                                 "(resampled to 16 kHz when read)"})
            frames = report.seconds * 100
            if abs(row.source_len - frames) > max(2, SOURCE_LEN_TOLERANCE * frames):
                errors.append({"where": where, "message": f"source_len {row.source_len} but the "
                               f"audio has {frames:.0f} 10-ms frames ({report.seconds:.2f}s)"})
    errors += cross_manifest_findings(everything, content_of, warnings)
    return {"manifests": paths, "rows": len(everything), "errors": errors, "warnings": warnings}


def cross_manifest_findings(everything: list, content_of: dict, warnings: list) -> list[dict]:
    """Duplicates within a manifest (warning) and leakage between manifests (error/warning)."""
    errors = []
    for name, value_of, leak_is_error in (
            ("audio", lambda p, w, r: content_of.get((p, w)), True),
            ("speaker", lambda p, w, r: r.speaker, False),
            ("transcript", lambda p, w, r: " ".join(r.target.lower().split()), False)):
        seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for path, where, row in everything:
            value = value_of(path, where, row)
            if value:
                seen[value].append((path, where))
        for value, places in seen.items():
            manifests = sorted({p for p, _ in places})
            if len(manifests) > 1:
                finding = {"where": places[0][1], "message": f"{name} appears in "
                           f"{len(manifests)} manifests ({', '.join(manifests)}): leakage"}
                (errors if leak_is_error else warnings).append(finding)
            elif name == "audio" and len(places) > 1:
                warnings.append({"where": places[1][1], "message": f"same audio as {places[0][1]}"})
    return errors


def render_findings(findings: dict) -> str:
    lines = [f"{item['where']}: error: {item['message']}" for item in findings["errors"]]
    lines += [f"{item['where']}: warning: {item['message']}" for item in findings["warnings"]]
    lines.append(f"{findings['rows']} rows in {len(findings['manifests'])} manifest(s): "
                 f"{len(findings['errors'])} error(s), {len(findings['warnings'])} warning(s)")
    return "\n".join(lines)
