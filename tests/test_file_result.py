"""A long file's tags are the argmax of its own duration-weighted distributions."""

from svlora.label_schema import DEFAULT_SCHEMA
from svlora.decoding import Decoded, file_result
from svlora.segments import Segment


def decoded(emotion: str, probs: dict[str, float]) -> Decoded:
    return Decoded(f"<|en|><|{emotion}|><|Speech|><|woitn|>word", {"<|en|>": 1.0, "<|zh|>": 0.0},
                   probs, {"<|Speech|>": 0.9, "<|Laughter|>": 0.1})


def test_file_tags_are_the_argmax_of_the_weighted_distribution():
    # 10 s of a hesitant HAPPY (0.4) against 5 s of a confident SAD (0.95): HAPPY covers more
    # seconds, but the weighted distribution says SAD (0.55 vs 0.28); the file must say SAD.
    outputs = [decoded("HAPPY", {"<|HAPPY|>": 0.4, "<|SAD|>": 0.35, "<|NEUTRAL|>": 0.25}),
               decoded("SAD", {"<|HAPPY|>": 0.05, "<|SAD|>": 0.95, "<|NEUTRAL|>": 0.0})]
    result = file_result("f.wav", [Segment(0.0, 10.0), Segment(10.0, 15.0)], "vad", outputs,
                         DEFAULT_SCHEMA)
    assert result["emotion_probs"]["<|SAD|>"] > result["emotion_probs"]["<|HAPPY|>"]
    assert result["emotion"] == "<|SAD|>"
    assert result["schema_version"] == 1
    for kind in ("emotion", "event", "language"):
        probs = result[f"{kind}_probs"]
        assert result[kind] == max(probs, key=probs.get)
