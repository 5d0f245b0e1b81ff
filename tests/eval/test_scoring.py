"""Every metric against hand-computed values on small cases."""

import numpy as np
import pytest

from svlora.eval.scoring import (NO_EMOTION, arm_metrics, bootstrap_indices, confusion_matrix,
                                 metric_delta, per_class, score_clip)
from svlora.metrics import edit_counts
from svlora.manifest import ManifestRow


def row(text: str, emotion: str, language: str = "en", event: str = "<|Speech|>") -> ManifestRow:
    return ManifestRow(key=text, source="x.wav", source_len=100, target=text, target_len=len(text),
                       text_language=f"<|{language}|>", emo_target=emotion, event_target=event,
                       with_or_wo_itn="<|woitn|>")


def test_edit_counts_by_hand():
    assert edit_counts("abcd", "abxd", "char") == {"ref": 4, "sub": 1, "del": 0, "ins": 0}
    assert edit_counts("abcd", "abd", "char") == {"ref": 4, "sub": 0, "del": 1, "ins": 0}
    assert edit_counts("the cat sat", "the bat sat down", "word") == {"ref": 3, "sub": 1, "del": 0, "ins": 1}
    assert edit_counts("", "ab", "char") == {"ref": 0, "sub": 0, "del": 0, "ins": 2}
    assert edit_counts("a b", "", "word") == {"ref": 2, "sub": 0, "del": 2, "ins": 0}


def test_language_aware_units():
    english = score_clip(row("The cat sat.", "<|SAD|>"), "<|en|><|SAD|><|Speech|><|woitn|>the bat sat")
    assert english["unit"] == "word" and (english["errors"], english["units"]) == (1, 3)
    assert english["chars"] == {"ref": 9, "sub": 1, "del": 0, "ins": 0}  # spaces not counted
    chinese = score_clip(row("你好，世界", "<|SAD|>", "zh"), "<|zh|><|SAD|><|Speech|><|woitn|>你好世")
    assert chinese["unit"] == "char" and chinese["words"] is None
    assert (chinese["errors"], chinese["units"]) == (1, 4)
    assert chinese["language_correct"] and chinese["event_correct"]


def test_arm_metrics_by_hand():
    rows = [row("abcd", "<|HAPPY|>"), row("ef", "<|SAD|>"), row("gh", "<|SAD|>"),
            row("ij", "<|ANGRY|>", event="<|Laughter|>")]
    outputs = ["<|en|><|HAPPY|><|Speech|><|woitn|>abxd",   # 1 char edit, right
               "<|en|><|HAPPY|><|Speech|><|woitn|>ef",     # wrong emotion
               "gh",                                        # no tags at all
               "<|zh|><|ANGRY|><|Speech|><|woitn|>ij"]     # right, wrong language and event
    clips = [score_clip(r, o) for r, o in zip(rows, outputs)]
    metrics = arm_metrics(rows, clips, bootstrap_indices(4, 200))
    assert metrics["cer"] == 1 / 10 and metrics["wer"] == 1 / 4 and metrics["error_rate"] == 1 / 4
    assert metrics["emotion_accuracy"] == 0.5
    # UA: recall HAPPY 1, SAD 0, ANGRY 1 → 2/3; F1: HAPPY 2·0.5·1/1.5, SAD 0, ANGRY 1
    assert metrics["emotion_ua"] == pytest.approx(2 / 3)
    assert metrics["emotion_macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert metrics["per_class"]["<|HAPPY|>"] == {"n": 1, "precision": 0.5, "recall": 1.0,
                                                 "f1": pytest.approx(2 / 3)}
    assert metrics["language_accuracy"] == 0.5  # clip 3 untagged, clip 4 says zh
    # events: Speech predicted on clips 1, 2, 4 and right on 1, 2 → P 2/3, R 2/3; Laughter F1 0
    assert metrics["event_f1"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert metrics["char_edits"] == {"sub": 1, "del": 0, "ins": 0, "ref": 10}
    assert metrics["confusion"]["counts"] == [[1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]]
    assert metrics["confusion"]["columns"] == ["<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", NO_EMOTION]
    for name in ("cer", "emotion_accuracy", "emotion_ua"):
        low, high = metrics["ci95"][name]
        assert low <= metrics[name] <= high


def test_delta_is_other_minus_base_with_paired_tests():
    rows = [row("ab", "<|SAD|>"), row("cd", "<|HAPPY|>")]
    base = [score_clip(r, o) for r, o in zip(rows, ["<|HAPPY|>xb", "<|HAPPY|>cd"])]
    better = [score_clip(r, o) for r, o in zip(rows, ["<|SAD|>ab", "<|HAPPY|>cd"])]
    delta = metric_delta(rows, base, better, bootstrap_indices(2, 200))
    assert delta["cer"] == -0.25 and delta["emotion_accuracy"] == 0.5
    assert delta["per_emotion_accuracy"] == {"<|HAPPY|>": 0.0, "<|SAD|>": 1.0}
    assert delta["emotion_mcnemar"] == {"only_base_correct": 0, "only_other_correct": 1,
                                        "p_value": 1.0}
    assert delta["ci95"]["cer"][1] <= 0  # never worse on any resample


def test_per_class_and_confusion_order():
    scores = per_class(["<|SAD|>", "<|SAD|>", "<|HAPPY|>"], ["<|SAD|>", "<|HAPPY|>", "<|HAPPY|>"])
    assert scores["<|SAD|>"] == {"n": 2, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
    matrix = confusion_matrix(["<|SAD|>", "<|HAPPY|>"], ["<|ANGRY|>", "<|HAPPY|>"])
    assert matrix["rows"] == ["<|HAPPY|>", "<|SAD|>"]
    assert matrix["columns"] == ["<|HAPPY|>", "<|SAD|>", "<|ANGRY|>"]
