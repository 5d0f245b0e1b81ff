"""Throughput and latency of `svlora serve` under concurrent clients over real HTTP, with
requests spread over the base and several adapters, against the same server decoding one
request at a time (`--max-batch 1 --batch-window-ms 0`: what SenseVoice's own api.py does, a
model call per request), in the same run.

    python benchmarks/serve_bench.py [--full-size | --model DIR] [--adapters 3] [--clients 8]
        [--requests 64] [--repeats 3] [--data ../shared/data/esd_en_0020_dev] [--device cuda]

Each arm: a fresh server subprocess, a warm-up round, then `--repeats` rounds of `--requests`
requests from `--clients` threads (each client sends its next request when the last answered).
Best and median requests/s and audio-seconds/s are printed, with p50/p95 latency of the
median round. Adapters are random LoRA r8 weights on the base (the speed of an adapter does
not depend on what it learned).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, record  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


def random_adapters(model_dir: Path, out: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` svlora adapters with random (non-zero) LoRA weights on the recipe's layers."""
    import torch
    from peft import get_peft_model

    from svlora.adapter_format import save_adapter
    from svlora.finetune.lora import lora_config
    from svlora.finetune.recipe import LoraSettings
    from svlora.model import load_base_model, weights_sha256

    paths = []
    for index in range(count):
        base = load_base_model(str(model_dir))
        torch.manual_seed(seed + index)
        peft_model = get_peft_model(base.model, lora_config(LoraSettings()))
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
        paths.append(save_adapter(peft_model, out / f"adapter{index}",
                                  {"base_model": str(model_dir), "base_sha256": weights_sha256(model_dir)}))
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir: Path, adapters: list[Path], extra: list[str], threads: int):
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "svlora.cli", "serve", "--model", str(model_dir),
               "--port", str(port), "--max-queue", "1024", *extra]
    for index, path in enumerate(adapters):
        command += ["--adapter", f"adapter{index}={path}"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads)}
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                               env=env, cwd=tempfile.gettempdir())  # the installed svlora, not ./svlora
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server failed: {log.read()[-2000:]}")
    raise SystemExit("server did not start")


def run_round(url: str, clips: list[tuple[bytes, float]], models: list[str], clients: int,
              requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    audio = 0.0

    def client(worker: int) -> None:
        nonlocal audio
        with httpx.Client(timeout=600) as session:
            for index in range(worker, requests, clients):
                data, seconds = clips[index % len(clips)]
                started = time.perf_counter()
                response = session.post(f"{url}/v1/audio/transcriptions",
                                        files={"file": ("clip.wav", data)},
                                        data={"model": models[index % len(models)]})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"request failed: {response.status_code} {response.text[:200]}")
                audio += seconds

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {"wall": wall, "rps": requests / wall, "audio_rate": audio / wall,
            "p50": statistics.median(latencies), "p95": latencies[int(0.95 * (len(latencies) - 1))]}


def load_clips(data: Path | None, limit: int) -> list[tuple[bytes, float]]:
    import io

    import numpy as np
    import soundfile as sf

    if data and data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[:limit]
        clips = []
        for path in files:
            samples, rate = sf.read(path, dtype="float32")
            buffer = io.BytesIO()
            sf.write(buffer, samples, rate, format="WAV")
            clips.append((buffer.getvalue(), samples.shape[0] / rate))
        return clips
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(limit):
        seconds = rng.uniform(2, 5)
        buffer = io.BytesIO()
        sf.write(buffer, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000,
                 format="WAV")
        clips.append((buffer.getvalue(), seconds))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model dir (default: a new tiny one, or --full-size)")
    parser.add_argument("--full-size", action="store_true", help="the 234M architecture, random init")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64, help="requests per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a folder of clips (else noise clips)")
    parser.add_argument("--threads", type=int, default=0, help="server torch threads (0: all cores)")
    parser.add_argument("--window-ms", type=float, default=10.0, help="the batched arm's window")
    parser.add_argument("--device", default="cpu", help="the server's device (cpu, cuda)")
    args = parser.parse_args()

    import logging
    import os

    from svlora.tiny_model import full_size_spec, make_tiny_model

    logging.getLogger("httpx").setLevel(logging.WARNING)  # FunASR's import turns INFO logging on
    threads = args.threads or os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="svlora-serve-bench-"))
    try:
        model_dir = Path(args.model) if args.model else make_tiny_model(
            work / "model", spec=full_size_spec() if args.full_size else None)
        adapters = random_adapters(model_dir, work, args.adapters)
        models = ["sensevoice-small"] + [f"adapter{i}" for i in range(args.adapters)]
        clips = load_clips(Path(args.data), args.requests)
        print(machine_line(args.device))
        print(f"model {'full-size (random init)' if args.full_size else args.model or 'tiny (random init)'}, "
              f"{len(models)} models (base + {args.adapters} adapters, round-robin), {args.clients} "
              f"clients, {args.requests} requests per round ({sum(s for _, s in clips) / len(clips):.1f} s "
              f"mean clip), server threads {threads}, {args.repeats} rounds after 1 warm-up")
        arms = [(f"svlora serve, dynamic batching ({args.window_ms:g} ms window, mixed adapters)",
                 ["--batch-window-ms", str(args.window_ms)]),
                ("one request at a time (--max-batch 1; SenseVoice api.py's way)",
                 ["--max-batch", "1", "--batch-window-ms", "0"])]
        results = {}
        for name, extra in arms:
            process, url = start_server(model_dir, adapters, [*extra, "--device", args.device], threads)
            try:
                run_round(url, clips, models, args.clients, min(args.requests, 2 * args.clients))
                rounds = [run_round(url, clips, models, args.clients, args.requests)
                          for _ in range(args.repeats)]
            finally:
                process.terminate()
                process.wait(timeout=30)
            rounds.sort(key=lambda r: r["rps"])
            middle = rounds[len(rounds) // 2]
            results[name] = (rounds, middle)
            record(name, "req/s", rounds[-1]["rps"], middle["rps"], p95_s=round(middle["p95"], 3),
                   audio_s_per_s=round(middle["audio_rate"], 1))
            print(f"{name:66s} req/s best {rounds[-1]['rps']:6.2f} median {middle['rps']:6.2f}  "
                  f"audio-s/s best {rounds[-1]['audio_rate']:7.1f} median {middle['audio_rate']:7.1f}  "
                  f"latency p50 {middle['p50']:.3f} s p95 {middle['p95']:.3f} s", flush=True)
        (batched, batched_mid), (single, single_mid) = results.values()
        print(f"dynamic batching: {batched_mid['rps'] / single_mid['rps']:.2f}x the requests/s of one at a "
              f"time (medians), p95 {batched_mid['p95']:.3f} s vs {single_mid['p95']:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
