"""CPU real-time factor of the same merged model three ways, on the same clips: svlora's torch
fp32 runtime (duration-sorted batches), and the sherpa-onnx export run by sherpa-onnx in fp32
and int8, both ways sherpa-onnx's Python API decodes (every clip in one `decode_streams`
batch, and one `decode_stream` per clip), all with the same number of threads.

    python benchmarks/onnx_bench.py [--full-size | --model DIR [--adapter A]] [--limit 100]
        [--data ../shared/data/esd_en_0020_dev] [--threads N] [--repeats 3]

Files in, results out on every side (audio decoding and features included). Each side is
warmed up once, then timed --repeats times: best and median wall seconds and RTF (seconds of
compute per second of audio; lower is faster) are printed, with how many clips' text and tags
each ONNX side shares with torch (given a trained --model; random weights emit no real tags).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


def timed(run, repeats: int) -> tuple[list[float], object]:
    result = run()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def sherpa_batch(export_dir: Path, paths: list[str], int8: bool, threads: int, batched: bool = True):
    """sherpa-onnx's recognizer, loaded once; each call decodes every file, in one
    `decode_streams` batch or one `decode_stream` at a time."""
    import sherpa_onnx

    from svlora.adapters.onnx_runtimes import read_mono16k

    model = export_dir / ("model.int8.onnx" if int8 else "model.onnx")
    recognizer = sherpa_onnx.OfflineRecognizer.from_sense_voice(
        model=str(model), tokens=str(export_dir / "tokens.txt"), num_threads=threads, use_itn=False)

    def run():
        streams = []
        for path in paths:
            stream = recognizer.create_stream()
            stream.accept_waveform(16000, read_mono16k(path))
            streams.append(stream)
        if batched:
            recognizer.decode_streams(streams)
        else:
            for stream in streams:
                recognizer.decode_stream(stream)
        return [{"language": s.result.lang or None, "emotion": s.result.emotion or None,
                 "event": s.result.event or None, "text": s.result.text.strip()} for s in streams]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model dir (default: a new tiny one, or --full-size)")
    parser.add_argument("--adapter", help="merged before export (default: none)")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import os

    import soundfile as sf
    import torch

    from svlora.adapters import load_model
    from svlora.adapters.onnx_export import write_onnx_dir
    from svlora.labels import split_output
    from svlora.tiny_model import full_size_spec, make_tiny_model

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    paths = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    paths = paths[: args.limit]
    audio = sum(sf.info(p).duration for p in paths)
    work = Path(tempfile.mkdtemp(prefix="svlora-onnx-bench-"))
    try:
        model = args.model or str(make_tiny_model(work / "model",
                                                  spec=full_size_spec() if args.full_size else None))
        runtime = load_model(model, args.adapter, merge=bool(args.adapter))
        export_dir = write_onnx_dir(runtime, work / "onnx", "sherpa", True, {"base_model": model})
        print(machine_line("cpu"))
        print(f"model {'full-size (random init)' if args.full_size else model}, {len(paths)} clips, "
              f"{audio:.0f} s of audio, {threads} threads everywhere, {args.repeats} timed runs after 1 warm-up")

        def torch_run():
            return [{**split_output(r["raw"]), "text": r["text"]} for r in runtime.transcribe(paths)]

        sides = [("svlora torch fp32 (merged, duration-sorted batches)", torch_run),
                 ("sherpa-onnx fp32, all clips in one decode_streams", sherpa_batch(export_dir, paths, False, threads)),
                 ("sherpa-onnx fp32, one decode_stream per clip", sherpa_batch(export_dir, paths, False, threads, False)),
                 ("sherpa-onnx int8 (MatMul QUInt8), decode_streams", sherpa_batch(export_dir, paths, True, threads)),
                 ("sherpa-onnx int8, one decode_stream per clip", sherpa_batch(export_dir, paths, True, threads, False))]
        reference = None
        for name, run in sides:
            seconds, results = timed(run, args.repeats)
            keys = ("text", "language", "emotion", "event")
            if not args.model:
                agree = "  (random weights: outputs not compared)"
            elif reference is None:
                reference, agree = results, ""
            else:
                same = sum(all((a.get(k) or None) == (b.get(k) or None) for k in keys)
                           for a, b in zip(reference, results))
                agree = f"  same text+tags as torch on {same}/{len(paths)}"
            print(f"{name:56s} best {min(seconds):6.2f} s median {statistics.median(seconds):6.2f} s  "
                  f"RTF best {min(seconds) / audio:.4f} median {statistics.median(seconds) / audio:.4f}{agree}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
