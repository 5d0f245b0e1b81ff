"""Time `svlora prepare` (with and without the feature cache) against FunASR's own data path
(its SenseVoiceCTCDataset: load + WavFrontend per item) at equal parallelism, and a training
epoch's data loading from the cache against decoding audio.

    python benchmarks/prepare_bench.py [--data ../shared/data/esd_en_0020_dev] [--workers N]
        [--repeats 3]

Both sides run dither off. Each path is warmed up once and timed --repeats times (best and
median printed); FunASR's dataset runs serially (num_workers=0, what its per-clip path costs)
and through a torch DataLoader with the same number of worker processes as prepare.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, row, timed  # noqa: E402


def funasr_dataset(manifest: Path, model_dir: Path):
    """FunASR's own SenseVoice training dataset over `manifest`, dither off."""
    from svlora.model import import_automodel, quiet_funasr_logging, stdout_to_stderr

    import torch

    AutoModel = import_automodel()
    from funasr.datasets.sense_voice_datasets.datasets import SenseVoiceCTCDataset

    with stdout_to_stderr(), quiet_funasr_logging():
        threads = torch.get_num_threads()
        kwargs = AutoModel(model=str(model_dir), disable_update=True, ncpu=threads,
                           frontend_conf={"dither": 0.0}).kwargs
    return SenseVoiceCTCDataset(path=str(manifest), index_ds="IndexDSJsonl",
                                frontend=kwargs["frontend"], tokenizer=kwargs["tokenizer"],
                                batch_size=10**9, batch_type="length")


def iterate(dataset, workers: int) -> int:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers,
                                         collate_fn=lambda items: items)
    return sum(1 for batch in loader for item in batch if item is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="an ESD speaker folder")
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (0: one per core)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workers = args.workers or min(os.cpu_count() or 1, 8)
    if not Path(args.data).is_dir():
        raise SystemExit(f"{args.data}: not found; pass --data ESD_SPEAKER_DIR")

    from svlora.data_prep import PrepareOptions, prepare_corpus
    from svlora.features import row_features
    from svlora.manifest import read_manifest, write_manifest
    from svlora.model import load_base_model
    from svlora.tiny_model import make_tiny_model

    print(machine_line("cpu"))
    work = Path(tempfile.mkdtemp(prefix="svlora-prepare-bench-"))
    try:
        model_dir = make_tiny_model(work / "model")  # SenseVoiceSmall's frontend settings
        base = load_base_model(str(model_dir))

        def run_prepare(out: str, features: bool, count: int) -> dict:
            shutil.rmtree(work / out, ignore_errors=True)  # a cold feature cache every time
            return prepare_corpus(PrepareOptions(input=args.data, out=str(work / out), format="esd",
                                                 workers=count,
                                                 features_model=str(model_dir) if features else None))

        timings = {}
        timings["svlora prepare, checks only"], report = timed(
            lambda: run_prepare("plain", False, workers), args.repeats)
        clips = report["rows_accepted"]
        audio_s = sum(split["audio_seconds"] for split in report["splits"].values())
        for count in (1, workers):
            timings[f"svlora prepare --features, {count} worker(s)"], _ = timed(
                lambda: run_prepare("features", True, count), args.repeats)
        rows = [r for split in ("train", "val", "test")
                for r in read_manifest(work / "plain" / f"{split}.jsonl")]
        write_manifest(work / "all.jsonl", rows)
        dataset = funasr_dataset(work / "all.jsonl", model_dir)
        for count in (0, workers):
            name = "serial (num_workers=0)" if count == 0 else f"DataLoader num_workers={count}"
            timings[f"FunASR SenseVoiceCTCDataset, {name}"], seen = timed(
                lambda: iterate(dataset, count), args.repeats)
            assert seen == clips, (seen, clips)
        timings["epoch data loading: decode + features"], _ = timed(
            lambda: row_features(base, rows), args.repeats)
        cache = str(work / "features" / "features")
        timings["epoch data loading: feature cache"], _ = timed(
            lambda: row_features(base, rows, cache_dir=cache), args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{clips} clips, {audio_s:.0f} s of audio, {workers} workers, dither off on both sides")
    for name, timing in timings.items():
        print(row(name, timing, clips, "clips", f" {audio_s / timing['best']:9.1f} audio-s/s"))
    best = {name: t["best"] for name, t in timings.items()}
    serial = best["FunASR SenseVoiceCTCDataset, serial (num_workers=0)"]
    parallel = best[f"FunASR SenseVoiceCTCDataset, DataLoader num_workers={workers}"]
    print(f"prepare --features vs FunASR's dataset, 1 process each: "
          f"{serial / best['svlora prepare --features, 1 worker(s)']:.1f}x")
    print(f"prepare --features vs FunASR's dataset, {workers} processes each: "
          f"{parallel / best[f'svlora prepare --features, {workers} worker(s)']:.1f}x")
    print(f"feature cache vs decoding, per epoch: "
          f"{best['epoch data loading: decode + features'] / best['epoch data loading: feature cache']:.1f}x")


if __name__ == "__main__":
    main()
