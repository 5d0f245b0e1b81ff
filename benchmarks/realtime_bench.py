"""End-of-speech → transcript latency of `svlora serve`'s realtime endpoint with N concurrent
speakers, against what a user would otherwise run: the same speakers cutting turns with their
own Silero VAD (same settings) and POSTing each turn to /v1/audio/transcriptions.

    python benchmarks/realtime_bench.py [--full-size | --model DIR] [--streams 1 2 4 8]
        [--utterances 3] [--repeats 3] [--data ../shared/data/esd_en_0020_dev] [--out DIR]

Each speaker streams real clips (1 s pauses between them) in 100 ms chunks paced at real time.
Latency of a turn = when its transcript arrived − when the chunk holding the turn's end was
sent (chunks leave once recorded; the end is where the VAD decided, i.e. after `silence_duration_ms` of quiet: that wait is
the same for both sides and is not in the figure). Per N: p50 and p95 over every turn of a
round; best and median of `--repeats` rounds after a warm-up round. Both sides talk to one
server (default batching), so turns from concurrent speakers share forward passes on both.
Writes realtime_bench.json and realtime_bench.png to --out.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, record  # noqa: E402
from serve_bench import DEFAULT_DATA, start_server  # noqa: E402

RATE, CHUNK_SECONDS, PAUSE_SECONDS, SILENCE_MS = 24000, 0.1, 1.0, 500


def speaker_audio(clips: list[Path], first: int, count: int) -> np.ndarray:
    """`count` clips from `first` (wrapping), 1 s apart, as 24 kHz float32."""
    import soundfile as sf
    import soxr

    pause = np.zeros(int(PAUSE_SECONDS * 16000), np.float32)
    pieces = [pause]
    for index in range(first, first + count):
        samples, rate = sf.read(clips[index % len(clips)], dtype="float32")
        pieces += [soxr.resample(samples, rate, 16000), pause, pause]
    return soxr.resample(np.concatenate(pieces), 16000, RATE, quality="HQ").astype(np.float32)


def sent_at(started: float, seconds: float) -> float:
    """When the chunk holding audio second `seconds` was sent."""
    return started + math.ceil(seconds / CHUNK_SECONDS - 1e-9) * CHUNK_SECONDS


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def paced_chunks(audio: np.ndarray, started: float):
    """The audio in chunks, each released once real time since `started` has passed its end
    (a microphone's chunk exists only once recorded)."""
    step = int(CHUNK_SECONDS * RATE)
    for index, start in enumerate(range(0, audio.size, step)):
        delay = started + (index + 1) * CHUNK_SECONDS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield audio[start:start + step]


def realtime_speaker(url: str, audio: np.ndarray, latencies: list, errors: list) -> None:
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/v1/realtime?intent=transcription", max_size=2**24) as ws:
        json.loads(ws.recv())
        ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS}}}))
        json.loads(ws.recv())
        started = time.perf_counter()
        done = threading.Event()
        expected, decided = [], {}

        def receive() -> None:
            last = time.perf_counter()
            while not done.is_set() or expected:
                try:
                    event = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    if time.perf_counter() - last > 30:
                        errors.append("no event for 30 s")
                        return
                    continue
                last = time.perf_counter()
                if event["type"] == "input_audio_buffer.speech_stopped":  # where the end was decided
                    decided[event["item_id"]] = event["audio_end_ms"] / 1000
                elif event["type"] == "input_audio_buffer.committed":
                    expected.append(event["item_id"])
                elif event["type"].endswith(".completed"):
                    latencies.append(time.perf_counter() - sent_at(started, decided[event["item_id"]]))
                    expected.remove(event["item_id"])
                elif event["type"] in ("error", "conversation.item.input_audio_transcription.failed"):
                    errors.append(event)
                if done.is_set() and not expected:
                    return

        listener = threading.Thread(target=receive)
        listener.start()
        for chunk in paced_chunks(audio, started):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16(chunk)).decode()}))
        time.sleep(1.0)  # the last turn's end is decided after SILENCE_MS
        done.set()
        listener.join(timeout=60)


def vad_and_post_speaker(url: str, audio: np.ndarray, latencies: list, errors: list) -> None:
    """The usual recipe: a local Silero VAD cuts turns, each turn is POSTed as a WAV file."""
    import httpx
    import soundfile as sf
    import soxr
    import torch
    from silero_vad import VADIterator, load_silero_vad

    vad = VADIterator(load_silero_vad(), sampling_rate=16000, min_silence_duration_ms=SILENCE_MS, speech_pad_ms=0)
    resampler = soxr.ResampleStream(RATE, 16000, 1, dtype="float32")
    pending, heard, start_ms, posts = np.zeros(0, np.float32), 0, None, []
    with httpx.Client(timeout=120) as client:
        def post(turn: np.ndarray, end_seconds: float) -> None:
            buffer = io.BytesIO()
            sf.write(buffer, np.frombuffer(pcm16(turn), "<i2"), RATE, format="WAV", subtype="PCM_16")
            response = client.post(f"{url}/v1/audio/transcriptions", files={"file": ("turn.wav", buffer.getvalue())},
                                   data={"model": "sensevoice-small"})
            if response.status_code != 200:
                errors.append(response.text)
            latencies.append(time.perf_counter() - sent_at(began, end_seconds))

        began = time.perf_counter()
        for chunk in paced_chunks(audio, began):
            pending = np.concatenate([pending, resampler.resample_chunk(chunk)])
            while pending.size >= 512:
                window, pending = pending[:512], pending[512:]
                change = vad(torch.from_numpy(window.copy()))
                heard += 512
                if change and "start" in change:
                    start_ms = max(0, change["start"] * 1000 // 16000 - 300)
                elif change and "end" in change and start_ms is not None:
                    end_ms = heard * 1000 // 16000
                    thread = threading.Thread(target=post, args=(audio[start_ms * 24:end_ms * 24], end_ms / 1000))
                    thread.start()
                    posts.append(thread)
                    start_ms = None
        for thread in posts:
            thread.join()


def run_round(url: str, speakers: list[np.ndarray], side) -> tuple[list[float], list]:
    latencies, errors = [], []
    threads = [threading.Thread(target=side, args=(url, audio, latencies, errors)) for audio in speakers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model dir (default: a random-init model)")
    parser.add_argument("--full-size", action="store_true", help="the full SenseVoiceSmall architecture")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--utterances", type=int, default=3, help="turns per speaker per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of real speech clips")
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument("--device", default="cpu", help="the server's device (cuda on a GPU machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    clips = sorted(args.data.rglob("*.flac")) + sorted(args.data.rglob("*.wav")) if args.data.is_dir() else []
    if not clips:
        raise SystemExit(f"{args.data}: no .flac/.wav clips; pass --data with real speech (Silero VAD "
                         "does not hear generated tones as speech)")

    from svlora.tiny_model import full_size_spec, make_tiny_model

    with tempfile.TemporaryDirectory() as work:
        model_dir = Path(args.model) if args.model else make_tiny_model(
            Path(work) / "model", spec=full_size_spec() if args.full_size else None)
        process, url = start_server(model_dir, [], ["--device", args.device], args.threads)
        print(machine_line(args.device))
        print(f"model {'full-size (random init)' if args.full_size else args.model or 'tiny (random init)'}; "
              f"{args.utterances} turns per speaker, {CHUNK_SECONDS * 1000:.0f} ms chunks at real time, "
              f"silence_duration_ms {SILENCE_MS}")
        results = []
        try:
            for streams in args.streams:
                speakers = [speaker_audio(clips, 7 * s, args.utterances) for s in range(streams)]
                for name, side in (("realtime WS", realtime_speaker), ("VAD + POST", vad_and_post_speaker)):
                    run_round(url, speakers, side)  # warm-up
                    rounds = []
                    for _ in range(args.repeats):
                        latencies, errors = run_round(url, speakers, side)
                        if errors or len(latencies) < streams * args.utterances:
                            raise SystemExit(f"{name}, {streams} streams: {len(latencies)} turns, errors {errors[:3]}")
                        rounds.append({"p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
                                       "turns": len(latencies)})
                    entry = {"streams": streams, "side": name, "rounds": rounds,
                             **{f"{k}_{stat}": round(fn(r[k] for r in rounds), 1)
                                for k in ("p50_ms", "p95_ms") for stat, fn in (("best", min), ("median", statistics.median))}}
                    results.append(entry)
                    record(f"{name}, {streams} streams", "p95 ms", entry["p95_ms_best"], entry["p95_ms_median"],
                           p50_ms_median=entry["p50_ms_median"])
                    print(f"{streams:2d} streams  {name:12s} p50 best {entry['p50_ms_best']:6.0f} median "
                          f"{entry['p50_ms_median']:6.0f} ms   p95 best {entry['p95_ms_best']:6.0f} median "
                          f"{entry['p95_ms_median']:6.0f} ms   ({rounds[0]['turns']} turns/round)", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realtime_bench.json").write_text(json.dumps({"machine": machine_line(args.device), "results": results},
                                                             indent=2))
    plot(results, args.out / "realtime_bench.png")
    print(f"wrote {args.out / 'realtime_bench.json'} and {args.out / 'realtime_bench.png'}")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for side, style in (("realtime WS", "-"), ("VAD + POST", "--")):
        points = [r for r in results if r["side"] == side]
        for key, marker in (("p50_ms_median", "o"), ("p95_ms_median", "s")):
            axis.plot([r["streams"] for r in points], [r[key] for r in points], style, marker=marker,
                      label=f"{side} {key.split('_')[0]}")
    axis.axhline(500, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("concurrent speakers")
    axis.set_ylabel("end of turn → transcript (ms)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
