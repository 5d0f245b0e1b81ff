"""`svlora batch` on Ray Data: the pending shards as a dataset, one callable-class worker per
actor holding one model built as `load_model` builds it (adapter, rules, cascade, hotwords),
each worker transcribing a shard (long files cut at pauses, as transcribe does; an unreadable
file becomes an error record) and writing its file atomically; the driver shows progress and
writes the job's manifest. Without --ray a local Ray starts on this machine's cores and GPUs."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from svlora.batch.inputs import list_inputs
from svlora.batch.shards import (FORMATS, MANIFEST, claim_output, finished, job_identity, plan_shards,
                                 write_shard)
from svlora.cluster import start_ray
from svlora.errors import SvloraError
from svlora.io import write_json_atomic


@dataclass
class BatchOptions:
    input: str
    out: str
    model: str
    adapter: str | None = None
    rules: str | None = None
    cascade: str | None = None
    hotwords: str | None = None
    language: str = "auto"
    itn: str = "woitn"
    timestamps: bool = False
    workers: int = 1
    gpus_per_worker: float = 0.0
    ray: str | None = None          # None: a local Ray; "auto" or an address: join that cluster
    format: str = "jsonl"
    shard_size: int = 64
    fail_fast: bool = False
    max_seconds: float | None = None  # files longer than this become error records
    extra: dict = field(default_factory=dict)  # load_model's other keywords (hub, device, ...)


class ShardWorker:
    """One model per Ray actor; called with a batch of shards, writes each shard's file."""

    def __init__(self, model_kwargs: dict, decode_kwargs: dict, out: str, fmt: str, threads: int,
                 fail_fast: bool):
        import torch

        from svlora.adapters import load_model

        torch.set_num_threads(max(1, threads))
        self.runtime = load_model(**model_kwargs)
        self.decode_kwargs, self.out, self.fmt, self.fail_fast = decode_kwargs, Path(out), fmt, fail_fast

    def __call__(self, batch: dict) -> dict:
        import soundfile as sf

        from svlora.batch.shards import Shard

        done = {"shard": [], "files": [], "errors": [], "audio_seconds": [], "first_error": []}
        for index, paths in zip(batch["shard"], batch["paths"]):
            shard = Shard(int(index), tuple(str(p) for p in paths))
            records = list(self.runtime.iter_transcribe(list(shard.paths), keep_going=True, **self.decode_kwargs))
            errors = [r for r in records if "error" in r]
            if errors and self.fail_fast:
                raise SvloraError(f"--fail-fast: {errors[0]['path']}: {errors[0]['error']}")
            write_shard(shard.file(self.out, self.fmt), records, self.fmt)
            seconds = 0.0
            for record in records:
                if "error" not in record:
                    seconds += sf.info(record["path"]).duration
            done["shard"].append(shard.index)
            done["files"].append(len(records))
            done["errors"].append(len(errors))
            done["audio_seconds"].append(seconds)
            done["first_error"].append(f"{errors[0]['path']}: {errors[0]['error']}" if errors else "")
        return done


def job_settings(options: BatchOptions) -> dict:
    """What shapes a record (hashes, not just paths, where a file can change under its name)."""
    from svlora.adapter_format import adapter_identity
    from svlora.io import sha256_file
    from svlora.model import weights_sha256

    model = Path(options.model)
    return {"model": options.model,
            "model_sha256": weights_sha256(model) if model.is_dir() else None,
            "adapter": options.adapter, "adapter_sha256": adapter_identity(options.adapter) if options.adapter else None,
            "rules_sha256": sha256_file(options.rules) if options.rules and Path(options.rules).is_file() else options.rules,
            "cascade": options.cascade, "hotwords_sha256": sha256_file(options.hotwords) if options.hotwords else None,
            "language": options.language, "itn": options.itn, "timestamps": options.timestamps,
            "max_seconds": options.max_seconds, "format": options.format, "shard_size": options.shard_size,
            **{k: v for k, v in options.extra.items() if k != "device"}}


def run_batch(options: BatchOptions, progress: bool = True) -> dict:
    """Transcribe every input into OUT's shards (skipping shards an earlier run finished);
    returns (and writes) the job's manifest."""
    if options.format not in FORMATS:
        raise SvloraError(f"--format {options.format!r}: use one of {', '.join(FORMATS)}")
    if options.workers < 1:
        raise SvloraError(f"--workers {options.workers}: at least 1")
    inputs = list_inputs(options.input)
    shards = plan_shards(inputs.paths, options.shard_size)
    settings = job_settings(options)
    identity = job_identity(inputs.paths, settings)
    out = Path(options.out)
    manifest = claim_output(out, identity, {
        "job_sha256": identity, "input": inputs.source, "inputs": len(inputs.paths),
        "skipped_not_audio": inputs.skipped, "shards": len(shards), "settings": settings,
        "options": {k: v for k, v in asdict(options).items() if k != "extra"}, "status": "running"})
    todo = [s for s in shards if s.index not in finished(shards, out, options.format)]
    for stale in out.glob(".shard-*.tmp"):  # a write a killed run left half done
        stale.unlink()
    if todo:
        run_shards(options, todo, out, progress)
    return write_manifest(out, manifest, shards, options.format)


def run_shards(options: BatchOptions, todo: list, out: Path, progress: bool) -> None:
    from tqdm import tqdm

    ray = start_ray(options.ray)
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours: files/s, audio hours per hour, ETA
        cpus = max(1, (os.cpu_count() or 1) // options.workers) if options.ray is None else 1
        device = "cuda" if options.gpus_per_worker > 0 else options.extra.get("device", "cpu")
        model_kwargs = {"model": options.model, "adapter": options.adapter, "rules": options.rules,
                        "cascade": options.cascade, "hotwords": options.hotwords,
                        **options.extra, "device": device}
        decode_kwargs = {"language": options.language, "itn": options.itn, "timestamps": options.timestamps,
                         "max_file_seconds": options.max_seconds}
        dataset = ray.data.from_items([{"shard": s.index, "paths": list(s.paths)} for s in todo],
                                      override_num_blocks=len(todo))
        results = dataset.map_batches(
            ShardWorker, batch_size=1, concurrency=options.workers, num_cpus=cpus,
            num_gpus=options.gpus_per_worker or None,
            fn_constructor_kwargs={"model_kwargs": model_kwargs, "decode_kwargs": decode_kwargs,
                                   "out": str(out.resolve()), "fmt": options.format, "threads": cpus,
                                   "fail_fast": options.fail_fast})
        total = sum(len(s.paths) for s in todo)
        started, audio = time.perf_counter(), 0.0
        bar = tqdm(total=total, desc="batch", unit="file", disable=not progress)
        try:
            for row in results.iter_rows():
                audio += row["audio_seconds"]
                bar.update(row["files"])
                hours = (time.perf_counter() - started) / 3600
                bar.set_postfix_str(f"{audio / 3600 / hours:.1f} audio-h/h" if hours else "")
        except Exception as error:  # a worker's failure, wrapped by Ray: one line, the cause's
            raise SvloraError(worker_failure(error)) from None
        finally:
            bar.close()
    finally:
        ray.shutdown()


def worker_failure(error: Exception) -> str:
    """The reason inside a Ray task error (an SvloraError's message when a worker raised one);
    the shards finished before it stay, and a rerun resumes after them."""
    import re

    text = str(error)
    ours = re.findall(r"SvloraError: ([^\n]+)", text)
    reason = ours[-1] if ours else next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"{reason} (finished shards are kept: the same command resumes)"


def write_manifest(out: Path, manifest: dict, shards: list, fmt: str) -> dict:
    """Counts read back from the shard files themselves: what is on disk, not what was hoped."""
    from svlora.batch.shards import shard_records

    done = finished(shards, out, fmt)
    records = errors = 0
    failures = []
    for shard in shards:
        if shard.index in done:
            for record in shard_records(shard.file(out, fmt), fmt):
                records += 1
                if "error" in record:
                    errors += 1
                    if len(failures) < 100:
                        failures.append({"path": record["path"], "error": record["error"]})
    manifest = {**manifest, "status": "complete" if len(done) == len(shards) else "incomplete",
                "shards_done": len(done), "records": records, "errors": errors, "failures": failures,
                "files": sorted(shard.file(out, fmt).name for shard in shards if shard.index in done)}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
