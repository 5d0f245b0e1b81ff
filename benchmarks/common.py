"""What every benchmark shares: the machine it ran on, and timing with warm-up and repeats."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

RECORDS_ENV = "SVLORA_BENCH_RECORDS"  # a JSON-lines file: gpu_suite.sh builds its table from it


def machine_line(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    return (f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads{gpu}; device {device}")


def timed(run: Callable[[], object], repeats: int = 3, warmup: int = 1) -> tuple[dict, object]:
    """Run `warmup` times untimed, then `repeats` times: best and median seconds, and the last
    result."""
    result = None
    for _ in range(warmup):
        result = run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return {"best": min(seconds), "median": statistics.median(seconds), "runs": len(seconds)}, result


def record(name: str, figure: str, best: float, median: float | None = None, **details) -> None:
    """Append one measured figure (what it is, best and median) to $SVLORA_BENCH_RECORDS when set,
    named by the benchmark script: the GPU suite's table is these records, not scraped logs."""
    path = os.environ.get(RECORDS_ENV)
    if not path:
        return
    entry = {"benchmark": Path(sys.argv[0]).stem, "name": name.strip(), "figure": figure,
             "best": round(best, 3), "median": None if median is None else round(median, 3), **details}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def row(name: str, timing: dict, units: float, unit: str, extra: str = "") -> str:
    """One printed line: best and median seconds, and units per second at the best run (also a
    record, see `record`)."""
    record(name, f"{unit}/s", units / timing["best"], units / timing["median"])
    return (f"{name:58s} best {timing['best']:7.2f} s  median {timing['median']:7.2f} s  "
            f"{units / timing['best']:9.1f} {unit}/s{extra}")
