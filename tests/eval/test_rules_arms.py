"""Rules arms in the A/B harness: stage-1 models are decoded once each, rules reuse them."""

import importlib
import json

from svlora.cli import main


def test_rules_arms_reuse_each_models_decoding(quickstart_dir, tmp_path, monkeypatch):
    evaluate_module = importlib.import_module("svlora.eval.evaluate")
    calls = []
    real = evaluate_module.decode_features

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(evaluate_module, "decode_features", counted)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: unsure is neutral\n    when: {emotion_prob_below: 0.99}\n"
                     "    then: {emotion: NEUTRAL}\n")
    assert main(["eval", "--model", str(quickstart_dir / "tiny-base"), "--data",
                 str(quickstart_dir / "clinic/test.jsonl"), "--out", str(tmp_path / "r"),
                 "--adapter", f"lora={quickstart_dir / 'clinic-run/adapter'}",
                 "--rules-arm", f"base+rules=base:{rules}", "--rules-arm", f"lora+rules=lora:{rules}",
                 "--rules-arm", "lora+unsure=lora:unsure_emotion", "--resamples", "100",
                 "--gate", "emotion_accuracy>=-1"]) == 0
    assert len(calls) == 2  # base and lora, once each
    report = json.loads((tmp_path / "r/report.json").read_text())
    assert report["arm_names"] == ["base", "lora", "base+rules", "lora+rules", "lora+unsure"]
    assert set(report["deltas"]) == {"lora", "base+rules", "lora+rules", "lora+unsure"}
    assert report["rules_arms"]["lora+rules"]["stage1"] == "lora"
    assert set(report["gates"]) == set(report["deltas"])
    predictions = [json.loads(line) for line in (tmp_path / "r/predictions.jsonl").read_text().splitlines()]
    changed = [p for p in predictions if p["base"]["emotion"] != p["base+rules"]["emotion"]]
    assert all(p["base+rules"]["emotion"] == "<|NEUTRAL|>" for p in changed)
    assert all(p["base"]["text"] == p["base+rules"]["text"] for p in predictions)
