"""Rules and cascade arms in the A/B harness: stage-1 models are decoded once each, the
lighter paths reuse their outputs; the decision table prices every arm."""

import importlib
import json

from svlora.cli import main
from svlora.manifest import read_manifest


def test_six_arms_decode_each_stage1_model_once(quickstart_dir, tmp_path, monkeypatch):
    evaluate_module = importlib.import_module("svlora.eval.ab")
    calls = []
    real = evaluate_module.decode_features

    def counted(base, features, *args, **kwargs):
        calls.append(len(features))
        return real(base, features, *args, **kwargs)
    monkeypatch.setattr(evaluate_module, "decode_features", counted)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: unsure is neutral\n    when: {emotion_prob_below: 0.99}\n"
                     "    then: {emotion: NEUTRAL}\n")
    assert main(["eval", "--model", str(quickstart_dir / "tiny-base"), "--data",
                 str(quickstart_dir / "clinic/test.jsonl"), "--out", str(tmp_path / "r"),
                 "--adapter", f"lora={quickstart_dir / 'clinic-run/adapter'}",
                 "--rules-arm", f"base+rules=base:{rules}", "--rules-arm", f"lora+rules=lora:{rules}",
                 "--cascade-arm", f"base+cascade=base:{quickstart_dir / 'cascade-base'}",
                 "--cascade-arm", f"lora+cascade=lora:{quickstart_dir / 'cascade-adapter'}",
                 "--rules-arm", f"lora+cascade+rules=lora+cascade:{rules}",
                 "--resamples", "100", "--gate", "emotion_accuracy>=-1"]) == 0
    clips = len(read_manifest(quickstart_dir / "clinic/test.jsonl"))
    assert sum(calls) == 2 * clips  # base and lora, each clip once
    report = json.loads((tmp_path / "r/report.json").read_text())
    assert report["arm_names"] == ["base", "lora", "base+cascade", "lora+cascade", "base+rules",
                                   "lora+rules", "lora+cascade+rules"]
    assert set(report["deltas"]) == set(report["arm_names"]) - {"base"} == set(report["gates"])
    assert report["rules_arms"]["lora+rules"]["stage1"] == "lora"
    decision = {row["arm"]: row for row in report["decision"]}
    assert decision["lora"]["kind"] == "adapter" and decision["lora"]["trainable_parameters"] > 0
    assert decision["base+cascade"]["kind"] == "cascade" and decision["base+cascade"]["train_seconds"] > 0
    assert all(row["ms_per_audio_second"] > 0 for row in report["decision"])
    assert decision["lora+rules"]["ms_per_audio_second"] >= decision["lora"]["ms_per_audio_second"]
    assert decision["lora+cascade+rules"]["kind"] == "cascade+rules"
    assert decision["lora+cascade+rules"]["stage1"] == "lora"
    # every arm is also tested against the best one (by emotion UA)
    best = report["best_arm"]
    assert report["arms"][best]["emotion_ua"] == max(a["emotion_ua"] for a in report["arms"].values())
    assert set(report["deltas_vs_best"]) == set(report["arm_names"]) - {best}
    assert all(d["emotion_ua"] <= 1e-12 for d in report["deltas_vs_best"].values())
    markdown = (tmp_path / "r/report.md").read_text()
    assert "## Decision table" in markdown and f"## Change against the best arm ({best}" in markdown
    predictions = [json.loads(line) for line in (tmp_path / "r/predictions.jsonl").read_text().splitlines()]
    changed = [p for p in predictions if p["base"]["emotion"] != p["base+rules"]["emotion"]]
    assert all(p["base+rules"]["emotion"] == "<|NEUTRAL|>" for p in changed)
    assert all(p["base"]["text"] == p["base+rules"]["text"] == p["base+cascade"]["text"]
               for p in predictions)
