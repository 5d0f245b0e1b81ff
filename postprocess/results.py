"""Post-processing applied to transcription results (a file's dict as `transcribe` returns it,
per segment for long files): what the Python runtime and the server share."""

from __future__ import annotations

from svlora.labels import split_output
from svlora.segments import Segment, weighted_tag

from svlora.postprocess.cascade import Cascade
from svlora.postprocess.rules import RuleSet, apply_rules


def spans_of(segments: list[dict]) -> list[Segment]:
    return [Segment(s["start"], s["end"]) for s in segments]


def result_with_cascade(cascade: Cascade, result: dict) -> dict:
    """The emotion (and event) re-decided by the cascade from stage 1's pooled encoder output,
    emotion distribution and transcript; `stage1_emotion`/`stage1_event` keep stage 1's."""
    def relabel(items: list[dict]) -> list[dict]:
        decided = cascade.redecide(items)
        out = []
        for item, change in zip(items, decided):
            kept = {"stage1_emotion": item.get("emotion")}
            if "event" in change:
                kept["stage1_event"] = item.get("event")
            out.append({**{k: v for k, v in item.items() if k != "pooled"}, **change, **kept})
        return out

    if "segments" not in result:
        return relabel([result])[0]
    segments = relabel(result["segments"])
    rest = {k: v for k, v in result.items() if k != "pooled"}
    return {**rest, "segments": segments,
            "emotion": weighted_tag([s["emotion"] for s in segments], spans_of(segments))}


def result_with_rules(rules: RuleSet, result: dict) -> dict:
    """The result with the rules applied (per segment for long files); `rules_fired` names the
    rules that changed something."""
    def one(item: dict, seconds: float | None) -> dict:
        applied = apply_rules(rules, item["raw"], item.get("emotion_probs"), seconds)
        return {**item, **split_output(applied["raw"]), "raw": applied["raw"],
                "emotion_probs": applied["emotion_probs"], "rules_fired": applied["fired"]}

    if "segments" not in result:
        return one(result, None)
    segments = [one(s, s["end"] - s["start"]) for s in result["segments"]]
    spans = spans_of(segments)
    return {**result, "segments": segments,
            "emotion": weighted_tag([s["emotion"] for s in segments], spans),
            "event": weighted_tag([s["event"] for s in segments], spans)}
