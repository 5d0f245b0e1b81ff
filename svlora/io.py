"""Atomic file writes and hashing, so nothing already written is ever half-overwritten."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def require_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` as an existing writable directory (created if needed), or one clear error naming
    it, before any work is done."""
    from svlora.errors import SvloraError

    out = Path(path)
    name = f"{flag}{out}" if flag.endswith("=") else f"{flag} {out}"
    if out.exists() and not out.is_dir():
        raise SvloraError(f"{name} is a file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SvloraError(f"{name}: cannot create it ({error.strerror}); choose another "
                          "directory") from None
    if not os.access(out, os.W_OK):
        raise SvloraError(f"{name} is not writable; choose another directory")
    return out


def staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden directory in `parent` to build output in before an atomic rename; with the
    normal permissions (mkdtemp's are 0700, which would leak into the final output)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_current_umask())
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def finite_json(data: object) -> object:
    """`data` with NaN and ±inf floats as None: strict JSON (json.dumps would write bare NaN,
    which other tools refuse)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def json_line(data: object, **options) -> str:
    return json.dumps(finite_json(data), ensure_ascii=False, allow_nan=False, **options)


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[dict], columns: list[str]) -> None:
    """A header of `columns`, then one line per row (\n line ends), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    write_text_atomic(path, json_line(data, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json_line(r) + "\n" for r in rows))


def sha256_of_files(directory: str | os.PathLike, names: Iterable[str]) -> str:
    """One sha256 over the named files of `directory`, each name and content hash in order:
    the identity of an adapter or a cascade (config and weights alike change outputs)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update(bytes.fromhex(sha256_file(Path(directory) / name)))
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
