"""Every bad input to `svlora review` is one line naming the file or row and the fix, exit 1;
and the schema a capture is checked against: --labels, else SenseVoice's, never a guess."""

import csv

import pytest

from svlora.captures import FEEDBACK
from svlora.cli.app import main
from tests.review.conftest import add_capture, response, review


def one_error_line(argv, capsys) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("svlora review: error: "), captured.err
    return lines[0].removeprefix("svlora review: error: ")


def test_a_folder_that_is_not_a_capture_folder(tmp_path, capsys):
    line = one_error_line(["review", str(tmp_path), "--queue"], capsys)
    assert line == (f"{tmp_path}: not a capture folder (no captures/); give the DIR that "
                    "`svlora serve --capture DIR` wrote")


def test_a_torn_feedback_line_names_the_line(capture_dir, tmp_path, capsys):
    capture = add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    review(capture_dir, capture, emotion="SAD")
    with open(capture_dir / FEEDBACK, "a") as handle:
        handle.write('{"id": "' + capture.id + '", "labels": {"emo')  # a crash mid-write
    for action in (["--queue"], ["--to-manifest", str(tmp_path / "o.csv")]):
        line = one_error_line(["review", str(capture_dir), *action], capsys)
        assert line.startswith(f"{capture_dir / FEEDBACK}:2: not a feedback record") and "fix or delete" in line
    assert not (tmp_path / "o.csv").exists()


def test_a_hand_edited_label_outside_the_schema_names_the_capture(capture_dir, tmp_path, capsys):
    capture = add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    review(capture_dir, capture, text="hi", emotion="GRUMPY")
    line = one_error_line(["review", str(capture_dir), "--to-manifest", str(tmp_path / "o.csv")], capsys)
    assert line.startswith(f"{capture_dir / FEEDBACK}: feedback on {capture.id}: emotion 'GRUMPY' is not "
                           "in the served label schema; use one of HAPPY, SAD")


def test_flags_of_another_action_and_a_bad_limit(capture_dir, tmp_path, capsys):
    assert one_error_line(["review", str(capture_dir), "--queue", "--exclude", "train.jsonl"],
                          capsys) == "--exclude goes with --to-manifest"
    assert one_error_line(["review", str(capture_dir), "--queue", "--limit", "0"],
                          capsys) == "--limit 0: give a positive number"
    missing = tmp_path / "missing.jsonl"
    assert one_error_line(["review", str(capture_dir), "--to-manifest", str(tmp_path / "o.csv"),
                           "--exclude", str(missing)], capsys) == f"--exclude {missing}: manifest not found"
    assert one_error_line(["review", str(capture_dir), "--export-labelstudio", str(tmp_path / "t.xml")],
                          capsys).startswith(f"--export-labelstudio {tmp_path / 't.xml'}: name the tasks file")


STRESSED_EMOTIONS = ("NEUTRAL", "HAPPY", "SAD", "ANGRY", "STRESSED")


def stressed_schema():
    from svlora.label_schema import resolve_schema

    return resolve_schema({"emotion": list(STRESSED_EMOTIONS)}, "labels.yaml")


def stressed_answer() -> dict:
    return response("I can't sleep", "STRESSED", 0.6, "SAD", 0.2, emotions=STRESSED_EMOTIONS)


def test_the_schema_serve_recorded_is_the_one_labels_are_checked_against(capture_dir, tmp_path, capsys):
    capture = add_capture(capture_dir, "clinic", stressed_answer(), seed=1, schema=stressed_schema())
    review(capture_dir, capture, text="I cannot sleep", emotion="STRESSED")
    out = tmp_path / "o.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out)]) == 0  # no --labels needed
    [row] = list(csv.DictReader(out.open()))
    assert row["emotion"] == "STRESSED"
    review(capture_dir, capture, emotion="FEARFUL")  # SenseVoice's, but not in the served schema
    line = one_error_line(["review", str(capture_dir), "--to-manifest", str(out)], capsys)
    assert "emotion 'FEARFUL' is not in the served label schema; use one of NEUTRAL, HAPPY, SAD, ANGRY, STRESSED" in line


def test_a_capture_without_a_recorded_schema_uses_labels_or_asks_for_it(capture_dir, tmp_path, capsys):
    capture = add_capture(capture_dir, "clinic", stressed_answer(), seed=1, schema=None)
    line = one_error_line(["review", str(capture_dir), "--export-labelstudio", str(tmp_path / "t.json")], capsys)
    assert line == (f"capture {capture.id} (clinic) was answered with emotion STRESSED, which the "
                    "label schema in use lacks; pass --labels with the labels.json of the model that served it")
    labels = tmp_path / "labels.yaml"
    labels.write_text(f"emotion: [{', '.join(STRESSED_EMOTIONS)}]\n")
    review(capture_dir, capture, text="I cannot sleep", emotion="STRESSED")
    out = tmp_path / "o.csv"
    assert main(["review", str(capture_dir), "--to-manifest", str(out), "--labels", str(labels)]) == 0
    assert [r["emotion"] for r in csv.DictReader(out.open())] == ["STRESSED"]


def test_the_page_checks_what_it_saves_against_the_served_schema(capture_dir):
    from svlora.captures import CaptureError, read_feedback
    from svlora.label_schema import DEFAULT_SCHEMA
    from svlora.review.page import labels_from_form, page_item, save_review

    capture = add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    item = page_item(capture_dir, capture.id, 0, 1, DEFAULT_SCHEMA, why="")
    labels = labels_from_form(item.schema, "  ", {"emotion": "GRUMPY", "event": "Speech", "language": None}, {})
    assert labels == {"emotion": "GRUMPY", "event": "Speech"}  # blank text and unset fields: no label
    with pytest.raises(CaptureError, match=f"capture {capture.id}: emotion 'GRUMPY' is not in the served"):
        save_review(capture_dir, item, labels, reviewer="")
    assert read_feedback(capture_dir) == []


def test_to_manifest_without_reviews_and_with_a_bad_feedback_id(capture_dir, tmp_path, capsys):
    from svlora.captures import Feedback, append_feedback

    add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    out = str(tmp_path / "o.csv")
    assert one_error_line(["review", str(capture_dir), "--to-manifest", out], capsys) == (
        f"{capture_dir}: no reviewed clips yet; review some first (--ui, --import-labelstudio, or the "
        "server's feedback API)")
    append_feedback(capture_dir, Feedback("../../etc/passwd", {"text": "x"}))
    assert one_error_line(["review", str(capture_dir), "--to-manifest", out], capsys) == (
        f"{capture_dir / FEEDBACK}: '../../etc/passwd' is not a capture id; fix or delete that record")


def test_a_feedback_write_that_fails_leaves_no_partial_line(capture_dir, monkeypatch):
    """A disk that fills while a feedback line is written: the line is cut back out, so the
    resend the server asks for (507) appends to an intact file."""
    import errno
    import os

    from svlora.captures import append_feedback, read_feedback
    from svlora.captures import Feedback as Record

    capture = add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    review(capture_dir, capture, text="first")
    before = (capture_dir / "feedback.jsonl").read_bytes()

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        append_feedback(capture_dir, Record(capture.id, {"text": "second"}, source="api"))
    monkeypatch.undo()
    assert (capture_dir / "feedback.jsonl").read_bytes() == before
    append_feedback(capture_dir, Record(capture.id, {"text": "second"}, source="api"))
    assert [r.labels["text"] for r in read_feedback(capture_dir)] == ["first", "second"]


def test_an_output_that_is_a_directory_and_empty_text_are_one_line_errors(capture_dir, tmp_path, capsys):
    from svlora.captures import CaptureError, checked_labels
    from svlora.label_schema import DEFAULT_SCHEMA

    add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.3), seed=1)
    for flag, example in (("--to-manifest", "reviewed.csv"), ("--export-labelstudio", "tasks.json")):
        line = one_error_line(["review", str(capture_dir), flag, str(tmp_path)], capsys)
        assert line == f"{flag} {tmp_path} is a directory; give a file path such as {tmp_path / example}"
    with pytest.raises(CaptureError, match="text must be a non-empty string"):
        checked_labels({"text": "  "}, DEFAULT_SCHEMA, "feedback on cap_1")
