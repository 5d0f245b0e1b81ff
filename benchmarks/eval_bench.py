"""svlora's batched evaluation decoding against `funasr.AutoModel.generate` on the same clips.

    python benchmarks/eval_bench.py [--data ../shared/data/esd_en_0020_dev] [--device cuda]
                                    [--full-size] [--limit 300]

Both decode the same files with the same weights (a tiny model, or with --full-size the
234M-parameter architecture, random init); prints clips/s and audio-seconds/s and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a folder of audio files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--limit", type=int, default=300, help="clips to decode")
    parser.add_argument("--funasr-batch-size", type=int, default=1,
                        help="AutoModel.generate batch_size (its default is 1)")
    args = parser.parse_args()

    from svlora.adapters import load_model
    from svlora.audio import load_audio
    from svlora.model import stdout_to_stderr
    from svlora.tiny_model import full_size_spec, make_tiny_model

    files = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix in (".wav", ".flac"))
    files = files[: args.limit]
    if not files:
        raise SystemExit(f"{args.data}: no audio files; pass --data")
    audio_seconds = sum(load_audio(f).size for f in files) / 16000
    work = Path(tempfile.mkdtemp(prefix="svlora-eval-bench-"))
    try:
        model_dir = make_tiny_model(work / "model", spec=full_size_spec() if args.full_size else None)
        runtime = load_model(str(model_dir), device=args.device)
        runtime.transcribe(files[:4])  # warm up
        started = time.perf_counter()
        ours = runtime.transcribe(files)
        ours_s = time.perf_counter() - started

        with stdout_to_stderr():
            from funasr import AutoModel
            # dither off through frontend_conf: AutoModel restores its constructor-time
            # frontend before every generate, so setting .dither afterwards has no effect
            model = AutoModel(model=str(model_dir), device=args.device, disable_update=True,
                              disable_pbar=True, log_level="ERROR", frontend_conf={"dither": 0.0})
            model.generate(input=files[:4], batch_size=args.funasr_batch_size)
            started = time.perf_counter()
            theirs = model.generate(input=files, batch_size=args.funasr_batch_size)
            theirs_s = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)

    agree = sum(o["raw"] == t["text"] for o, t in zip(ours, theirs))
    print(f"{len(files)} clips, {audio_seconds:.0f} s of audio, device {args.device}, "
          f"{'full-size' if args.full_size else 'tiny'} model")
    for name, seconds in (("svlora batched (duration-sorted, 240 s/batch)", ours_s),
                          (f"funasr AutoModel.generate (batch_size={args.funasr_batch_size})", theirs_s)):
        print(f"{name:50s} {seconds:7.2f} s {len(files) / seconds:8.1f} clips/s "
              f"{audio_seconds / seconds:9.1f} audio-s/s")
    print(f"svlora / FunASR: {theirs_s / ours_s:.1f}x; identical outputs on {agree}/{len(files)} clips")


if __name__ == "__main__":
    main()
