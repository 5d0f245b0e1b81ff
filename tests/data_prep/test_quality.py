"""Audio rejection reasons, duplicates, leakage-free stratified splits, folds, the report."""

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from svlora.cli import main
from svlora.data_prep import PrepareOptions, prepare_corpus, summary
from svlora.data_prep.splits import connected_groups, split_rows
from svlora.manifest import read_manifest
from tests.conftest import write_tone
from tests.data_prep.test_prepare import good_rows, prepare_table, write_csv


def test_clipped_zero_length_and_duplicate_clips(tmp_path):
    rows = good_rows(tmp_path)
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "clipped.wav", np.clip(3 * np.sin(2 * np.pi * 200 * t), -1, 1), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    (tmp_path / "copy.wav").write_bytes((tmp_path / rows[4]["audio"]).read_bytes())
    rows += [{"audio": "clipped.wav", "text": "c", "emotion": "sad", "speaker": "spk0"},
             {"audio": "empty.wav", "text": "e", "emotion": "sad", "speaker": "spk0"},
             {"audio": "copy.wav", "text": "d", "emotion": "sad", "speaker": "spk0"}]
    table, report = prepare_table(tmp_path, rows)
    reasons = {Path(r["audio"]).name: r["reason"] for r in report["rejected"]}
    assert reasons["clipped.wav"].startswith("heavily clipped")
    assert reasons["empty.wav"].startswith("empty audio")
    assert reasons["copy.wav"] == f"duplicate audio of {table}:6 (kept once)"
    assert report["rows_accepted"] == 18  # the original of the duplicate is kept
    assert report["rejected_by_reason"] == {"duplicate audio of " + str(table): 1,
                                            "empty audio": 1, "heavily clipped": 1}


def test_rejected_csv_can_be_fixed_and_rerun(tmp_path):
    rows = good_rows(tmp_path)
    rows[0]["emotion"] = "bored"
    rows[1]["text"] = ""
    table = write_csv(tmp_path / "labels.csv", rows)
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv",
                                  language="en", val=0.2, test=0.2))
    with open(tmp_path / "out/rejected.csv", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    assert [r["row"] for r in rejected] == [f"{table}:2", f"{table}:3"]
    rejected[0]["emotion"], rejected[1]["text"] = "neutral", "fixed text"
    with open(tmp_path / "fixed.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rejected[0]))
        writer.writeheader()
        writer.writerows(rejected)
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "fixed.csv"), out=str(tmp_path / "again"),
                                           format="csv", language="en", split_by="none", val=0.0,
                                           test=0.0))
    assert report["rows_accepted"] == 2


def shared_corpus(tmp_path: Path, speakers: int = 12, sentences: int = 8) -> Path:
    """Pairs of speakers read the same three sentences (mod `sentences`); emotions rotate."""
    rows, frequency = [], 100
    for s in range(speakers):
        for k in range(3):
            sentence = ((s // 2) * 3 + k) % sentences
            frequency += 3
            name = f"c/{s}_{k}.wav"
            write_tone(tmp_path / name, seconds=0.3, frequency=frequency)
            rows.append({"audio": name, "text": f"Sentence number {sentence}.",
                         "emotion": ["happy", "sad", "angry", "neutral"][(s + k) % 4],
                         "speaker": f"spk{s}"})
    return write_csv(tmp_path / "labels.csv", rows)


def test_speaker_and_text_disjoint_at_once_and_deterministic(tmp_path):
    table = shared_corpus(tmp_path, speakers=24, sentences=40)
    runs = []
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        report = prepare_corpus(PrepareOptions(input=str(table), out=str(out), format="csv",
                                               language="en", split_by="speaker+text", val=0.2,
                                               test=0.2, seed=7))
        assert report["leakage"] == {"speaker": [], "text": [], "audio_sha256": []}
        runs.append((out / "test.jsonl").read_text())
    assert runs[0] == runs[1]
    other = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "seed8"), format="csv",
                                          language="en", split_by="speaker+text", val=0.2, test=0.2, seed=8))
    assert other["leakage"]["speaker"] == []


def test_speaker_only_split_reports_the_text_it_leaks(tmp_path):
    table = shared_corpus(tmp_path, speakers=12, sentences=8)
    report = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "o"), format="csv",
                                           language="en", split_by="speaker", val=0.2, test=0.2))
    assert report["leakage"]["speaker"] == [] and report["leakage"]["text"]
    assert "shared across splits" in summary(report)


def test_splits_are_stratified_by_emotion():
    rows = [(f"spk{i}", ["happy", "sad", "angry", "neutral"][i % 4]) for i in range(400)]
    splits = split_rows(rows, [lambda r: r[0]], lambda r: r[1], 0.1, 0.2, seed=0)
    for name, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        per_label = Counter(label for _, label in splits[name])
        assert all(abs(n - share * 100) <= 2 for n in per_label.values()), (name, per_label)


def test_connected_groups_join_rows_through_any_key():
    rows = [("a", "x"), ("b", "x"), ("b", "y"), ("c", "z")]
    groups = connected_groups(rows, [lambda r: r[0], lambda r: r[1]])
    assert groups == [[0, 1, 2], [3]]


def test_folds_are_grouped_and_cover_everything(tmp_path):
    table = shared_corpus(tmp_path, speakers=20, sentences=60)
    report = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "f"), format="csv",
                                           language="en", split_by="speaker", folds=4))
    tests = [read_manifest(tmp_path / "f" / f"fold{k}" / "test.jsonl") for k in range(4)]
    assert sum(len(t) for t in tests) == report["rows_accepted"] == 60
    speakers = [{r.speaker for r in t} for t in tests]
    assert all(not (speakers[i] & speakers[j]) for i in range(4) for j in range(i + 1, 4))
    train0 = read_manifest(tmp_path / "f/fold0/train.jsonl")
    assert {r.key for r in train0} | {r.key for r in tests[0]} == \
        {r.key for t in tests for r in t}
    assert report["leakage"]["speaker"] == []


def test_class_imbalance_is_warned(tmp_path):
    rows = good_rows(tmp_path, speakers=10, per_speaker=3)
    report = prepare_corpus(PrepareOptions(input=str(write_csv(tmp_path / "l.csv", rows)),
                                           out=str(tmp_path / "o"), format="csv", language="en"))
    assert report["emotion_counts"] == {"<|HAPPY|>": 10, "<|SAD|>": 10, "<|ANGRY|>": 10}
    assert len(report["warnings"]) == 3 and "under 20 clips" in report["warnings"][0]


def test_cli_summary_groups_rejections(tmp_path, capsys):
    rows = good_rows(tmp_path)
    for row in rows[:4]:
        row["emotion"] = "bored"
    table = write_csv(tmp_path / "labels.csv", rows)
    assert main(["prepare", str(table), "--format", "csv", "--out", str(tmp_path / "o"),
                 "--language", "en", "--val", "0.2", "--test", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "rejected 4 × unknown emotion label 'bored'" in out
    assert out.count("labels.csv:") == 3  # the first three rows of that reason are shown
    assert "rejected.csv" in out


@pytest.mark.parametrize("cell, safe", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("+1", "'+1"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("plain text", "plain text"), ("'quoted", "'quoted"), ("a=b", "a=b"), ("", "")])
def test_spreadsheet_safe_cells(cell, safe):
    from svlora.data_prep.spreadsheet import from_spreadsheet_safe, spreadsheet_safe

    assert spreadsheet_safe(cell) == safe
    assert from_spreadsheet_safe(safe) == cell


def test_rejected_csv_is_safe_in_a_spreadsheet_and_reruns_verbatim(tmp_path):
    rows = good_rows(tmp_path)
    formulas = ["=cmd|' /C calc'!A0", "+1+1", "-2 degrees", "@SUM(A1)"]
    for row, text in zip(rows, formulas):
        row["text"], row["emotion"] = text, "=bored"
    table = write_csv(tmp_path / "labels.csv", rows)
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv",
                                  language="en", val=0.2, test=0.2))
    with open(tmp_path / "out/rejected.csv", newline="", encoding="utf-8") as handle:
        rejected = list(csv.DictReader(handle))
    assert [r["text"] for r in rejected] == ["'" + text for text in formulas]
    cells = [cell for r in rejected for cell in r.values()]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    # the user fixes the emotion in their spreadsheet; the re-run reads their own text back
    fixed = (tmp_path / "out/rejected.csv").read_text(encoding="utf-8").replace("'=bored", "sad")
    (tmp_path / "fixed.csv").write_text(fixed, encoding="utf-8")
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "fixed.csv"), out=str(tmp_path / "again"),
                                           format="csv", language="en", split_by="none", val=0.0,
                                           test=0.0))
    assert report["rows_accepted"] == 4
    assert sorted(r.target for r in read_manifest(tmp_path / "again/train.jsonl")) == sorted(formulas)


def test_a_users_own_csv_is_read_exactly_as_written(tmp_path):
    """Only rejected.csv (its reason/row columns) has its quoting undone: a user's transcript
    that starts with a quote before a formula character keeps it."""
    rows = good_rows(tmp_path)
    texts = ["'-5 degrees", "'=quoted on purpose", "plain", "'@handle"]
    for row, text in zip(rows, texts):
        row["text"] = text
    table = write_csv(tmp_path / "labels.csv", rows)
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv",
                                  language="en", split_by="none", val=0.0, test=0.0))
    targets = {r.target for r in read_manifest(tmp_path / "out/train.jsonl")}
    assert set(texts) <= targets
