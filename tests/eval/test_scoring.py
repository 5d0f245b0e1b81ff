from svlora.eval.scoring import NO_EMOTION, arm_metrics, confusion_matrix, metric_delta, score_clip
from svlora.manifest import ManifestRow


def row(text: str, emotion: str) -> ManifestRow:
    return ManifestRow(key=text, source="x.wav", source_len=100, target=text, target_len=len(text),
                       text_language="<|en|>", emo_target=emotion, event_target="<|Speech|>",
                       with_or_wo_itn="<|woitn|>")


def test_arm_metrics_by_hand():
    rows = [row("abcd", "<|HAPPY|>"), row("ef", "<|SAD|>"), row("gh", "<|SAD|>")]
    outputs = ["<|en|><|HAPPY|><|Speech|><|woitn|>abxd",   # 1 edit, emotion right
               "<|en|><|HAPPY|><|Speech|><|woitn|>ef",     # 0 edits, emotion wrong
               "gh!"]                                       # no tags at all
    clips = [score_clip(r, o) for r, o in zip(rows, outputs)]
    assert [c["char_errors"] for c in clips] == [1, 0, 0]
    assert clips[2]["emotion"] == NO_EMOTION
    metrics = arm_metrics(rows, clips)
    assert metrics["n"] == 3
    assert metrics["cer"] == 1 / 8
    assert metrics["emotion_accuracy"] == 1 / 3
    assert metrics["per_emotion_accuracy"] == {"<|HAPPY|>": {"n": 1, "accuracy": 1.0},
                                               "<|SAD|>": {"n": 2, "accuracy": 0.0}}
    assert metrics["confusion"] == {"rows": ["<|HAPPY|>", "<|SAD|>"],
                                    "columns": ["<|HAPPY|>", "<|SAD|>", NO_EMOTION],
                                    "counts": [[1, 0, 0], [1, 0, 1]]}


def test_delta_is_other_minus_base():
    rows = [row("ab", "<|SAD|>"), row("cd", "<|HAPPY|>")]
    base = arm_metrics(rows, [score_clip(r, o) for r, o in zip(rows, ["<|HAPPY|>xb", "<|HAPPY|>cd"])])
    better = arm_metrics(rows, [score_clip(r, o) for r, o in zip(rows, ["<|SAD|>ab", "<|HAPPY|>cd"])])
    delta = metric_delta(base, better)
    assert delta["cer"] == -0.25 and delta["emotion_accuracy"] == 0.5
    assert delta["per_emotion_accuracy"] == {"<|HAPPY|>": 0.0, "<|SAD|>": 1.0}


def test_confusion_rows_follow_sensevoice_order():
    matrix = confusion_matrix(["<|SAD|>", "<|HAPPY|>"], ["<|ANGRY|>", "<|HAPPY|>"])
    assert matrix["rows"] == ["<|HAPPY|>", "<|SAD|>"]
    assert matrix["columns"] == ["<|HAPPY|>", "<|SAD|>", "<|ANGRY|>"]
