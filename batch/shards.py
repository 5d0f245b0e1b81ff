"""Deterministic shards of a batch job and their files: shard k holds inputs
[k·size, (k+1)·size) in input order, is written whole to a temp file and renamed into place
(a shard file is complete or absent), and `_manifest.json` ties an output folder to one job
(inputs, model, options), so a rerun resumes that job and never mixes in another."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from svlora.errors import SvloraError
from svlora.io import write_json_atomic

MANIFEST = "_manifest.json"
FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class Shard:
    index: int
    paths: tuple[str, ...]

    def file(self, out: Path, fmt: str) -> Path:
        return out / f"shard-{self.index:05d}.{fmt}"


def plan_shards(paths: list[str], size: int) -> list[Shard]:
    if size < 1:
        raise SvloraError(f"--shard-size {size}: at least 1 file per shard")
    return [Shard(k, tuple(paths[start:start + size])) for k, start in enumerate(range(0, len(paths), size))]


def job_identity(paths: list[str], settings: dict) -> str:
    """sha256 of the inputs (in order) and everything that shapes a record."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(path.encode() + b"\0")
    return digest.hexdigest()


def claim_output(out: Path, identity: str, fresh: dict) -> dict:
    """The folder's manifest: a new one, or the earlier run's of the same job (resumed);
    another job's → SvloraError (never mix two jobs' shards)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if earlier.get("job_sha256") != identity:
            raise SvloraError(f"{out} holds another batch job (other inputs, model or options: "
                              f"{path}); use a new --out, or delete that folder to start over")
        return earlier
    write_json_atomic(path, fresh)
    return fresh


def shard_records(path: Path, fmt: str) -> list[dict]:
    """A shard file's records (each a `transcribe --json` record, or {path, error})."""
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    import pyarrow.parquet as pq

    return [json.loads(row) for row in pq.read_table(path, columns=["record"]).column("record").to_pylist()]


def write_shard(path: Path, records: list[dict], fmt: str) -> None:
    """The shard's records, all at once: a temp file renamed into place."""
    temp = path.with_name(f".{path.name}.tmp")
    if fmt == "jsonl":
        temp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = ("path", "text", "raw", "language", "emotion", "event", "error")
        table = pa.table({**{c: [r.get(c) for r in records] for c in columns},
                          "record": [json.dumps(r, ensure_ascii=False) for r in records]})
        pq.write_table(table, temp)
    with open(temp, "rb+") as handle:  # on disk before it is visible under its name
        import os

        os.fsync(handle.fileno())
    temp.replace(path)


def finished(shards: list[Shard], out: Path, fmt: str) -> set[int]:
    """Shards whose file is in place (complete by construction: renamed when whole)."""
    return {shard.index for shard in shards if shard.file(out, fmt).is_file()}
