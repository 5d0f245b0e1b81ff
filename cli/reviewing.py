"""`svlora review DIR`: what `svlora serve --capture DIR` kept, reviewed (svlora.review) — the
queue, a review page, the Label Studio round trip, and a CSV for `svlora prepare`."""

from __future__ import annotations

import json
from pathlib import Path

from svlora.errors import SvloraError

ACTIONS = ("queue", "ui", "export_labelstudio", "import_labelstudio", "to_manifest")


def register(commands) -> None:
    review = commands.add_parser("review", help="review a capture folder: queue, page, Label "
                                 "Studio round trip, a CSV for prepare")
    review.add_argument("dir", help="the folder `svlora serve --capture DIR` writes")
    action = review.add_mutually_exclusive_group(required=True)
    action.add_argument("--queue", action="store_true", help="unreviewed clips, the most "
                        "informative first (models disagreeing, then low confidence), stratified "
                        "over (model, predicted emotion)")
    action.add_argument("--ui", action="store_true", help="a Gradio page that walks the queue and "
                        "saves corrections as feedback (pip install 'svlora[demo]')")
    action.add_argument("--export-labelstudio", metavar="TASKS.json", help="Label Studio tasks with "
                        "each model's answer as pre-annotations, and the labeling config beside them "
                        "(TASKS.xml)")
    action.add_argument("--import-labelstudio", metavar="EXPORT.json", help="a Label Studio JSON "
                        "export: its annotations become feedback (source labelstudio)")
    action.add_argument("--to-manifest", metavar="OUT.csv", help="reviewed clips as a CSV that "
                        "`svlora prepare --format csv` reads")
    review.add_argument("--labels", metavar="LABELS", help="the served model's label schema "
                        "(labels.json or labels.yaml) for captures that do not record one; "
                        "default: SenseVoice's")
    review.add_argument("--json", action="store_true", help="--queue: one JSON object per line")
    review.add_argument("--limit", type=int, help="--queue: at most this many")
    review.add_argument("--host", default="127.0.0.1", help="--ui: the address to listen on")
    review.add_argument("--port", type=int, default=7861, help="--ui: the port")
    review.add_argument("--all", action="store_true", help="--export-labelstudio: reviewed clips too")
    review.add_argument("--audio-url-prefix", metavar="URL", help="--export-labelstudio: a URL that "
                        "serves DIR (each task's audio: URL/audio/<id>.<ext>); default: file paths")
    review.add_argument("--exclude", metavar="MANIFEST", nargs="+", default=[],
                        help="--to-manifest: drop clips whose audio these manifests already use")
    review.add_argument("--keep-model-text", action="store_true", help="--to-manifest: a clip "
                        "reviewed without text takes the served text (default: left out)")
    review.add_argument("--keep-model-tags", action="store_true", help="--to-manifest: emotion, "
                        "event, language and heads nobody reviewed take the prediction "
                        "(default: empty cells)")
    review.set_defaults(handler=run_review)


def checked_options(args) -> None:
    """Flags that belong to another action are a mistake, not something to ignore."""
    owners = {"json": "queue", "limit": "queue", "all": "export_labelstudio",
              "audio_url_prefix": "export_labelstudio", "exclude": "to_manifest",
              "keep_model_text": "to_manifest", "keep_model_tags": "to_manifest"}
    chosen = next(name for name in ACTIONS if getattr(args, name))
    for option, owner in owners.items():
        if getattr(args, option) and owner != chosen:
            raise SvloraError(f"--{option.replace('_', '-')} goes with --{owner.replace('_', '-')}")
    if args.limit is not None and args.limit < 1:
        raise SvloraError(f"--limit {args.limit}: give a positive number")
    for flag, path, example in (("--to-manifest", args.to_manifest, "reviewed.csv"),
                                ("--export-labelstudio", args.export_labelstudio, "tasks.json")):
        if path and Path(path).is_dir():
            raise SvloraError(f"{flag} {path} is a directory; give a file path such as {Path(path) / example}")


def queue_table(items) -> str:
    from svlora.review.queue import shorten

    header = f"{'id':27}  {'model':14}  {'prediction':40}  {'score':>5}  why"
    lines = [header]
    for item in items:
        p = item.prediction
        said = f"{p.tags['emotion'] or '-'}/{p.tags['event'] or '-'}/{p.tags['language'] or '-'} {p.text}"
        lines.append(f"{item.capture.id:27}  {shorten(item.capture.model, 14):14}  "
                     f"{shorten(said, 40):40}  {item.score:5.2f}  {'; '.join(item.why)}")
    return "\n".join(lines)


def run_review(args) -> int:
    from svlora.captures import require_capture_dir
    from svlora.label_schema import DEFAULT_SCHEMA, load_schema

    checked_options(args)
    folder = require_capture_dir(args.dir)
    fallback = load_schema(args.labels) if args.labels else DEFAULT_SCHEMA
    if args.queue:
        from svlora.review import build_queue

        items = build_queue(folder)[:args.limit]
        if args.json:
            for item in items:
                print(json.dumps(item.to_dict(), ensure_ascii=False))
        else:
            print(queue_table(items) if items else f"{folder}: nothing left to review")
    elif args.ui:
        import importlib.util

        if importlib.util.find_spec("gradio") is None:
            raise SvloraError("--ui needs gradio: pip install 'svlora[demo]'")
        from svlora.review.page import launch_page

        launch_page(folder, fallback, host=args.host, port=args.port)
    elif args.export_labelstudio:
        from svlora.review.labelstudio import config_path, export_tasks

        out = Path(args.export_labelstudio)
        tasks = export_tasks(folder, out, fallback, include_reviewed=args.all,
                             url_prefix=args.audio_url_prefix)
        print(f"wrote {out}: {len(tasks)} tasks; labeling config {config_path(out)} (Label Studio: "
              "create a project with it, then import the tasks)")
    elif args.import_labelstudio:
        from svlora.captures import append_feedback
        from svlora.review import import_export

        imported = import_export(folder, Path(args.import_labelstudio), fallback)
        for record in imported.feedback:
            append_feedback(folder, record)
        print(f"imported {len(imported.feedback)} annotations as feedback; "
              f"{imported.repeated} already imported, {imported.skipped} cancelled or empty")
    else:
        from svlora.review import write_review_manifest

        counts = write_review_manifest(folder, Path(args.to_manifest), fallback,
                                       [Path(p) for p in args.exclude],
                                       keep_model_text=args.keep_model_text,
                                       keep_model_tags=args.keep_model_tags)
        print("\n".join(counts.lines(Path(args.to_manifest))))
    return 0
