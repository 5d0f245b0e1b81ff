"""Label Studio round trip: tasks (one per audio, each model's answer a pre-annotation) and
the labeling config they need out; a project's JSON export back in as Feedback records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from svlora.captures import (Capture, CaptureError, Feedback, allowed_labels, checked_labels,
                             read_capture, read_captures, read_feedback)
from svlora.io import write_json_atomic, write_text_atomic
from svlora.label_schema import KINDS, LabelSchema
from svlora.review.queue import QueueItem, queue_of
from svlora.review.served import Prediction, prediction_of, served_schema

AUDIO_NAME = "audio"     # the config's <Audio> object; every control points at it
TEXT_NAME = "text"       # the <TextArea>
SOURCE = "labelstudio"


def audio_value(folder: Path, capture: Capture, url_prefix: str | None) -> str:
    """The task's audio: a URL under `url_prefix` (which serves DIR), else the file's path."""
    if url_prefix:
        return f"{url_prefix.rstrip('/')}/{capture.audio}"
    return str((folder / capture.audio).resolve())


def choices_result(name: str, value: str) -> dict:
    return {"from_name": name, "to_name": AUDIO_NAME, "type": "choices", "value": {"choices": [value]}}


def prediction_results(prediction: Prediction, fields: dict[str, tuple[str, ...]]) -> list[dict]:
    """A model's answer as Label Studio results: choices per tag and head, textarea for text."""
    results = [choices_result(kind, prediction.tags[kind]) for kind in KINDS
               if prediction.tags[kind] in fields.get(kind, ())]
    results += [choices_result(head, value) for head, value in prediction.heads.items()
                if value in fields.get(head, ())]
    results.append({"from_name": TEXT_NAME, "to_name": AUDIO_NAME, "type": "textarea",
                    "value": {"text": [prediction.text]}})
    return results


def task_of(folder: Path, item: QueueItem, captures: dict[str, Capture],
            fields: dict[str, tuple[str, ...]], url_prefix: str | None) -> dict:
    """One task: the audio and its capture id in `data`, each model's answer a prediction."""
    capture = item.capture
    predictions = []
    for answer in item.answers:
        served = prediction_of(captures[answer.capture_id])
        predictions.append({"model_version": answer.model, "score": round(served.top("emotion") or 0.0, 4),
                            "result": prediction_results(served, fields)})
    return {"data": {AUDIO_NAME: audio_value(folder, capture, url_prefix), "capture_id": capture.id,
                     "model": capture.model, "why": "; ".join(item.why)},
            "predictions": predictions}


def label_fields(schemas: list[LabelSchema]) -> dict[str, tuple[str, ...]]:
    """Every field's choices over the schemas (in first-seen order): one config per project."""
    fields: dict[str, list[str]] = {}
    for schema in schemas:
        for name, values in allowed_labels(schema).items():
            merged = fields.setdefault(name, [])
            merged += [v for v in values if v not in merged]
    return {name: tuple(values) for name, values in fields.items()}


def labeling_config(fields: dict[str, tuple[str, ...]]) -> str:
    """The project's labeling config: the clip, a choice per tag and head, the transcript."""
    lines = ["<View>", '  <Header value="$capture_id ($model)"/>',
             f'  <Audio name="{AUDIO_NAME}" value="$audio"/>']
    for name, values in fields.items():
        lines += [f"  <Header value={quoteattr(name)}/>",
                  f'  <Choices name={quoteattr(name)} toName="{AUDIO_NAME}" choice="single" '
                  f'showInline="true">',
                  *(f"    <Choice value={quoteattr(value)}/>" for value in values),
                  "  </Choices>"]
    lines += ['  <Header value="text"/>',
              f'  <TextArea name="{TEXT_NAME}" toName="{AUDIO_NAME}" rows="3" editable="true" '
              'maxSubmissions="1"/>', "</View>"]
    return "\n".join(lines) + "\n"


def config_path(tasks_path: Path) -> Path:
    """Where the labeling config goes: beside the tasks, as tasks.xml for tasks.json."""
    return tasks_path.with_suffix(".xml")


def export_tasks(folder: Path, out: Path, fallback: LabelSchema, include_reviewed: bool = False,
                 url_prefix: str | None = None) -> list[dict]:
    """Write `out` (the tasks, most informative first) and its labeling config beside it."""
    if out.suffix.lower() == ".xml":
        raise CaptureError(f"--export-labelstudio {out}: name the tasks file (e.g. tasks.json); "
                           "the labeling config is written beside it as .xml")
    captures = read_captures(folder)
    by_id = {c.id: c for c in captures}
    items = queue_of(captures, {f.id for f in read_feedback(folder)}, include_reviewed)
    schemas = [served_schema(by_id[a.capture_id], fallback) for item in items for a in item.answers]
    fields = label_fields(schemas or [fallback])
    tasks = [task_of(folder, item, by_id, fields, url_prefix) for item in items]
    write_json_atomic(out, tasks)
    write_text_atomic(config_path(out), labeling_config(fields))
    return tasks


@dataclass
class Imported:
    feedback: list[Feedback]   # new records, in the export's order
    repeated: int = 0          # annotations already in feedback.jsonl (an export imported twice)
    skipped: int = 0           # cancelled or empty annotations


def read_export(path: Path) -> list:
    if not path.is_file():
        raise CaptureError(f"--import-labelstudio {path}: file not found")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CaptureError(f"{path}: not JSON ({error}); export the project as JSON "
                           "(Export → JSON)") from None
    if not isinstance(tasks, list):
        raise CaptureError(f"{path}: expected a list of tasks (Label Studio's JSON export, not "
                           "JSON-MIN or CSV)")
    return tasks


def annotation_labels(annotation: dict, where: str) -> dict:
    """{field: value} of one annotation's result (choices → the one choice, textarea → text)."""
    labels = {}
    for number, region in enumerate(annotation.get("result") or []):
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise CaptureError(f"{where}: result {number} is not a Label Studio region "
                               "({from_name, type, value}); export the project as JSON")
        name, value = region.get("from_name"), region["value"]
        if region.get("type") == "choices" and isinstance(value.get("choices"), list):
            if len(value["choices"]) != 1:
                raise CaptureError(f"{where}: result {number} ({name}): one choice expected, got "
                                   f"{len(value['choices'])}")
            labels[name] = value["choices"][0]
        elif region.get("type") == "textarea" and isinstance(value.get("text"), list):
            labels[name] = " ".join(str(t).strip() for t in value["text"] if str(t).strip())
        else:
            raise CaptureError(f"{where}: result {number} ({name}) is a {region.get('type')!r}; "
                               "use the labeling config that --export-labelstudio wrote")
    return labels


def annotator(annotation: dict) -> str | None:
    """The annotator: its email (newer exports give completed_by as a user object, some an
    id beside created_username 'EMAIL, ID'), else its id."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or (str(who["id"]) if "id" in who else None)
    named = str(annotation.get("created_username") or "").split(",")[0].strip()
    return named or (str(who) if who is not None else None)


def feedback_key(record: Feedback) -> tuple:
    """What makes two feedback records the same annotation (an export imported twice)."""
    return record.id, json.dumps(record.labels, sort_keys=True), record.source, record.reviewer


def import_export(folder: Path, path: Path, fallback: LabelSchema) -> Imported:
    """Feedback records from a Label Studio JSON export, every one checked (capture exists,
    labels in its served schema) before any is written; one error names the task index."""
    existing = {feedback_key(f) for f in read_feedback(folder)}
    imported = Imported([])
    for index, task in enumerate(read_export(path)):
        where = f"{path}: task {index}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        capture_id = (task.get("data") or {}).get("capture_id") if isinstance(task, dict) else None
        if not isinstance(capture_id, str):
            raise CaptureError(f"{where}: no data.capture_id; import tasks made by "
                               "--export-labelstudio")
        capture = read_capture(folder, capture_id)
        if capture is None:
            raise CaptureError(f"{where}: capture {capture_id[:40]!r} is not in {folder}; import "
                               "into the capture folder its tasks were exported from")
        schema = served_schema(capture, fallback)
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict):
                raise CaptureError(f"{where}: an annotation is not an object; export the project as JSON")
            if annotation.get("was_cancelled") or not annotation.get("result"):
                imported.skipped += 1
                continue
            labels = checked_labels(annotation_labels(annotation, where), schema, where)
            record = Feedback(capture_id, labels, source=SOURCE, reviewer=annotator(annotation))
            if feedback_key(record) in existing:
                imported.repeated += 1
                continue
            existing.add(feedback_key(record))
            imported.feedback.append(record)
    return imported
