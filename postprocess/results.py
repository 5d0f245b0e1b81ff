"""Post-processing applied to transcription results (a file's dict as `transcribe` returns it,
per segment for long files): what the Python runtime and the server share. A long file's
file-level fields are recomputed from its re-decided segments, so they never go stale."""

from __future__ import annotations

from svlora.decoding import joined_output, weighted_decision
from svlora.segments import Segment, weighted_tag

from svlora.postprocess.cascade import Cascade
from svlora.postprocess.rules import RuleSet, apply_rules


def spans_of(segments: list[dict]) -> list[Segment]:
    return [Segment(s["start"], s["end"]) for s in segments]


def file_decision(segments: list[dict], kind: str) -> dict:
    """A long file's `{kind}_probs` (segment distributions weighted by duration) and `kind`,
    their argmax: a file's tag is the argmax of its own probabilities, as each segment's is."""
    probabilities, tag = weighted_decision([s[f"{kind}_probs"] for s in segments],
                                           [span.seconds for span in spans_of(segments)])
    return {f"{kind}_probs": probabilities, kind: tag}


def result_with_cascade(cascade: Cascade, result: dict) -> dict:
    """The emotion (and event) re-decided by the cascade from stage 1's pooled encoder output,
    emotion distribution and transcript; `stage1_emotion`/`stage1_event` keep stage 1's. A long
    file's emotion, emotion_probs, raw (and event, event_probs) follow its segments'."""
    return results_with_cascade(cascade, [result])[0]


def results_with_cascade(cascade: Cascade, results: list[dict]) -> list[dict]:
    """result_with_cascade for several results (the server's batch) in one forward pass of the
    cascade over every clip and segment."""
    items = [item for result in results for item in result.get("segments", [result])]
    decided = iter(cascade.redecide(items))
    relabelled = iter([relabel(item, next(decided)) for item in items])
    out = []
    for result in results:
        if "segments" not in result:
            out.append(next(relabelled))
        else:
            out.append(file_after_cascade(result, [next(relabelled) for _ in result["segments"]],
                                          list(cascade.config.heads)))
    return out


def relabel(item: dict, change: dict) -> dict:
    kept = {"stage1_emotion": item.get("emotion")}
    if "event" in change:
        kept["stage1_event"] = item.get("event")
    return {**{k: v for k, v in item.items() if k != "pooled"}, **change, **kept}


def file_after_cascade(result: dict, segments: list[dict], heads: list[str]) -> dict:
    rest = {k: v for k, v in result.items() if k != "pooled"}
    out = {**rest, "segments": segments, "raw": joined_output(segments)["raw"],
           "stage1_emotion": result.get("emotion"), **file_decision(segments, "emotion")}
    if "stage1_event" in segments[0]:  # the cascade has an event head
        out.update(stage1_event=result.get("event"), **file_decision(segments, "event"))
    for head in heads:  # e.g. role: the duration-weighted decision of its segments'
        out.update(file_decision(segments, head))
    return out


def result_with_rules(rules: RuleSet, result: dict) -> dict:
    """The result with the rules applied (per segment for long files); `rules_fired` names the
    rules that changed something. With emotion offsets the emotion is the argmax of the offset
    probabilities; a rule that sets the emotion overrides them (rules_fired says which). A long
    file's raw, text, emotion_probs, emotion and event follow its segments'."""
    def one(item: dict, seconds: float | None) -> dict:
        applied = apply_rules(rules, item["raw"], item.get("emotion_probs"), seconds)
        return {**item, **rules.labels.split(applied["raw"]), "raw": applied["raw"],
                "emotion_probs": applied["emotion_probs"], "rules_fired": applied["fired"]}

    if "segments" not in result:
        return one(result, None)
    segments = [one(s, s["end"] - s["start"]) for s in result["segments"]]
    out = {**result, **joined_output(segments), "segments": segments,
           "rules_fired": list(dict.fromkeys(name for s in segments for name in s["rules_fired"]))}
    if rules.emotion_offsets and all(s.get("emotion_probs") for s in segments):
        out.update(file_decision(segments, "emotion"))
    for kind in ("emotion", "event"):  # a rule's decision overrides the probabilities
        setting = {rule.name for rule in rules.rules if getattr(rule.then, kind) is not None}
        if any(setting.intersection(s["rules_fired"]) for s in segments):
            out[kind] = weighted_tag([s[kind] for s in segments], spans_of(segments))
    return out
