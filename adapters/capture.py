"""`svlora serve --capture DIR`: sampled requests handed off the request path to one writer
thread that stores them in the capture folder (svlora.captures), its size capped by dropping
the oldest; the queue between them is bounded and a full one drops, never waits."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import random
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from svlora.captures import (AUDIO, CAPTURES, Capture, CaptureError, evict_oldest, folder_bytes,
                             read_capture, require_capture_dir, utc_now, write_capture)

OUTCOMES = ("written", "dropped", "error")
EVICT_TO = 0.9        # past the cap, evict down to this share of it (not one capture at a time)
FEEDBACK_MAX_BYTES = 64 * 2**10
MAX_REVIEWER_CHARS = 200
log = logging.getLogger("svlora.capture")


@dataclass
class PendingCapture:
    """A request to keep, as the request path hands it over; hashing the audio, naming its
    file and keeping the folder under its cap are the writer's work."""

    id: str
    model: str
    kind: str
    hashes: dict
    seconds: float
    response: dict
    audio: bytes | Callable[[], bytes]  # a realtime turn's WAV is encoded by the writer
    extension: str
    endpoint: str = "transcriptions"
    language: str = "auto"
    time: str = field(default_factory=utc_now)


def as_capture(pending: PendingCapture, audio: bytes) -> Capture:
    return Capture(pending.id, pending.time, pending.model, pending.kind, pending.hashes,
                   f"{AUDIO}/{pending.id}.{pending.extension}", hashlib.sha256(audio).hexdigest(),
                   round(pending.seconds, 3), pending.response, pending.endpoint, pending.language)


def stored_response(result: dict) -> dict:
    """A result as a capture keeps it: without the server's temp file path and a cascade's
    pooled encoder vector (hundreds of floats that no reviewer reads)."""
    kept = {k: v for k, v in result.items() if k not in ("path", "pooled")}
    if "segments" in kept:
        kept["segments"] = [{k: v for k, v in s.items() if k != "pooled"} for s in kept["segments"]]
    return kept


def audio_extension(filename: str | None) -> str:
    """The upload's extension when it is a plain one (the bytes are kept as sent), else bin."""
    suffix = Path(filename or "").suffix[1:].lower()
    return suffix if re.fullmatch(r"[a-z0-9]{1,8}", suffix) else "bin"


def wav_bytes(samples, rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def store(folder: Path, max_bytes: int, pending: PendingCapture, used: int) -> tuple[str, int]:
    """Write one capture, first evicting the oldest when it would pass `max_bytes`. `used` is
    the folder's size as the writer last knew it (listing a 10 GB folder per request is slow);
    returns the outcome and the new size."""
    if not (folder / CAPTURES).is_dir() or not (folder / AUDIO).is_dir():
        raise CaptureError(f"--capture {folder}: the folder (or its {CAPTURES}/, {AUDIO}/) is "
                           "gone; recreate it or restart svlora serve")
    audio = pending.audio() if callable(pending.audio) else pending.audio
    capture = as_capture(pending, audio)
    incoming = len(audio) + len(json.dumps(asdict(capture), ensure_ascii=False).encode())
    if incoming > max_bytes:
        return "dropped", used
    if used + incoming > max_bytes:
        evict_oldest(folder, int(max_bytes * EVICT_TO), incoming)
        used = folder_bytes(folder)
    try:
        write_capture(folder, capture, audio)
    except BaseException:  # e.g. the disk filled between audio and record: no orphan audio
        (folder / capture.audio).unlink(missing_ok=True)
        raise
    return "written", used + incoming


def require_writable_capture_dir(folder: str) -> Path:
    """The --capture folder created and proven writable by a probe file (os.access says yes
    to root on a read-only mount), or CaptureError in one line."""
    path = require_capture_dir(folder, create=True)
    try:
        with tempfile.NamedTemporaryFile(dir=path / CAPTURES, prefix=".probe."):
            pass
    except OSError as error:
        raise CaptureError(f"--capture {path}: cannot write in it ({error.strerror}); choose a "
                           "writable directory") from None
    return path


def checked_capture_dir(folder: str | None, rate: float, max_bytes: int) -> Path | None:
    """The --capture folder, created and writable, with a usable rate and cap (CaptureError in
    one line otherwise); None without --capture."""
    if folder is None:
        return None
    if not 0.0 <= rate <= 1.0:
        raise CaptureError(f"--capture-rate {rate:g}: give a share between 0 and 1 (0.1: one in ten)")
    if max_bytes <= 0:
        raise CaptureError("--capture-max-gb must be above 0")
    return require_writable_capture_dir(folder)


class CaptureWriter:
    """The one thread that writes the capture folder. `submit` never blocks: a full queue
    drops the capture (counted); a failed write is counted and logged once per run of
    failures, and the server goes on."""

    def __init__(self, folder: Path, max_bytes: int, rate: float, queue_size: int = 64,
                 count: Callable[[str], None] = lambda outcome: None, write=store,
                 draw: Callable[[], float] = random.random, warn: Callable[[str], None] = log.warning):
        self.folder, self.max_bytes, self.rate = Path(folder), max_bytes, rate
        self.count, self.write, self.draw, self.warn = count, write, draw, warn
        self.queue: queue.Queue[PendingCapture | None] = queue.Queue(queue_size)
        self.unsettled: set[str] = set()  # ids queued or being written
        self.settle = threading.Condition()
        self.failing = False
        self.used = folder_bytes(self.folder) if (self.folder / CAPTURES).is_dir() else 0
        self.thread = threading.Thread(target=self.run, name="svlora-capture", daemon=True)
        self.thread.start()

    def sampled(self) -> bool:
        return self.draw() < self.rate

    def submit(self, pending: PendingCapture) -> bool:
        """Queue `pending` for writing; False (counted as dropped) when the queue is full."""
        with self.settle:
            self.unsettled.add(pending.id)
        try:
            self.queue.put_nowait(pending)
        except queue.Full:
            self.done(pending.id, "dropped")
            return False
        return True

    def run(self) -> None:
        while (pending := self.queue.get()) is not None:
            outcome = "error"
            try:
                outcome, self.used = self.write(self.folder, self.max_bytes, pending, self.used)
                self.failing = False
            except Exception as error:  # noqa: BLE001 — disk full, folder gone: serving goes on
                if not self.failing:
                    self.warn(f"capture {pending.id} not stored: {failure(error)}; counted in "
                              "svlora_captures_total{outcome=\"error\"}, serving goes on")
                self.failing = True
            finally:
                self.done(pending.id, outcome)

    def done(self, capture_id: str, outcome: str) -> None:
        self.count(outcome)
        with self.settle:
            self.unsettled.discard(capture_id)
            self.settle.notify_all()

    def find(self, capture_id: str, wait_s: float = 5.0) -> Capture | None:
        """The stored capture, once the writer has dealt with it (feedback may arrive before
        the write); None when it was never captured, was dropped or evicted."""
        with self.settle:
            self.settle.wait_for(lambda: capture_id not in self.unsettled, wait_s)
        try:
            return read_capture(self.folder, capture_id)
        except OSError:  # evicted between the check and the read
            return None

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for up to `timeout_s`), then stop the thread."""
        try:
            self.queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self.thread.join(timeout_s)


def failure(error: Exception) -> str:
    if isinstance(error, OSError):
        return f"{error.filename or 'the capture folder'}: {error.strerror or error}"
    return str(error)


def checked_feedback_body(raw: bytes) -> tuple[str, dict, str | None]:
    """(capture id, labels, reviewer) of a POST /v1/feedback body; CaptureError naming what
    is wrong. The labels are checked against the served schema later (checked_labels)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CaptureError("feedback: the body is not JSON; send {\"id\": \"cap_...\", "
                           "\"emotion\": \"HAPPY\"}") from None
    if not isinstance(body, dict):
        raise CaptureError("feedback: the body must be a JSON object with id and the labels")
    capture_id, reviewer = body.pop("id", None), body.pop("reviewer", None)
    if not isinstance(capture_id, str) or not capture_id:
        raise CaptureError(f"feedback: id is {'missing' if capture_id is None else 'not a string'}; give "
                           "the id (or svlora-capture-id header) of a captured response, as a string")
    if reviewer is not None and (not isinstance(reviewer, str) or len(reviewer) > MAX_REVIEWER_CHARS):
        raise CaptureError(f"feedback: reviewer must be a string of at most {MAX_REVIEWER_CHARS} characters")
    return capture_id, body, reviewer
