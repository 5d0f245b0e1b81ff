import importlib
import json
import shutil
import subprocess

import jiwer
import pytest

from svlora.cli import main
from svlora.manifest import read_manifest


def test_report_has_base_adapter_delta_on_the_same_clips(quickstart_dir):
    report = json.loads((quickstart_dir / "report/report.json").read_text())
    assert report["schema"] == "svlora-eval-report" and report["schema_version"] == 3
    test_rows = read_manifest(quickstart_dir / "clinic/test.jsonl")
    for arm in ("base", "adapter"):
        assert report[arm] == report["arms"][arm]
        assert report[arm]["n"] == len(test_rows)
        assert set(report[arm]) >= {"cer", "wer", "error_rate", "emotion_accuracy", "emotion_ua",
                                    "emotion_macro_f1", "per_class", "per_emotion_accuracy",
                                    "confusion", "ci95", "language_accuracy", "event_f1"}
        assert sum(map(sum, report[arm]["confusion"]["counts"])) == len(test_rows)
    assert set(report["slices"]) >= {"speaker", "emotion", "duration", "language"}
    predictions = [json.loads(line) for line in
                   (quickstart_dir / "report/predictions.jsonl").read_text().splitlines()]
    assert [p["key"] for p in predictions] == [r.key for r in test_rows]
    # CER and emotion accuracy recomputed independently: jiwer on the decoded texts and the
    # manifest's transcripts (the demo language is lower-case words: only spaces to drop)
    references = [r.target.replace(" ", "") for r in test_rows]

    def cer(arm: str) -> float:
        return jiwer.cer(references, [p[arm]["text"].lower().replace(" ", "") for p in predictions])
    assert report["base"]["cer"] == pytest.approx(cer("base"))
    assert report["delta"]["cer"] == pytest.approx(cer("adapter") - cer("base"))
    right = sum(p["adapter"]["emotion"] == r.emo_target for p, r in zip(predictions, test_rows))
    assert report["adapter"]["emotion_accuracy"] == pytest.approx(right / len(test_rows))
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
    evaluate_module = importlib.import_module("svlora.eval.ab")

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


def old_report(**changes) -> dict:
    """A report.json of the first format (version 2), with a rules arm and no adapter: its
    `adapter` and `delta` keys held the rules arm."""
    arms = {"base": {"cer": 0.2}, "base+rules": {"cer": 0.2}}
    report = {"schema": "svlora-eval-report", "version": 2, "model": "m", "base_sha256": "s",
              "data": "t.jsonl", "data_sha256": "d", "n": 3, "bootstrap": {"resamples": 10, "seed": 0},
              "arm_names": ["base", "base+rules"], "adapters": {}, "cascade_arms": {},
              "rules_arms": {"base+rules": {"stage1": "base", "rules": "r.yaml"}}, "arms": arms,
              "deltas": {"base+rules": {"cer": 0.0}}, "best_arm": "base", "deltas_vs_best": {},
              "base": arms["base"], "adapter_path": None, "adapter": arms["base+rules"],
              "delta": {"cer": 0.0}, "decision": [], "slices": {}, "changed_clips": {},
              "gates": {}, "gates_passed": True}
    return {**report, **changes}


def test_the_report_record_derives_its_aliases_and_never_calls_a_rules_arm_adapter():
    from svlora.eval import EvalReport

    report = EvalReport.from_dict(old_report())
    assert "adapter" not in report and "delta" not in report and report["adapter_path"] is None
    assert report["base"] == {"cer": 0.2} and report["arms"] is report.arms
    written = report.to_dict()
    assert written["schema_version"] == 3 and "adapter" not in written and "retention" not in written
    assert json.loads(json.dumps(written))["rules_arms"]["base+rules"]["stage1"] == "base"
    with_adapter = EvalReport.from_dict(old_report(
        arm_names=["base", "lora", "base+rules"], adapters={"lora": "runs/a/adapter"},
        arms={**old_report()["arms"], "lora": {"cer": 0.1}},
        deltas={"lora": {"cer": -0.1}, "base+rules": {"cer": 0.0}}))
    assert with_adapter["adapter"] == {"cer": 0.1} and with_adapter["delta"] == {"cer": -0.1}
    assert with_adapter["adapter_path"] == "runs/a/adapter"


def test_a_report_of_another_schema_or_version_is_refused():
    from svlora.errors import SvloraError
    from svlora.eval import EvalReport

    with pytest.raises(SvloraError, match="not an svlora eval report"):
        EvalReport.from_dict(old_report(schema="other"))
    with pytest.raises(SvloraError, match="schema version 9 is not one this svlora reads"):
        EvalReport.from_dict(old_report(version=9))
    with pytest.raises(SvloraError, match="missing field.*best_arm"):
        EvalReport.from_dict({k: v for k, v in old_report().items() if k != "best_arm"})


def test_the_reliability_legend_leaves_the_curves_uncovered():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from svlora.eval.report import reliability_figure

    bins = [{"confidence": c, "accuracy": a} for c, a in ((0.15, 0.1), (0.5, 0.55), (0.9, 0.95))]
    report = {"arm_names": ["base", "a", "b"],
              "arms": {arm: {"calibration": {"ece": 0.05, "n": 30, "bins": bins}}
                       for arm in ("base", "a", "b")}}
    figure = reliability_figure(report)
    FigureCanvasAgg(figure).draw()
    [axis] = figure.axes
    plot_area = axis.get_window_extent()
    legend = axis.get_legend().get_window_extent()
    assert not plot_area.overlaps(legend)
    assert len(axis.get_legend().get_texts()) == 4  # the diagonal and each arm, all named


def test_retention_is_one_table_in_markdown_and_html():
    from svlora.eval.report import RETENTION_HEADER, _html_table, markdown_table, retention_rows

    retention = {"data": "g.jsonl", "n": 4, "arms": {"base": {"error_rate": 0.1, "cer": 0.08},
                                                     "a": {"error_rate": 0.15, "cer": 0.09}},
                 "delta": {"a": {"error_rate": 0.05, "ci95": {"error_rate": [0.01, 0.09]}}}}
    rows = retention_rows(retention)
    assert rows == [["base", "0.1000", "0.0800", "–"],
                    ["a", "0.1500", "0.0900", "+0.0500 [0.010, 0.090]"]]
    assert RETENTION_HEADER == ["arm", "error rate", "CER", "Δ error rate vs base"]
    html_table = _html_table(RETENTION_HEADER, rows)
    assert all(f"<td>{cell}</td>" in html_table for row in rows for cell in row)
    assert markdown_table(RETENTION_HEADER, rows)[3] == "| a | 0.1500 | 0.0900 | +0.0500 [0.010, 0.090] |"
