"""`svlora serve` started for real in a subprocess on a free port, spoken to over HTTP: per-model
outputs equal `svlora transcribe`, every response format, and each bad input's status code."""

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from svlora.adapters import load_model
from tests.conftest import write_tone


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(quickstart_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "svlora.cli", "serve", "--model", str(quickstart_dir / "tiny-base"),
         "--adapter", f"clinic={quickstart_dir / 'clinic-run/adapter'}", "--port", str(port),
         "--max-upload-mb", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
        if process.poll() is not None:
            raise AssertionError(process.stdout.read())
    yield url
    process.terminate()
    process.wait(timeout=30)


def post(url, path, model="clinic", **fields):
    with open(path, "rb") as handle:
        return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, handle)},
                          data={"model": model, **fields}, timeout=60)


def clinic_clips(quickstart_dir, count=3):
    from pathlib import Path

    rows = [json.loads(line) for line in (quickstart_dir / "clinic/test.jsonl").read_text().splitlines()]
    return [Path(r["source"]) for r in rows[:count]]


def test_models_and_outputs_equal_transcribe(server, quickstart_dir):
    models = httpx.get(f"{server}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["sensevoice-small", "clinic"]
    assert models[1]["base_sha256"] == models[0]["base_sha256"]
    clips = clinic_clips(quickstart_dir)
    adapted = load_model(str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter"))
    base = load_model(str(quickstart_dir / "tiny-base"))
    for name, runtime in (("clinic", adapted), ("sensevoice-small", base), ("clinic", adapted)):
        expected = runtime.transcribe(clips)
        for clip, want in zip(clips, expected):
            body = post(server, clip, model=name).json()
            assert (body["raw"], body["emotion"], body["text"]) == (want["raw"], want["emotion"], want["text"])
            assert sum(body["emotion_probs"].values()) == pytest.approx(1, abs=1e-4)


def test_response_formats(server, quickstart_dir):
    clip = clinic_clips(quickstart_dir, 1)[0]
    verbose = post(server, clip, response_format="verbose_json").json()
    assert verbose["segments"][0]["start"] == 0.0 and verbose["segments"][0]["emotion"] == verbose["emotion"]
    assert post(server, clip, response_format="text").text == verbose["text"]
    srt = post(server, clip, response_format="srt").text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and verbose["text"] in srt
    assert post(server, clip, response_format="vtt").text.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_bad_input_gets_its_status_and_the_server_survives(server, quickstart_dir, tmp_path):
    clip = clinic_clips(quickstart_dir, 1)[0]
    assert post(server, clip, model="nope").status_code == 404
    assert post(server, clip, response_format="docx").status_code == 400
    assert post(server, clip, language="xx").status_code == 400
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio at all")
    response = post(server, tmp_path / "bad.wav")
    assert response.status_code == 400 and "unreadable audio" in response.json()["detail"]
    (tmp_path / "empty.wav").write_bytes(b"")
    assert post(server, tmp_path / "empty.wav").status_code == 400
    big = write_tone(tmp_path / "big.wav", seconds=40.0)  # 1.28 MB > the 1 MiB cap
    assert post(server, big).status_code == 413
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
