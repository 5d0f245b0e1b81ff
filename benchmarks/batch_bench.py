"""Audio hours per hour of wall time: plain `svlora transcribe` (one process, what a user runs
today) against `svlora batch --workers 1` and `--workers 2` (a local Ray) on the same files and
the same cores, full-size architecture by default.

    python benchmarks/batch_bench.py [--full-size | --model DIR] [--files 300] [--repeats 3]
        [--data ../shared/data/esd_en_0020_dev] [--workers 1 2]

Each side runs as the CLI a user would type (a subprocess: start-up, model load and, for batch,
Ray's start are in the time), once to warm the page cache, then `--repeats` times; best and
median wall seconds and audio-h/h are printed, with Ray's overhead at 1 worker and the scaling
efficiency of N workers (speed-up over 1 worker / N). transcribe uses all cores in one process
(torch's intra-op threads); each batch worker gets cores / N threads.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, record  # noqa: E402
from serve_bench import DEFAULT_DATA  # noqa: E402


def run(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} …: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu", help="cuda: transcribe on the GPU, batch workers with one GPU each")
    args = parser.parse_args()
    import soundfile as sf

    from svlora.tiny_model import full_size_spec, make_tiny_model

    clips = sorted(args.data.rglob("*.flac"))[: args.files] if args.data.is_dir() else []
    if len(clips) < args.files:
        raise SystemExit(f"{args.data}: {len(clips)} clips, fewer than --files {args.files}")
    hours = sum(sf.info(c).duration for c in clips) / 3600
    cli = [sys.executable, "-m", "svlora.cli"]
    with tempfile.TemporaryDirectory() as work:
        model = Path(args.model) if args.model else make_tiny_model(
            Path(work) / "model", spec=full_size_spec() if args.full_size else None)
        listing = Path(work) / "paths.txt"
        listing.write_text("\n".join(str(c) for c in clips) + "\n")
        print(machine_line(args.device))
        print(f"{len(clips)} files, {hours * 60:.1f} audio-minutes; model "
              f"{'full-size (random init)' if args.full_size else args.model or 'tiny (random init)'}")
        sides = {"svlora transcribe (one process)": lambda: [*cli, "transcribe", "--model", str(model),
                                                             "--device", args.device, "--json", *map(str, clips)]}
        for workers in args.workers:
            def batch(workers=workers):
                out = Path(work) / f"out-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                return [*cli, "batch", str(listing), "--out", str(out), "--model", str(model),
                        "--workers", str(workers),
                        *(["--gpus-per-worker", "1"] if args.device.startswith("cuda") else [])]
            sides[f"svlora batch --workers {workers}"] = batch
        results = {}
        for name, command in sides.items():
            run(command())  # warm-up: page cache, first-run compilation
            seconds = [run(command()) for _ in range(args.repeats)]
            results[name] = {"best": min(seconds), "median": statistics.median(seconds)}
            record(name, "audio-h/h", hours / (results[name]["best"] / 3600),
                   hours / (results[name]["median"] / 3600))
            print(f"{name:36s} best {results[name]['best']:7.1f} s  median {results[name]['median']:7.1f} s  "
                  f"{hours / (results[name]['best'] / 3600):8.1f} audio-h/h (best)", flush=True)
    plain = results["svlora transcribe (one process)"]["best"]
    one = results.get("svlora batch --workers 1")
    if one:
        print(f"Ray's overhead at 1 worker: {(one['best'] / plain - 1) * 100:+.1f}% wall time (best runs)")
        for workers in args.workers:
            if workers > 1:
                speedup = one["best"] / results[f"svlora batch --workers {workers}"]["best"]
                print(f"{workers} workers: {speedup:.2f}x over 1 worker, efficiency {speedup / workers:.0%}")


if __name__ == "__main__":
    main()
