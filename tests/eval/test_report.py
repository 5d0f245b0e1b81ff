import importlib
import json
import shutil
import subprocess

import pytest

from svlora.cli import main
from svlora.manifest import read_manifest


def test_report_has_base_adapter_delta_on_the_same_clips(quickstart_dir):
    report = json.loads((quickstart_dir / "report/report.json").read_text())
    assert report["schema"] == "svlora-eval-report" and report["version"] == 2
    test_rows = read_manifest(quickstart_dir / "clinic/test.jsonl")
    for arm in ("base", "adapter"):
        assert report[arm] == report["arms"][arm]
        assert report[arm]["n"] == len(test_rows)
        assert set(report[arm]) >= {"cer", "wer", "error_rate", "emotion_accuracy", "emotion_ua",
                                    "emotion_macro_f1", "per_class", "per_emotion_accuracy",
                                    "confusion", "ci95", "language_accuracy", "event_f1"}
        assert sum(map(sum, report[arm]["confusion"]["counts"])) == len(test_rows)
    assert report["delta"]["cer"] == pytest.approx(report["adapter"]["cer"] - report["base"]["cer"])
    assert set(report["slices"]) >= {"speaker", "emotion", "duration", "language"}
    predictions = [json.loads(line) for line in
                   (quickstart_dir / "report/predictions.jsonl").read_text().splitlines()]
    assert [p["key"] for p in predictions] == [r.key for r in test_rows]
    correct = sum(p["adapter"]["emotion_correct"] for p in predictions)
    assert report["adapter"]["emotion_accuracy"] == correct / len(predictions)
    for name in ("confusion.png", "confusion_base.png", "confusion_adapter.png"):
        assert (quickstart_dir / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert "| error rate |" in (quickstart_dir / "report/report.md").read_text()
    html = (quickstart_dir / "report/report.html").read_text()
    assert "data:image/png;base64," in html and "Most improved clips" in html


def test_cli_eval_base_only_is_deterministic(quickstart_dir, tmp_path):
    code = main(["eval", "--model", str(quickstart_dir / "tiny-base"), "--data",
                 str(quickstart_dir / "clinic/test.jsonl"), "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    quick = json.loads((quickstart_dir / "report/report.json").read_text())
    assert "adapter" not in report and report["deltas"] == {}
    assert report["base"]["cer"] == quick["base"]["cer"]


def test_many_arms_retention_gates_and_the_prediction_cache(quickstart_dir, tmp_path, monkeypatch):
    arguments = ["eval", "--model", str(quickstart_dir / "tiny-base"), "--data",
                 str(quickstart_dir / "clinic/test.jsonl"), "--out", str(tmp_path),
                 "--adapter", f"run={quickstart_dir / 'clinic-run/adapter'}",
                 "--adapter", f"exported={quickstart_dir / 'export/adapter'}",
                 "--general", str(quickstart_dir / "general/test.jsonl"), "--resamples", "200"]
    assert main(arguments + ["--gate", "emotion_accuracy>=+0.01,error_rate<=0"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["arm_names"] == ["base", "run", "exported"]
    assert report["arms"]["run"]["cer"] == report["arms"]["exported"]["cer"]  # same weights
    assert set(report["retention"]["delta"]) == {"run", "exported"}
    assert report["gates_passed"] and len(report["gates"]["run"]) == 2
    # an unreachable gate fails the run with exit code 2
    assert main(arguments + ["--gate", "emotion_accuracy>=+0.9"]) == 2
    # a re-run decodes nothing: every arm's outputs come from the prediction cache
    evaluate_module = importlib.import_module("svlora.eval.evaluate")  # the package exports a function of that name

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the predictions were cached")
    monkeypatch.setattr(evaluate_module, "decode_features", no_decoding)
    assert main(arguments) == 0
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["arms"] == report["arms"]


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (chromium)")
def test_html_report_renders_in_a_headless_browser(quickstart_dir, tmp_path):
    screenshot = tmp_path / "report.png"
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1280,1600", f"--screenshot={screenshot}",
                    (quickstart_dir / "report/report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    import numpy as np
    from PIL import Image

    image = Image.open(screenshot).convert("L")
    assert image.size == (1280, 1600)
    assert int((np.asarray(image) < 128).sum()) > 2000  # text and tables drawn, not a blank page
