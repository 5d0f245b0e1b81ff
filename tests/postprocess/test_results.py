"""Post-processing on a long file's result: the file-level emotion, its probabilities, raw,
text and event follow the re-decided segments, and every emotion is the argmax of its own
probabilities (a rule that sets the emotion excepted). Hand-built results, no model."""

import math

import pytest

from svlora.postprocess import load_rules, result_with_cascade, result_with_rules

HAPPY, SAD, NEUTRAL = "<|HAPPY|>", "<|SAD|>", "<|NEUTRAL|>"
# SAD's probability after an offset of -2 (p·e⁻², renormalised) in the two segments below
SAD_OFFSET = [p * math.exp(-2) / (p * math.exp(-2) + (1 - p)) for p in (0.8, 0.7)]


def segment(start, end, emotion, probs, text, event="<|Speech|>"):
    return {"start": start, "end": end, "raw": f"<|en|>{emotion}{event}<|woitn|>{text}",
            "text": text, "language": "<|en|>", "emotion": emotion, "event": event,
            "itn": "<|woitn|>", "emotion_probs": probs,
            "event_probs": {"<|Speech|>": 0.9, "<|Laughter|>": 0.1}, "pooled": [0.0]}


def long_result():
    """Stage 1 says SAD throughout (6 s + 4 s), as decoding's file-level fields do."""
    segments = [segment(0.0, 6.0, SAD, {HAPPY: 0.2, SAD: 0.8}, "first part"),
                segment(6.0, 10.0, SAD, {HAPPY: 0.3, SAD: 0.7}, "second part")]
    return {"path": "long.wav", "raw": "".join(s["raw"] for s in segments),
            "text": "first part second part", "language": "<|en|>", "emotion": SAD,
            "event": "<|Speech|>", "itn": "<|woitn|>", "emotion_probs": {HAPPY: 0.24, SAD: 0.76},
            "event_probs": {"<|Speech|>": 0.9, "<|Laughter|>": 0.1}, "segmentation": "vad",
            "segments": segments, "pooled": [0.0]}


class FakeCascade:
    """Re-decides the long first segment as narrowly HAPPY and the short second as clearly SAD
    (so the most-seconds tag, HAPPY, is not the argmax of the weighted distribution, SAD), and
    with an event head calls the first segment Laughter."""

    def __init__(self, events: bool):
        self.events = events
        self.config = type("Config", (), {"heads": {}})()  # no extra heads

    def redecide(self, stage1):
        decided = [{HAPPY: 0.51, SAD: 0.49}, {HAPPY: 0.1, SAD: 0.9}]
        out = []
        for item, probs in zip(stage1, decided):
            emotion = max(probs, key=probs.get)
            change = {"emotion": emotion, "emotion_probs": probs,
                      "raw": item["raw"].replace(item["emotion"], emotion)}
            if self.events:
                event = "<|Laughter|>" if probs[HAPPY] > 0.5 else "<|Speech|>"
                events = {"<|Laughter|>": 0.8, "<|Speech|>": 0.2} if event == "<|Laughter|>" \
                    else {"<|Laughter|>": 0.3, "<|Speech|>": 0.7}
                change.update(event=event, event_probs=events,
                              raw=change["raw"].replace(item["event"], event))
            out.append(change)
        return out


def argmax(probs):
    return max(probs, key=probs.get)


@pytest.mark.parametrize("events", [False, True])
def test_a_cascade_recomputes_the_file_level_fields_from_its_segments(events):
    out = result_with_cascade(FakeCascade(events), long_result())
    # duration-weighted: HAPPY (6·0.51 + 4·0.1)/10, SAD (6·0.49 + 4·0.9)/10
    assert out["emotion_probs"] == pytest.approx({HAPPY: 0.346, SAD: 0.654})
    for item in (out, *out["segments"]):
        assert item["emotion"] == argmax(item["emotion_probs"])
    assert [s["emotion"] for s in out["segments"]] == [HAPPY, SAD]
    assert out["raw"] == ("<|en|><|HAPPY|>" + ("<|Laughter|>" if events else "<|Speech|>")
                          + "<|woitn|>first part<|en|><|SAD|><|Speech|><|woitn|>second part")
    assert out["stage1_emotion"] == SAD and "pooled" not in out
    if events:
        # Laughter (6·0.8 + 4·0.3)/10 = 0.6: the file's event is the argmax of its own
        assert out["event_probs"] == pytest.approx({"<|Laughter|>": 0.6, "<|Speech|>": 0.4})
        assert out["event"] == "<|Laughter|>" and out["stage1_event"] == "<|Speech|>"
    else:
        assert out["event"] == "<|Speech|>" and "stage1_event" not in out


def write_rules(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path)


def test_rules_offsets_recompute_the_file_level_emotion_and_text(tmp_path):
    rules = write_rules(tmp_path, "emotion_offsets: {SAD: -2.0}\nrules:\n  - name: jargon\n"
                                  "    when: {}\n    then: {replace: {part: piece}}\n")
    out = result_with_rules(rules, long_result())
    assert [s["emotion_probs"][SAD] for s in out["segments"]] == pytest.approx(SAD_OFFSET)
    assert out["emotion_probs"][SAD] == pytest.approx((6 * SAD_OFFSET[0] + 4 * SAD_OFFSET[1]) / 10, abs=1e-6)
    for item in (out, *out["segments"]):
        assert item["emotion"] == argmax(item["emotion_probs"]) == HAPPY
    assert out["text"] == "first piece second piece"
    assert out["raw"] == "".join(s["raw"] for s in out["segments"]) and "piece" in out["raw"]
    assert out["rules_fired"] == ["jargon"]


def test_a_rule_that_sets_the_emotion_decides_the_file_by_seconds(tmp_path):
    rules = write_rules(tmp_path, "emotion_offsets: {SAD: -2.0}\nrules:\n  - name: calm first\n"
                                  "    when: {contains_any: [first]}\n    then: {emotion: NEUTRAL}\n")
    out = result_with_rules(rules, long_result())
    assert [s["emotion"] for s in out["segments"]] == [NEUTRAL, HAPPY]
    assert out["emotion"] == NEUTRAL  # the rule's 6 s outweigh the offsets' 4 s
    assert out["emotion_probs"][SAD] == pytest.approx((6 * SAD_OFFSET[0] + 4 * SAD_OFFSET[1]) / 10, abs=1e-6)


def test_rules_without_offsets_keep_the_incoming_file_decision(tmp_path):
    """After a cascade, a rules file that changes no emotion keeps the cascade's argmax."""
    rules = write_rules(tmp_path, "rules:\n  - name: jargon\n    when: {}\n"
                                  "    then: {replace: {part: piece}}\n")
    cascaded = result_with_cascade(FakeCascade(False), long_result())
    out = result_with_rules(rules, cascaded)
    assert out["emotion"] == cascaded["emotion"] == SAD == argmax(out["emotion_probs"])
