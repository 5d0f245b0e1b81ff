"""`svlora review DIR --ui`: a Gradio page that walks the review queue — play the clip, see
the prediction and its probabilities, correct the labels, save — writing the same Feedback
records as the server's feedback API (source "ui"), checked against the served schema."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from svlora.captures import (AUDIO, Capture, Feedback, allowed_labels, append_feedback, checked_labels,
                             read_capture, read_captures, read_feedback)
from svlora.errors import SvloraError
from svlora.label_schema import KINDS, LabelSchema
from svlora.review.queue import build_queue, reviewed_audio
from svlora.review.served import prediction_of, served_schema

SOURCE = "ui"


@dataclass
class PageItem:
    """What the page shows of one queue entry."""

    capture: Capture
    schema: LabelSchema
    header: str
    why: str


def page_item(folder: Path, capture_id: str, position: int, total: int,
              fallback: LabelSchema, why: str) -> PageItem | None:
    capture = read_capture(folder, capture_id)
    if capture is None:  # evicted by the size cap since the queue was read
        return None
    header = (f"**{position + 1} of {total}** · `{capture.id}` · model `{capture.model}` · "
              f"{capture.seconds:.1f} s · {capture.time[:19].replace('T', ' ')}")
    return PageItem(capture, served_schema(capture, fallback), header, why)


def labels_from_form(schema: LabelSchema, text: str, tags: dict[str, str | None],
                     heads: dict[str, str | None]) -> dict:
    """The form's values as feedback labels: every field shown is confirmed by saving; an
    empty text box or head left blank gives no label for it."""
    labels = {kind: value for kind, value in tags.items() if value}
    labels.update({head: value for head, value in heads.items() if value and head in schema.heads})
    if text and text.strip():
        labels["text"] = text.strip()
    return labels


def save_review(folder: Path, item: PageItem, labels: dict, reviewer: str | None) -> Feedback:
    checked = checked_labels(labels, item.schema, f"capture {item.capture.id}")
    record = Feedback(item.capture.id, checked, source=SOURCE, reviewer=(reviewer or "").strip() or None)
    append_feedback(folder, record)
    return record


def next_unreviewed(folder: Path, ids: list[str], position: int) -> int:
    """The first position from `position` whose capture is still in the folder and whose audio
    has no feedback yet (another reviewer or the API may have labelled it since the queue was
    read); len(ids) when none is left. The folder is read once per call."""
    captures = {c.id: c for c in read_captures(folder)}
    done = reviewed_audio(list(captures.values()), {f.id for f in read_feedback(folder)})
    while position < len(ids) and (ids[position] not in captures
                                   or captures[ids[position]].audio_sha256 in done):
        position += 1
    return position


def all_heads(folder: Path, fallback: LabelSchema) -> dict[str, tuple[str, ...]]:
    heads = dict(fallback.heads)
    for capture in read_captures(folder):
        for name, values in served_schema(capture, fallback).heads.items():
            heads.setdefault(name, values)
    return heads


def build_page(folder: Path, fallback: LabelSchema):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    heads = all_heads(folder, fallback)
    with gr.Blocks(title="svlora review") as page:
        gr.Markdown(f"# svlora review\n`{folder}`: unreviewed clips, the most informative first "
                    "(models that disagree, then low confidence). Saving confirms every field shown.")
        header = gr.Markdown(elem_id="item-header")
        why = gr.Markdown(elem_id="item-why")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(type="filepath", label="clip", interactive=False, elem_id="clip")
                predicted = gr.Textbox(label="prediction", interactive=False, elem_id="prediction")
                emotion_probs = gr.Label(label="emotion probabilities", num_top_classes=5,
                                         elem_id="emotion-probs")
            with gr.Column():
                text = gr.Textbox(label="text", lines=3, elem_id="text")
                tag_inputs = {kind: gr.Dropdown(choices=[], label=kind, elem_id=kind) for kind in KINDS}
                head_inputs = {name: gr.Dropdown(choices=["", *values], value="", label=name,
                                                 elem_id=f"head-{name}") for name, values in heads.items()}
                reviewer = gr.Textbox(label="reviewer (optional)", elem_id="reviewer")
                with gr.Row():
                    save = gr.Button("Save and next", variant="primary", elem_id="save")
                    skip = gr.Button("Skip", elem_id="skip")
                status = gr.Markdown(elem_id="status")
        state = gr.State()
        item_outputs = [header, why, audio, predicted, emotion_probs, text, *tag_inputs.values(),
                        *head_inputs.values()]

        def show(queue: dict) -> list:
            """Advance to the first entry still unreviewed and fill the page with it."""
            ids = queue["ids"]
            position = queue["position"] = next_unreviewed(folder, ids, queue["position"])
            item = page_item(folder, ids[position], position, len(ids), fallback,
                             queue["why"][position]) if position < len(ids) else None
            if item is None:
                done = "**Nothing left to review.** Export with `svlora review DIR --to-manifest OUT.csv`."
                return [done, "", None, "", None, gr.update(value="", interactive=False),
                        *(gr.update(choices=[], value=None, interactive=False) for _ in tag_inputs),
                        *(gr.update(visible=False) for _ in head_inputs)]
            queue["current"] = item
            prediction = prediction_of(item.capture)
            allowed = allowed_labels(item.schema)
            summary = " · ".join(f"{kind} {prediction.tags[kind] or '-'}" for kind in KINDS)
            heads_said = "".join(f" · {h} {v}" for h, v in prediction.heads.items())
            return [item.header, item.why, str(folder / item.capture.audio),
                    f"{summary}{heads_said}\n{prediction.text}", prediction.probs.get("emotion") or None,
                    gr.update(value=prediction.text, interactive=True),
                    *(gr.update(choices=list(allowed[kind]), interactive=True,
                                value=prediction.tags[kind] if prediction.tags[kind] in allowed[kind] else None)
                      for kind in tag_inputs),
                    *(gr.update(visible=name in item.schema.heads, choices=["", *allowed.get(name, ())],
                                value=prediction.heads.get(name, "")) for name in head_inputs)]

        def start():
            items = build_queue(folder)
            queue = {"ids": [i.capture.id for i in items], "why": ["; ".join(i.why) for i in items],
                     "position": 0}
            return [queue, *show(queue), ""]

        def on_save(queue, text_value, reviewer_value, *values):
            item = queue.get("current") if queue else None
            if item is None or queue["position"] >= len(queue["ids"]):
                raise gr.Error("nothing to save: the queue is done")
            tags = dict(zip(tag_inputs, values[:len(tag_inputs)]))
            head_values = dict(zip(head_inputs, values[len(tag_inputs):]))
            try:
                record = save_review(folder, item, labels_from_form(item.schema, text_value, tags, head_values),
                                     reviewer_value)
            except SvloraError as error:
                raise gr.Error(str(error)) from None
            except OSError as error:  # a full disk, a vanished folder: not saved, and said so
                raise gr.Error(f"not saved: {error.filename or folder}: {error.strerror or error}; "
                               "free space (or restore the folder) and save again") from None
            queue["position"] += 1
            saved = ", ".join(f"{k} {v!r}" if k == "text" else f"{k} {v}" for k, v in record.labels.items())
            return [queue, *show(queue), f"saved `{record.id}`: {saved}"]

        def on_skip(queue):
            queue["position"] += 1
            return [queue, *show(queue), ""]

        page.load(start, outputs=[state, *item_outputs, status])
        save.click(on_save, inputs=[state, text, reviewer, *tag_inputs.values(), *head_inputs.values()],
                   outputs=[state, *item_outputs, status])
        skip.click(on_skip, inputs=[state], outputs=[state, *item_outputs, status])
    return page


def launch_page(folder: Path, fallback: LabelSchema, host: str = "127.0.0.1", port: int = 7861) -> None:
    build_page(folder, fallback).launch(server_name=host, server_port=port, share=False,
                                        show_error=True, allowed_paths=[str((folder / AUDIO).resolve())])
