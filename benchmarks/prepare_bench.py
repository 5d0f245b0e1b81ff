"""Time `svlora prepare` (with and without the feature cache) against FunASR's own per-clip
path, and a training epoch's data loading from the cache against decoding audio.

    python benchmarks/prepare_bench.py [--data ../shared/data/esd_en_0020_dev] [--workers N]

Prints clips/s and audio-seconds/s for each path (median of 3 runs) and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


REPEATS = 3


def timed(function):
    """The result and the median wall time of REPEATS runs."""
    times, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="an ESD speaker folder")
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (0: one per core)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data}: not found; pass --data ESD_SPEAKER_DIR")

    from svlora.data_prep import PrepareOptions, prepare
    from svlora.features import row_features
    from svlora.manifest import read_manifest
    from svlora.model import load_base_model, stdout_to_stderr
    from svlora.tiny_model import make_tiny_model

    work = Path(tempfile.mkdtemp(prefix="svlora-prepare-bench-"))
    try:
        model_dir = make_tiny_model(work / "model")  # SenseVoiceSmall's frontend settings
        base = load_base_model(str(model_dir))

        def run_prepare(out: str, features: bool) -> dict:
            shutil.rmtree(work / out, ignore_errors=True)  # a cold feature cache every time
            return prepare(PrepareOptions(input=args.data, out=str(work / out), format="esd",
                                          workers=args.workers,
                                          features_model=str(model_dir) if features else None))

        report, plain_s = timed(lambda: run_prepare("plain", False))
        clips = report["rows_accepted"]
        audio_s = sum(split["audio_seconds"] for split in report["splits"].values())
        _, features_s = timed(lambda: run_prepare("features", True))

        with stdout_to_stderr():
            from funasr import AutoModel
            from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video
            frontend = AutoModel(model=str(model_dir), disable_update=True).kwargs["frontend"]
        rows = [r for split in ("train", "val", "test")
                for r in read_manifest(work / "plain" / f"{split}.jsonl")]

        def funasr_per_clip() -> None:  # what FunASR's SenseVoice dataset does per item
            for row in rows:
                waveform = load_audio_text_image_video(row.source, fs=16000)
                extract_fbank(waveform, data_type="sound", frontend=frontend, is_final=True)

        _, funasr_s = timed(funasr_per_clip)
        _, decode_epoch_s = timed(lambda: row_features(base, rows))
        cache = str(work / "features" / "features")
        _, cached_epoch_s = timed(lambda: row_features(base, rows, cache_dir=cache))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    workers = args.workers or min(os.cpu_count() or 1, 8)
    print(f"{clips} clips, {audio_s:.0f} s of audio, {workers} workers, {os.cpu_count()} cores")
    for name, seconds in (("svlora prepare (checks only)", plain_s),
                          ("svlora prepare --features", features_s),
                          ("FunASR per-clip load + WavFrontend", funasr_s),
                          ("epoch data loading: decode + features", decode_epoch_s),
                          ("epoch data loading: feature cache", cached_epoch_s)):
        print(f"{name:40s} {seconds:7.2f} s {clips / seconds:8.1f} clips/s "
              f"{audio_s / seconds:9.1f} audio-s/s")
    print(f"prepare --features vs FunASR per-clip path: {funasr_s / features_s:.1f}x")
    print(f"feature cache vs decoding, per epoch:       {decode_epoch_s / cached_epoch_s:.1f}x")


if __name__ == "__main__":
    main()
