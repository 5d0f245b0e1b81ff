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
    assert english.unit == "word" and (english.errors, english.units) == (1, 3)
    assert english.chars == {"ref": 9, "sub": 1, "del": 0, "ins": 0}  # spaces not counted
    chinese = score_clip(row("你好，世界", "<|SAD|>", "zh"), "<|zh|><|SAD|><|Speech|><|woitn|>你好世")
    assert chinese.unit == "char" and chinese.words is None
    assert (chinese.errors, chinese.units) == (1, 4)
    assert chinese.language_correct and chinese.event_correct


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


def synthetic_report(delta: dict) -> dict:
    metrics = ("error_rate", "cer", "wer", "empty_rate", "emotion_accuracy", "emotion_ua")
    return {"n": 100, "bootstrap": {"resamples": 1000}, "base": {},
            "deltas": {"adapter": {**delta, "ci95": {m: [-1, 1] for m in metrics if m in delta},
                                   "p_value": {m: p for m, (_, p) in delta.items()}}}}


def flatten(delta: dict) -> dict:
    return {m: v for m, (v, _) in delta.items()}


def test_verdict_never_calls_text_better_while_cer_is_significantly_worse():
    from svlora.eval.report import verdict

    delta = {"error_rate": (-0.05, 0.01), "cer": (0.135, 0.0005), "wer": (-0.05, 0.01),
             "empty_rate": (0.30, 0.001), "emotion_accuracy": (0.02, 0.4)}
    report = synthetic_report(delta)
    report["deltas"]["adapter"].update(flatten(delta))
    text = verdict(report)
    assert "text WORSE" in text and "DISAGREE" in text
    assert "text better" not in text and "CER Δ +0.135" in text and "empty outputs" in text


def test_an_error_rate_gate_also_holds_cer_and_wer():
    from svlora.eval.gates import check_gates, parse_gates

    deltas = {"adapter": {"error_rate": -0.05, "cer": 0.135, "wer": -0.05, "empty_rate": 0.3}}
    [check] = check_gates(parse_gates("error_rate<=+0.005"), deltas, None)["adapter"]
    assert not check["passed"] and check["metric"] == "cer" and check["value"] == 0.135
    [empty] = check_gates(parse_gates("empty_rate<=0.01"), deltas, None)["adapter"]
    assert not empty["passed"]
    fine = {"adapter": {"error_rate": -0.05, "cer": -0.01, "wer": -0.05}}
    assert check_gates(parse_gates("error_rate<=0"), fine, None)["adapter"][0]["passed"]


def test_duration_slice_labels_survive_rendering():
    from svlora.eval.report import slice_rows

    report = {"arm_names": ["base"]}
    table = {"<2s": {"n": 1, "base": {"error_rate": 0.1, "emotion_accuracy": 1.0}},
             "<|HAPPY|>": {"n": 1, "base": {"error_rate": 0.1, "emotion_accuracy": 1.0}}}
    assert [r[0] for r in slice_rows(report, table)] == ["<2s", "HAPPY"]


def test_prediction_cache_key_covers_everything_that_changes_outputs(tmp_path):
    from svlora.eval.ab import PredictionCache

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_config.json").write_text('{"lora_alpha": 16}')
    settings = {"device": "cpu", "precision": "fp32", "max_seconds_per_batch": 240.0}
    clips = [("sha-a", "woitn"), ("sha-b", "withitn")]

    def key(settings=settings, clips=clips):
        return PredictionCache.key(PredictionCache.arm_identity("sha", str(adapter), settings), clips)
    first = key()
    assert key(dict(settings), list(clips)) == first
    assert key({**settings, "device": "cuda"}) != first
    assert key({**settings, "precision": "bf16"}) != first
    assert key({**settings, "max_seconds_per_batch": 60.0}) != first
    assert key(clips=[("sha-a", "woitn"), ("sha-c", "withitn")]) != first  # a clip's audio
    assert key(clips=[("sha-a", "woitn"), ("sha-b", "woitn")]) != first    # a clip's ITN query
    assert key(clips=clips[::-1]) != first                                 # batch order
    (adapter / "adapter_config.json").write_text('{"lora_alpha": 32}')  # same weights, new scale
    assert key() != first


def test_the_verdict_is_one_line_per_arm():
    from svlora.eval.report import verdict

    delta = {"error_rate": (-0.05, 0.01), "cer": (-0.04, 0.01), "emotion_accuracy": (0.02, 0.4)}
    report = synthetic_report(delta)
    report["deltas"]["adapter"].update(flatten(delta))
    report["deltas"]["other"] = {**report["deltas"]["adapter"], "cer": 0.2}
    report.update(gates={"adapter": []}, gates_passed=True)
    lines = verdict(report).splitlines()
    assert lines[0] == "Each arm vs base on the same 100 clips (paired; 95% CI):"
    assert lines[1].startswith("adapter: text better (error rate Δ -0.050 [-1.000, 1.000] p=0.01")
    assert lines[2].startswith("other: text ") and lines[3] == "Gates: all passed."
    assert len(lines) == 4
