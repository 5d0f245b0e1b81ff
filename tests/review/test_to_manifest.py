"""--to-manifest: reviewed audio → a CSV `svlora prepare` reads (run for real), with
provenance, the text rule, and clips already in a manifest dropped by audio hash."""

import csv
import json
import shutil
import subprocess
import sys

from svlora.cli.app import main
from tests.review.conftest import add_capture, response, review


def rows_of(path):
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_reviewed_audio_becomes_rows_and_prepare_accepts_them(capture_dir, tmp_path, capsys):
    texts = ["good morning doctor", "my head hurts", "thank you so much", "when is my next visit",
             "I feel a lot better", "the pills make me dizzy"]
    emotions = ["NEUTRAL", "SAD", "HAPPY", "NEUTRAL", "HAPPY", "FEARFUL"]
    captures = [add_capture(capture_dir, "clinic", response(t.upper(), "NEUTRAL", 0.5, "SAD", 0.3), seed=i)
                for i, t in enumerate(texts)]
    for capture, text, emotion in zip(captures, texts, emotions):
        review(capture_dir, capture, source="ui", reviewer="lee", text=text, emotion=emotion, language="en")
    review(capture_dir, captures[0], source="api", emotion="SAD")  # a later record corrects one field
    add_capture(capture_dir, "clinic", response("never reviewed", "SAD", 0.5, "HAPPY", 0.3), seed=50)
    out = tmp_path / "reviewed.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out}: 6 rows; 1 unreviewed audio left out"]
    rows = rows_of(out)
    assert list(rows[0]) == ["audio", "text", "emotion", "event", "language", "capture_id", "model",
                             "reviewer_source", "reviewer"]
    assert [(r["text"], r["emotion"]) for r in rows] == [(texts[0], "SAD"), *zip(texts[1:], emotions[1:])]
    assert (rows[0]["reviewer_source"], rows[0]["reviewer"], rows[1]["reviewer_source"]) == ("api", "", "ui")
    assert rows[2]["event"] == ""  # nobody reviewed it; prepare applies its --event default

    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-m", "svlora.cli", "prepare", str(out), "--format", "csv",
                           "--out", str(data), "--workers", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((data / "prepare_report.json").read_text())
    assert report["rows_accepted"] == 6 and report["rows_rejected"] == 0
    manifest = [json.loads(line) for name in ("train", "val", "test")
                for line in (data / f"{name}.jsonl").read_text().splitlines()]
    assert sorted((m["target"], m["emo_target"]) for m in manifest) == \
        sorted(zip(texts, ["<|SAD|>", *(f"<|{e}|>" for e in emotions[1:])]))
    assert {m["source"] for m in manifest} == {str((capture_dir / c.audio).resolve()) for c in captures}


def test_text_is_required_unless_keep_model_text_and_tags_only_with_keep_model_tags(capture_dir, tmp_path, capsys):
    tagged = add_capture(capture_dir, "clinic", response("served words", "HAPPY", 0.5, "SAD", 0.3, p_event=0.6), seed=1)
    review(capture_dir, tagged, emotion="SAD")  # emotion only: no text reviewed
    texted = add_capture(capture_dir, "clinic", response("served other", "ANGRY", 0.5, "SAD", 0.3), seed=2)
    review(capture_dir, texted, text="reviewed other")
    out = tmp_path / "out.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "1 reviewed without text left out (pass --keep-model-text to use the served text)"
    assert lines[2].startswith("1 rows have no reviewed emotion (empty cell")
    assert lines[3] == ("1 rows have no reviewed language (empty cell: give prepare --language LANG, "
                        "or --keep-model-tags fills in the prediction)")
    [row] = rows_of(out)
    assert (row["text"], row["emotion"], row["language"]) == ("reviewed other", "", "")

    assert main(["review", str(capture_dir), "--to-manifest", str(out), "--keep-model-text", "--keep-model-tags"]) == 0
    rows = rows_of(out)
    assert [(r["text"], r["emotion"], r["event"], r["language"]) for r in rows] == [
        ("served words", "SAD", "Speech", "en"), ("reviewed other", "ANGRY", "Speech", "en")]


def test_audio_already_in_a_manifest_is_dropped_by_hash_and_counted(capture_dir, tmp_path, capsys):
    captures = [add_capture(capture_dir, "clinic", response(f"words {i}", "SAD", 0.5, "HAPPY", 0.3), seed=i)
                for i in range(5)]
    for capture in captures:
        review(capture_dir, capture, text=f"reviewed {capture.id}", emotion="SAD", language="en")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    train, test = [], []
    for index in (0, 2, 3):  # the same bytes under another name, as a user's corpus would hold them
        copy = corpus / f"clip{index}.wav"
        shutil.copy(capture_dir / captures[index].audio, copy)
        (train if index else test).append({"key": f"clip{index}", "source": str(copy), "source_len": 80,
                                           "target": "x", "target_len": 1})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    out = tmp_path / "out.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out), "--exclude",
                 str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"wrote {out}: 2 rows; 0 unreviewed audio left out",
                     f"2 dropped: already in {tmp_path / 'train.jsonl'}",
                     f"1 dropped: already in {tmp_path / 'test.jsonl'}"]
    assert [r["capture_id"] for r in rows_of(out)] == [captures[1].id, captures[4].id]


def test_one_audio_served_twice_is_one_row_with_every_review_merged(capture_dir, tmp_path):
    base = add_capture(capture_dir, "base", response("hi there", "HAPPY", 0.5, "SAD", 0.3), seed=1, kind="base")
    clinic = add_capture(capture_dir, "clinic", response("hi there", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    review(capture_dir, base, text="hi there nurse")
    review(capture_dir, clinic, source="ui", reviewer="kim", emotion="SAD")
    out = tmp_path / "out.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0
    [row] = rows_of(out)
    assert (row["text"], row["emotion"], row["capture_id"], row["model"], row["reviewer"]) == \
        ("hi there nurse", "SAD", clinic.id, "clinic", "kim")


def test_feedback_on_an_evicted_capture_is_counted_not_fatal(capture_dir, tmp_path, capsys):
    from svlora.captures import evict_oldest, folder_bytes

    old = add_capture(capture_dir, "clinic", response("old", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    new = add_capture(capture_dir, "clinic", response("new", "SAD", 0.5, "HAPPY", 0.3), seed=2)
    review(capture_dir, old, text="old words")
    review(capture_dir, new, text="new words")
    assert evict_oldest(capture_dir, folder_bytes(capture_dir) - 1) == [old.id]
    out = tmp_path / "out.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "1 feedback records name captures no longer in the folder (evicted by the size cap)"
    assert [r["text"] for r in rows_of(out)] == ["new words"]


def test_a_schemas_heads_are_columns_and_label_studio_choices(capture_dir, tmp_path, capsys):
    from svlora.label_schema import resolve_schema

    schema = resolve_schema({"heads": {"role": ["nurse", "patient"]}}, "labels.yaml")
    answer = {**response("I feel fine", "NEUTRAL", 0.6, "SAD", 0.2), "role": "nurse",
              "role_probs": {"nurse": 0.55, "patient": 0.45}}  # a cascade's head, as serve returns it
    capture = add_capture(capture_dir, "clinic+cascade", answer, seed=1, kind="pipeline", schema=schema)
    assert main(["review", str(capture_dir), "--export-labelstudio", str(tmp_path / "t.json")]) == 0
    config = (tmp_path / "t.xml").read_text()
    assert '<Choices name="role" toName="audio"' in config and '<Choice value="patient"/>' in config
    [task] = json.loads((tmp_path / "t.json").read_text())
    assert {"from_name": "role", "to_name": "audio", "type": "choices", "value": {"choices": ["nurse"]}} \
        in task["predictions"][0]["result"]
    review(capture_dir, capture, text="I feel fine", role="patient", emotion="NEUTRAL", language="en")
    out = tmp_path / "out.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0
    [row] = rows_of(out)
    assert list(row)[:6] == ["audio", "text", "emotion", "event", "language", "role"] and row["role"] == "patient"
    schema_file = tmp_path / "out.labels.json"
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"the rows' label schema: {schema_file}")

    from svlora.data_prep import PrepareOptions, prepare_corpus
    from svlora.label_schema import load_schema
    from svlora.manifest import read_manifest

    assert load_schema(schema_file) == schema
    prepare_corpus(PrepareOptions(input=str(out), out=str(tmp_path / "data"), format="csv", val=0, test=0,
                                  workers=1, labels=load_schema(schema_file)))
    [prepared] = read_manifest(tmp_path / "data" / "train.jsonl")
    assert prepared.heads == {"role": "patient"} and prepared.target == "I feel fine"
