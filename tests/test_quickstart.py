"""The README's first command, end to end: `svlora quickstart` on the tiny model and demo data."""

import json


def test_quickstart_runs_every_stage_and_the_adapter_wins_on_the_demo_domain(quickstart_run):
    assert quickstart_run["returncode"] == 0, quickstart_run["stderr"][-3000:]
    out = quickstart_run["out"]
    assert f"A/B report: {out / 'report' / 'report.html'}" in quickstart_run["stdout"]
    summary = json.loads((out / "quickstart.json").read_text())
    report = json.loads((out / "report/report.json").read_text())
    assert summary["report"]["adapter"]["cer"] == report["adapter"]["cer"]
    # The honest A/B: base trained on "general", adapter on "clinic", scored on clinic test.
    assert report["adapter"]["cer"] < report["base"]["cer"]
    assert report["adapter"]["emotion_accuracy"] > report["base"]["emotion_accuracy"]
    for stage in ("make tiny model", "prepare", "A/B eval on the clinic test split"):
        assert stage in summary["stage_seconds"]
    # the three paths side by side: base, adapter, rules and cascades on each stage 1
    assert [row["arm"] for row in report["decision"]] == [
        "base", "adapter", "base+cascade", "adapter+cascade", "base+rules", "adapter+rules"]
    # the transcription stage printed SenseVoice-style outputs for real clips
    assert "<|Speech|><|woitn|>" in quickstart_run["stdout"]
