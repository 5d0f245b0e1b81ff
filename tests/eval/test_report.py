import json

from svlora.manifest import read_manifest


def test_report_has_base_adapter_delta_on_the_same_clips(quickstart_dir):
    report = json.loads((quickstart_dir / "report/report.json").read_text())
    test_rows = read_manifest(quickstart_dir / "clinic/test.jsonl")
    for arm in ("base", "adapter"):
        assert report[arm]["n"] == len(test_rows)
        assert set(report[arm]) >= {"cer", "emotion_accuracy", "per_emotion_accuracy", "confusion"}
        assert sum(map(sum, report[arm]["confusion"]["counts"])) == len(test_rows)
    assert report["delta"]["cer"] == report["adapter"]["cer"] - report["base"]["cer"]
    predictions = [json.loads(line) for line in
                   (quickstart_dir / "report/predictions.jsonl").read_text().splitlines()]
    assert [p["key"] for p in predictions] == [r.key for r in test_rows]
    # report numbers are recomputable from the per-clip predictions
    correct = sum(p["adapter"]["emotion_correct"] for p in predictions)
    assert report["adapter"]["emotion_accuracy"] == correct / len(predictions)
    assert (quickstart_dir / "report/confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cer |" in (quickstart_dir / "report/report.md").read_text()


def test_cli_eval_base_only(quickstart_dir, tmp_path):
    from svlora.cli import main

    code = main(["eval", "--model", str(quickstart_dir / "tiny-base"), "--data",
                 str(quickstart_dir / "clinic/test.jsonl"), "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    quick = json.loads((quickstart_dir / "report/report.json").read_text())
    assert "adapter" not in report and "delta" not in report
    assert report["base"]["cer"] == quick["base"]["cer"]  # deterministic features and decoding
