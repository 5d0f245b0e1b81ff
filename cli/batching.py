"""`svlora batch`: archives transcribed on Ray (svlora.batch), resumable and exactly once."""

from __future__ import annotations

import json

from svlora.cli.common import add_hotword_args, add_model_args


def register(commands) -> None:
    batch = commands.add_parser("batch", help="transcribe a folder, manifest or path list on Ray "
                                "(sharded, resumable; pip install 'svlora[ray]')")
    batch.add_argument("input", help="a folder (recursive, audio by content), a .jsonl manifest "
                       "(its `source` paths) or a text file of paths (one per line)")
    batch.add_argument("--out", required=True, help="folder of shard files and _manifest.json")
    add_model_args(batch, device="cpu")
    batch.add_argument("--adapter")
    batch.add_argument("--rules", help="a rules file (or a shipped example) applied to every output")
    batch.add_argument("--cascade", help="a cascade dir re-deciding the emotion")
    add_hotword_args(batch)
    batch.add_argument("--language", default="auto")
    batch.add_argument("--timestamps", action="store_true", help="word start/end seconds in each record")
    batch.add_argument("--max-seconds", type=float, help="longer files become error records")
    batch.add_argument("--workers", type=int, default=1, help="Ray actors, one model each")
    batch.add_argument("--gpus-per-worker", type=float, default=0.0)
    batch.add_argument("--ray", metavar="auto|ADDRESS",
                       help="join a running cluster (auto: the one `ray start` made here); "
                       "default: a local Ray on this machine")
    batch.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    batch.add_argument("--shard-size", type=int, default=64, help="files per shard (the unit of resume)")
    batch.add_argument("--fail-fast", action="store_true",
                       help="stop at the first unreadable file (default: an error record, go on)")
    batch.set_defaults(handler=run_batch_command)


def run_batch_command(args) -> int:
    from svlora.batch import BatchOptions, run_batch

    manifest = run_batch(BatchOptions(
        input=args.input, out=args.out, model=args.model, adapter=args.adapter, rules=args.rules,
        cascade=args.cascade, hotwords=args.hotwords, language=args.language,
        timestamps=args.timestamps, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        ray=args.ray, format=args.format, shard_size=args.shard_size, fail_fast=args.fail_fast,
        max_seconds=args.max_seconds,
        extra={"hub": args.hub, "device": args.device, "allow_base_mismatch": args.allow_base_mismatch,
               "trust_remote_code": args.trust_remote_code, "hotword_score": args.hotword_score,
               "beam": args.beam}))
    print(json.dumps({k: manifest[k] for k in ("status", "inputs", "shards", "shards_done", "records", "errors")}))
    if manifest["errors"]:
        first = manifest["failures"][0]
        print(f"{manifest['errors']} file(s) could not be transcribed (error records in the shards), "
              f"e.g. {first['path']}: {first['error']}")
    return 1 if manifest["errors"] else 0
