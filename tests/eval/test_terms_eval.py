"""`svlora eval --terms --hotwords-arm` on the trained tiny model and the clinic's drug names:
term metrics recountable from predictions.jsonl, hotwords that raise term recall and never
touch the tags, gates on term metrics, and the same text through transcribe and load_model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from svlora.eval import evaluate
from svlora.errors import SvloraError
from svlora.metrics import normalize_text


@pytest.fixture(scope="module")
def terms_report(trained_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("terms-eval")
    terms = trained_dir / "demo" / "clinic" / "terms.txt"
    report = evaluate(str(trained_dir / "tiny-base"), str(trained_dir / "clinic" / "test.jsonl"),
                      str(out), adapters=[str(trained_dir / "clinic-run" / "adapter")],
                      terms=str(terms), hotword_arms=[f"base+hotwords=base:{terms}",
                                                      f"adapter+hotwords=adapter:{terms}"],
                      gate="term_recall>=+0.0,unbiased_error_rate<=+0.5", resamples=200)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return report, rows, terms


def test_term_recall_is_recounted_from_predictions(terms_report):
    report, rows, terms = terms_report
    names = set(terms.read_text().split())
    for arm in report.arm_names:
        occurrences = [o for row in rows for o in row[arm]["terms"]["occurrences"]]
        # every reference word that is a term is an occurrence (the drug names are single words)
        assert len(occurrences) == sum(w in names for row in rows
                                       for w in normalize_text(row["reference"]).split())
        hits = sum(o["hit"] for o in occurrences)
        assert report.arms[arm]["term_recall"] == pytest.approx(hits / len(occurrences))
        for row, occurrence in ((r, o) for r in rows for o in r[arm]["terms"]["occurrences"]):
            if occurrence["hit"]:  # a hit is a word the hypothesis really has
                assert occurrence["term"] in normalize_text(row[arm]["text"]).split()


def test_hotwords_raise_base_term_recall_and_never_change_the_tags(terms_report):
    report, rows, _ = terms_report
    assert report.arms["base+hotwords"]["term_recall"] > report.arms["base"]["term_recall"]
    for row in rows:
        for plain, biased in (("base", "base+hotwords"), ("adapter", "adapter+hotwords")):
            for key in ("emotion", "language", "event", "emotion_probs"):
                assert row[plain][key] == row[biased][key], (row["key"], key)
    decision = {r["arm"]: r for r in report.decision}
    assert decision["base+hotwords"]["kind"] == "hotwords"
    assert decision["base+hotwords"]["term_recall"] == report.arms["base+hotwords"]["term_recall"]
    assert {c["gated"] for c in report.gates["base+hotwords"]} == {"term_recall", "unbiased_error_rate"}
    assert report.terms["per_term"][0]["occurrences"] >= report.terms["per_term"][-1]["occurrences"]


def test_term_gates_need_terms_and_a_bad_arm_is_refused(trained_dir, tmp_path):
    data = str(trained_dir / "clinic" / "test.jsonl")
    with pytest.raises(SvloraError, match="needs --terms"):
        evaluate(str(trained_dir / "tiny-base"), data, str(tmp_path / "a"),
                 adapters=[str(trained_dir / "clinic-run" / "adapter")], gate="term_recall>=+0.1")
    with pytest.raises(SvloraError, match="'nope' is not base or an --adapter arm"):
        evaluate(str(trained_dir / "tiny-base"), data, str(tmp_path / "b"),
                 hotword_arms=[f"x=nope:{trained_dir / 'demo' / 'clinic' / 'terms.txt'}"])


def test_transcribe_and_load_model_decode_with_the_same_hotwords(terms_report, trained_dir):
    from svlora.adapters import load_model

    report, rows, terms = terms_report
    changed = [r for r in rows if r["base"]["text"] != r["base+hotwords"]["text"]][:3]
    assert changed, "hotwords changed no clip's text"
    paths = [r["source"] for r in changed]
    runtime = load_model(str(trained_dir / "tiny-base"), hotwords=str(terms))
    cli = subprocess.run([sys.executable, "-m", "svlora.cli", "transcribe", "--model",
                          str(trained_dir / "tiny-base"), "--hotwords", str(terms), "--json", *paths],
                         capture_output=True, text=True, check=True)
    printed = [json.loads(line)["text"] for line in cli.stdout.splitlines()]
    assert printed == [r["text"] for r in runtime.transcribe(paths)]
    assert printed == [r["base+hotwords"]["text"] for r in changed]
