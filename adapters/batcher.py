"""A dynamic batcher: requests that arrive within a few milliseconds of each other are decoded
in one call (one forward pass per duration bucket, each row with its own adapter), under a
bound on requests per batch; a bounded queue refuses work it could not start soon."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import groupby
from typing import Callable


class Overloaded(Exception):
    """The queue is full: the client should retry after `retry_after` seconds."""

    def __init__(self, waiting: int, retry_after: int = 1):
        super().__init__(f"{waiting} requests are already waiting; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    prepared: object         # a svlora.decoding.PreparedFile
    stage1: str              # the base's or an adapter's name
    language: str
    itn: str
    with_pooled: bool = False
    route: object = None     # a svlora.adapters.pool.Route: its post-processing runs in the worker
    hotwords: object = None  # the svlora.hotwords.Hotwords it decodes with (None: greedy)
    timestamps: bool = False  # word timestamps wanted
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, str]:
        return self.language, self.itn  # one forward pass shares the language and ITN queries


class DynamicBatcher:
    """`decode(jobs)` → one result per job, called from one worker thread."""

    def __init__(self, decode: Callable[[list[Job]], list[dict]], window_ms: float = 10.0,
                 max_requests: int = 32, max_queue: int = 64,
                 on_batch: Callable[[list[Job]], None] | None = None):
        self.decode = decode
        self.window = window_ms / 1000
        self.max_requests = max(1, max_requests)
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.pending = 0  # queued or decoding
        self.lock = threading.Lock()
        self.worker = threading.Thread(target=self.run, name="svlora-batcher", daemon=True)
        self.worker.start()

    def submit(self, job: Job) -> Future:
        with self.lock:
            if self.pending >= self.max_queue:
                raise Overloaded(self.pending)
            self.pending += 1
        self.jobs.put(job)
        return job.future

    def collect(self, first: Job) -> list[Job]:
        """`first` and whatever arrives within the window, up to max_requests."""
        batch = [first]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_requests:
            remaining = deadline - time.monotonic()
            try:
                job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)
                break
            batch.append(job)
        return batch

    def run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = self.collect(first)
            if self.on_batch:
                self.on_batch(batch)
            for _, group in groupby(sorted(batch, key=lambda j: j.key), key=lambda j: j.key):
                self.decode_group(list(group))

    def decode_group(self, group: list[Job]) -> None:
        live = []
        for job in group:  # a job its client gave up on (cancelled) before it started is skipped
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                with self.lock:
                    self.pending -= 1
        if not live:
            return
        group = live
        try:
            results = self.decode(group)
        except Exception as error:  # each waiting request gets the error, the worker lives on
            results = [error] * len(group)
        for job, result in zip(group, results):
            with self.lock:
                self.pending -= 1
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def close(self) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=30)
