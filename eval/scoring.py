"""Pure scoring of one arm's decoded outputs against a manifest: CER, emotion accuracy,
per-emotion accuracy and the emotion confusion matrix. No I/O, no model."""

from __future__ import annotations

from collections import Counter

from svlora.labels import EMOTION_TAGS, split_output
from svlora.manifest import ManifestRow
from svlora.metrics import character_errors, normalize_text

NO_EMOTION = "(none)"  # column for outputs that carry no emotion tag


def score_clip(row: ManifestRow, raw_output: str) -> dict:
    """One clip's prediction: parsed tags, normalised texts and character edits."""
    parts = split_output(raw_output)
    language = row.text_language.strip("<|>")
    reference = normalize_text(row.target, language)
    hypothesis = normalize_text(parts["text"], language)
    return {"raw": raw_output, "text": parts["text"], "emotion": parts["emotion"] or NO_EMOTION,
            "language": parts["language"], "reference_chars": len(reference),
            "char_errors": character_errors(reference, hypothesis),
            "emotion_correct": parts["emotion"] == row.emo_target}


def emotion_order(labels: list[str]) -> list[str]:
    """Tags in SenseVoice's vocabulary order, then anything else (e.g. NO_EMOTION)."""
    known = [tag for tag in EMOTION_TAGS if tag in labels]
    return known + sorted(set(labels) - set(known))


def confusion_matrix(references: list[str], predictions: list[str]) -> dict:
    """Counts[reference][prediction]; rows are the reference emotions present."""
    rows = emotion_order(sorted(set(references)))
    columns = emotion_order(sorted(set(references) | set(predictions)))
    pairs = Counter(zip(references, predictions))
    return {"rows": rows, "columns": columns,
            "counts": [[pairs[(r, c)] for c in columns] for r in rows]}


def arm_metrics(rows: list[ManifestRow], clips: list[dict]) -> dict:
    """Headline metrics of one arm over all clips."""
    references = [row.emo_target for row in rows]
    predictions = [clip["emotion"] for clip in clips]
    total_chars = sum(clip["reference_chars"] for clip in clips)
    per_emotion = {}
    for tag in emotion_order(sorted(set(references))):
        outcomes = [clip["emotion_correct"] for row, clip in zip(rows, clips) if row.emo_target == tag]
        per_emotion[tag] = {"n": len(outcomes), "accuracy": sum(outcomes) / len(outcomes)}
    return {
        "n": len(clips),
        "cer": sum(clip["char_errors"] for clip in clips) / total_chars if total_chars else 0.0,
        "emotion_accuracy": sum(clip["emotion_correct"] for clip in clips) / len(clips),
        "per_emotion_accuracy": per_emotion,
        "confusion": confusion_matrix(references, predictions),
    }


def metric_delta(base: dict, other: dict) -> dict:
    """other minus base for every scalar metric (negative CER delta = fewer errors)."""
    return {
        "n": other["n"],
        "cer": other["cer"] - base["cer"],
        "emotion_accuracy": other["emotion_accuracy"] - base["emotion_accuracy"],
        "per_emotion_accuracy": {
            tag: other["per_emotion_accuracy"][tag]["accuracy"] - stats["accuracy"]
            for tag, stats in base["per_emotion_accuracy"].items()},
    }
