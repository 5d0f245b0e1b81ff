"""The Label Studio round trip: exported tasks and config checked by label-studio-sdk's own
LabelInterface, an export edited the way Label Studio writes one, imported, and the
correction found in the manifest CSV."""

import csv
import json
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from svlora.captures import read_feedback
from svlora.cli.app import main
from tests.review.conftest import add_capture, response


@pytest.fixture
def served(capture_dir):
    """Three audio: one two models disagree on, two one model answered."""
    captures = {
        "disputed": add_capture(capture_dir, "clinic", response("take the metformin", "HAPPY", 0.5, "SAD", 0.4), seed=1),
        "disputed_base": add_capture(capture_dir, "base", response("take the met for min", "NEUTRAL", 0.8, "SAD", 0.1),
                                     seed=1, kind="base"),
        "calm": add_capture(capture_dir, "clinic", response("good morning", "NEUTRAL", 0.9, "SAD", 0.05), seed=2),
        "angry": add_capture(capture_dir, "clinic", response("where is my doctor", "ANGRY", 0.55, "SAD", 0.3), seed=3),
    }
    return capture_dir, captures


def export(folder: Path, out: Path, *extra) -> list[dict]:
    assert main(["review", str(folder), "--export-labelstudio", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_exported_tasks_and_config_pass_label_studios_own_checks(served, tmp_path):
    folder, captures = served
    tasks = export(folder, tmp_path / "tasks.json")
    interface = LabelInterface((tmp_path / "tasks.xml").read_text())
    interface.validate()  # raises on a config Label Studio would refuse
    assert [c.name for c in interface.controls] == ["emotion", "event", "language", "text"]
    assert [task["data"]["capture_id"] for task in tasks] == [captures["disputed"].id, captures["angry"].id,
                                                              captures["calm"].id]
    for task in tasks:
        assert Path(task["data"]["audio"]).is_file()
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
    assert [p["model_version"] for p in tasks[0]["predictions"]] == ["clinic", "base"]
    emotions = [next(r["value"]["choices"] for r in p["result"] if r["from_name"] == "emotion")
                for p in tasks[0]["predictions"]]
    assert emotions == [["HAPPY"], ["NEUTRAL"]]
    texts = [next(r["value"]["text"] for r in p["result"] if r["type"] == "textarea") for p in tasks[0]["predictions"]]
    assert texts == [["take the metformin"], ["take the met for min"]]
    # the same check refuses what the config does not allow: it is a real check
    stressed = {"result": [{"from_name": "emotion", "to_name": "audio", "type": "choices",
                            "value": {"choices": ["STRESSED"]}}]}
    assert interface.validate_prediction(stressed, return_errors=True)


def test_audio_url_prefix_and_all(served, tmp_path):
    folder, captures = served
    from tests.review.conftest import review

    review(folder, captures["calm"], text="good morning")
    tasks = export(folder, tmp_path / "t.json", "--audio-url-prefix", "/data/local-files/?d=review/")
    assert [t["data"]["audio"] for t in tasks][-1] == f"/data/local-files/?d=review/{captures['angry'].audio}"
    assert len(tasks) == 2  # the reviewed audio is left out ...
    assert len(export(folder, tmp_path / "t.json", "--all")) == 3  # ... unless --all


def labelstudio_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio's JSON export of a project made from `tasks` looks like after two
    annotators worked: ids, a corrected first task, a cancelled annotation, an untouched task."""
    exported = []
    for number, task in enumerate(tasks, 1):
        exported.append({"id": 100 + number, "data": task["data"], "meta": {}, "project": 7, "inner_id": number,
                         "created_at": "2026-12-10T10:00:00.000000Z", "updated_at": "2026-12-10T11:00:00.000000Z",
                         "annotations": [], "predictions": [1000 + number], "drafts": [], "file_upload": None,
                         "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 1})
    disputed = exported[0]
    disputed["annotations"] = [{
        "id": 501, "task": disputed["id"], "project": 7, "was_cancelled": False, "ground_truth": False,
        "lead_time": 12.4, "result_count": 0, "created_at": "2026-12-10T10:30:00.000000Z",
        "updated_at": "2026-12-10T10:31:00.000000Z", "prediction": {}, "parent_prediction": 1001,
        "completed_by": {"id": 3, "email": "nurse.lee@clinic.example", "first_name": "", "last_name": ""},
        "result": [
            {"id": "e1", "from_name": "emotion", "to_name": "audio", "type": "choices", "origin": "prediction-changed",
             "value": {"choices": ["SAD"]}},
            {"id": "v1", "from_name": "event", "to_name": "audio", "type": "choices", "origin": "prediction",
             "value": {"choices": ["Speech"]}},
            {"id": "l1", "from_name": "language", "to_name": "audio", "type": "choices", "origin": "prediction",
             "value": {"choices": ["en"]}},
            {"id": "t1", "from_name": "text", "to_name": "audio", "type": "textarea", "origin": "manual",
             "value": {"text": ["take the metformin twice a day"]}}]}]
    exported[1]["annotations"] = [{"id": 502, "was_cancelled": True, "completed_by": 4, "result": []}]
    return exported


def test_round_trip_export_annotate_import_manifest(served, tmp_path, capsys):
    folder, captures = served
    tasks = export(folder, tmp_path / "tasks.json")
    edited = labelstudio_export(tasks)
    interface = LabelInterface((tmp_path / "tasks.xml").read_text())
    assert interface.validate_annotation(edited[0]["annotations"][0])
    export_file = tmp_path / "project-7-at-2026-12-10.json"
    export_file.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main(["review", str(folder), "--import-labelstudio", str(export_file)]) == 0
    assert capsys.readouterr().out.strip() == "imported 1 annotations as feedback; 0 already imported, 1 cancelled or empty"
    [record] = read_feedback(folder)
    assert record.id == captures["disputed"].id and record.source == "labelstudio"
    assert record.reviewer == "nurse.lee@clinic.example"
    assert record.labels == {"emotion": "SAD", "event": "Speech", "language": "en",
                             "text": "take the metformin twice a day"}
    assert main(["review", str(folder), "--import-labelstudio", str(export_file)]) == 0  # twice: no new records
    assert "imported 0 annotations as feedback; 1 already imported" in capsys.readouterr().out
    assert len(read_feedback(folder)) == 1

    out = tmp_path / "reviewed.csv"
    assert main(["review", str(folder), "--to-manifest", str(out)]) == 0
    [row] = list(csv.DictReader(out.open()))
    assert row["text"] == "take the metformin twice a day" and row["emotion"] == "SAD"
    assert (row["capture_id"], row["model"], row["reviewer_source"], row["reviewer"]) == \
        (captures["disputed"].id, "clinic", "labelstudio", "nurse.lee@clinic.example")
    assert Path(row["audio"]).read_bytes() == (folder / captures["disputed"].audio).read_bytes()
    # the disputed audio left the queue for both models
    assert [t["data"]["capture_id"] for t in export(folder, tmp_path / "again.json")] == \
        [captures["angry"].id, captures["calm"].id]


def run_error(argv, capsys) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_bad_label_studio_exports_are_one_error_naming_the_task(served, tmp_path, capsys):
    folder, captures = served
    edited = labelstudio_export(export(folder, tmp_path / "tasks.json"))
    bad = tmp_path / "bad.json"

    stressed = json.loads(json.dumps(edited))
    stressed[0]["annotations"][0]["result"][0]["value"]["choices"] = ["STRESSED"]
    bad.write_text(json.dumps(stressed))
    line = run_error(["review", str(folder), "--import-labelstudio", str(bad)], capsys)
    assert line.startswith(f"svlora review: error: {bad}: task 0 (id 101): emotion 'STRESSED' is not in the served")

    unknown = json.loads(json.dumps(edited))
    unknown[2]["data"]["capture_id"] = "cap_1000000000000_deadbeef"
    unknown[2]["annotations"] = edited[0]["annotations"]
    bad.write_text(json.dumps(unknown))
    line = run_error(["review", str(folder), "--import-labelstudio", str(bad)], capsys)
    assert "task 2 (id 103): capture 'cap_1000000000000_deadbeef' is not in" in line
    assert read_feedback(folder) == []  # nothing half-imported: task 0 was fine but is not written

    region = json.loads(json.dumps(edited))
    region[0]["annotations"][0]["result"].append({"from_name": "emotion", "to_name": "audio", "type": "labels",
                                                  "value": {"start": 0, "end": 1, "labels": ["SAD"]}})
    bad.write_text(json.dumps(region))
    assert "task 0 (id 101): result 4 (emotion) is a 'labels'" in run_error(
        ["review", str(folder), "--import-labelstudio", str(bad)], capsys)

    bad.write_text(json.dumps({"tasks": edited}))
    assert "expected a list of tasks" in run_error(["review", str(folder), "--import-labelstudio", str(bad)], capsys)
