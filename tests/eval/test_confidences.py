"""Tag distributions from the decoder's first frames, <|EMO_UNKNOWN|> banning, and the
report's emotion calibration (ECE and the reliability diagram)."""

import json

import pytest

from svlora.adapters import load_model
from svlora.cli import main
from svlora.eval.scoring import calibration
from svlora.manifest import read_manifest


def test_distributions_sum_to_one_and_agree_with_the_decoded_tags(trained_dir):
    rows = read_manifest(trained_dir / "clinic/test.jsonl")[:12]
    runtime = load_model(str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter"))
    results = runtime.transcribe([r.source for r in rows])
    for result in results:
        for kind in ("language", "emotion", "event"):
            probabilities = result[f"{kind}_probs"]
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            if result[kind] is not None:  # the greedy tag is the most probable of its set
                assert max(probabilities, key=probabilities.get) == result[kind]
    banned = runtime.transcribe([r.source for r in rows], ban_emo_unknown=True)
    assert all("<|EMO_UNKNOWN|>" not in r["emotion_probs"] and r["emotion"] != "<|EMO_UNKNOWN|>"
               for r in banned)


def clip(confidence, correct):
    from dataclasses import replace

    from svlora.eval.scoring import score_clip
    from svlora.manifest import ManifestRow

    row = ManifestRow(key="k", source="x.wav", source_len=100, target="ab", target_len=2,
                      text_language="<|en|>", emo_target="<|SAD|>", event_target="<|Speech|>",
                      with_or_wo_itn="<|woitn|>")
    return replace(score_clip(row, "<|en|><|SAD|><|Speech|><|woitn|>ab"),
                   emotion_confidence=confidence, emotion_correct=correct)


def test_expected_calibration_error_by_hand():
    # bin 0.9-1.0: confidences 0.95, 0.95, right once → |0.95 - 0.5| = 0.45 weighted 2/4;
    # bin 0.5-0.6: 0.55, 0.55, both right → |0.55 - 1| = 0.45 weighted 2/4 → ECE 0.45
    result = calibration([clip(0.95, True), clip(0.95, False), clip(0.55, True), clip(0.55, True),
                          clip(None, True), clip(0.7, None)])
    assert result["n"] == 4 and result["ece"] == pytest.approx(0.45)
    assert [(b["low"], b["n"]) for b in result["bins"]] == [(pytest.approx(0.5), 2), (pytest.approx(0.9), 2)]
    assert calibration([clip(None, True)]) is None


def test_the_report_carries_calibration_and_probabilities(trained_dir, tmp_path):
    assert main(["eval", "--model", str(trained_dir / "tiny-base"), "--data",
                 str(trained_dir / "clinic/test.jsonl"), "--adapter",
                 str(trained_dir / "clinic-run/adapter"), "--out", str(tmp_path),
                 "--resamples", "100", "--ban-emo-unknown"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert 0 <= report["arms"]["adapter"]["calibration"]["ece"] <= 1
    assert (tmp_path / "reliability.png").stat().st_size > 1000
    assert "expected calibration error" in (tmp_path / "report.md").read_text()
    first = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])
    assert "<|EMO_UNKNOWN|>" not in first["adapter"]["emotion_probs"]
