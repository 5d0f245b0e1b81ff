"""Slices of the test set (speaker, emotion, duration, language) scored for every arm."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from svlora.eval.records import ScoredClip
from svlora.eval.scoring import ArmArrays
from svlora.manifest import ManifestRow

DURATION_BUCKETS = ((0, 2, "<2s"), (2, 5, "2-5s"), (5, 10, "5-10s"), (10, float("inf"), "≥10s"))


def duration_bucket(seconds: float) -> str:
    return next(name for low, high, name in DURATION_BUCKETS if low <= seconds < high)


SLICE_KEYS = {
    "speaker": lambda row: row.speaker,
    "emotion": lambda row: row.emo_target,  # None (text-only rows): not an emotion slice
    "duration": lambda row: duration_bucket(row.audio_seconds),
    "language": lambda row: row.text_language,
}


def slice_table(rows: list[ManifestRow], clips_by_arm: dict[str, list[ScoredClip]]) -> dict:
    """{slice kind: {value: {n, arm: {error_rate, emotion_accuracy}}}} (speaker only if known)."""
    tables = {}
    for kind, key in SLICE_KEYS.items():
        groups: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            value = key(row)
            if value is not None:
                groups[value].append(index)
        if not groups or (kind == "speaker" and len(groups) < 2):
            continue
        table = {}
        for value, members in sorted(groups.items()):
            picked_rows = [rows[i] for i in members]
            entry = {"n": len(members)}
            for arm, clips in clips_by_arm.items():
                arrays = ArmArrays(picked_rows, [clips[i] for i in members])
                entry[arm] = {"error_rate": arrays.value("error_rate"),
                              "emotion_accuracy": arrays.value("emotion_accuracy")}
            table[value] = entry
        tables[kind] = table
    return tables


def changed_clips(rows: list[ManifestRow], base: list[ScoredClip], other: list[ScoredClip],
                  count: int = 10) -> dict:
    """The clips the other arm improved and regressed most (emotion flips first, then edits)."""
    def gain(i: int) -> float:
        emotion = int(bool(other[i].emotion_correct)) - int(bool(base[i].emotion_correct))
        edits = (base[i].errors - other[i].errors) / max(1, base[i].units)
        return emotion + edits

    def describe(i: int) -> dict:
        return {"key": rows[i].key, "audio": rows[i].source, "reference": rows[i].target,
                "reference_emotion": rows[i].emo_target,
                "base": {"text": base[i].text, "emotion": base[i].emotion},
                "other": {"text": other[i].text, "emotion": other[i].emotion},
                "gain": round(gain(i), 4)}

    order = sorted(range(len(rows)), key=gain)
    improved = [describe(i) for i in reversed(order) if gain(i) > 0][:count]
    regressed = [describe(i) for i in order if gain(i) < 0][:count]
    return {"improved": improved, "regressed": regressed,
            "unchanged": int(np.sum([gain(i) == 0 for i in range(len(rows))]))}
