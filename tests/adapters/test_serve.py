"""`svlora serve` started for real in a subprocess on a free port, spoken to over HTTP: per-model
outputs equal `svlora transcribe`, mixed-adapter batches equal one-by-one requests, hot
load/unload under concurrent requests loses none, every bad input gets its status code."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from svlora.adapters import load_model
from tests.conftest import write_tone

TOKEN = "test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(quickstart_dir, *extra):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "svlora.cli", "serve", "--model", str(quickstart_dir / "tiny-base"),
         "--adapter", f"clinic={quickstart_dir / 'clinic-run/adapter'}", "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health")
    return process, url


def wait_until_up(process, url: str, seconds: float = 120) -> None:
    """Poll `url` until it answers 200; the process's output if it died first."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
        if process.poll() is not None:
            raise AssertionError(process.stdout.read())
    raise AssertionError(f"{url} did not answer in {seconds:g} s")


def stop(process):
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(quickstart_dir):
    process, url = start_server(
        quickstart_dir, "--max-upload-mb", "1", "--adapter-root", str(quickstart_dir),
        "--admin-token", TOKEN, "--rules", "clinic+rules=clinic:soft_particles",
        "--batch-window-ms", "100")
    yield url
    stop(process)


def post(url, path, model="clinic", **fields):
    with open(path, "rb") as handle:
        return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (Path(path).name, handle)},
                          data={"model": model, **fields}, timeout=120)


def clinic_clips(quickstart_dir, count=3):
    rows = [json.loads(line) for line in (quickstart_dir / "clinic/test.jsonl").read_text().splitlines()]
    return [Path(r["source"]) for r in rows[:count]]


def metric(text: str, name: str, **labels) -> float:
    """A sample's value from Prometheus text (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$" if wanted else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.groups()[-1]) if found else 0.0


def test_models_and_outputs_equal_transcribe(server, quickstart_dir):
    models = httpx.get(f"{server}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["sensevoice-small", "clinic", "clinic+rules"]
    assert models[1]["base_sha256"] == models[0]["base_sha256"]
    clips = clinic_clips(quickstart_dir)
    tiny, adapter = str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter")
    runtimes = {"clinic": load_model(tiny, adapter), "sensevoice-small": load_model(tiny),
                "clinic+rules": load_model(tiny, adapter, rules="soft_particles")}
    for name in ("clinic", "sensevoice-small", "clinic+rules", "clinic"):
        expected = runtimes[name].transcribe(clips)
        for clip, want in zip(clips, expected):
            body = post(server, clip, model=name).json()
            assert (body["raw"], body["emotion"], body["text"]) == (want["raw"], want["emotion"], want["text"])
            assert sum(body["emotion_probs"].values()) == pytest.approx(1, abs=1e-4)
            assert ("rules_fired" in body) == (name == "clinic+rules")


def test_a_mixed_adapter_batch_equals_the_same_requests_one_by_one(server, quickstart_dir):
    clips = clinic_clips(quickstart_dir, 4)
    requests = [(clip, model) for clip in clips for model in ("clinic", "sensevoice-small")]
    one_by_one = [post(server, clip, model=model).json() for clip, model in requests]
    before = httpx.get(f"{server}/metrics").text
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: post(server, r[0], model=r[1]).json(), requests))
    after = httpx.get(f"{server}/metrics").text
    assert together == one_by_one
    assert {b["raw"] for b in one_by_one[0::2]} != {b["raw"] for b in one_by_one[1::2]}  # adapters differ
    batches = metric(after, "svlora_batch_requests_count") - metric(before, "svlora_batch_requests_count")
    models_sum = metric(after, "svlora_batch_models_sum") - metric(before, "svlora_batch_models_sum")
    assert batches < len(requests), "the concurrent requests were never decoded together"
    assert models_sum > batches, "no batch mixed the base and the adapter"


def test_metrics_count_requests_latency_audio_and_batches(server, quickstart_dir):
    clip = clinic_clips(quickstart_dir, 1)[0]
    before = httpx.get(f"{server}/metrics").text
    post(server, clip, model="clinic")
    post(server, clip, model="nope")
    text = httpx.get(f"{server}/metrics").text
    grew = lambda name, **labels: metric(text, name, **labels) - metric(before, name, **labels)  # noqa: E731
    assert grew("svlora_requests_total", model="clinic", status="200") == 1
    assert grew("svlora_request_errors_total", model="unknown", status="404") == 1
    assert grew("svlora_request_latency_seconds_count", model="clinic") == 1
    assert grew("svlora_audio_seconds_total", model="clinic") == pytest.approx(sf.info(clip).duration, abs=0.01)
    assert metric(text, "svlora_loaded_adapters") == 1


def test_response_formats(server, quickstart_dir):
    clip = clinic_clips(quickstart_dir, 1)[0]
    verbose = post(server, clip, response_format="verbose_json").json()
    assert verbose["segments"][0]["start"] == 0.0 and verbose["segments"][0]["emotion"] == verbose["emotion"]
    assert post(server, clip, response_format="text").text == verbose["text"]
    srt = post(server, clip, response_format="srt").text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and verbose["text"] in srt
    assert post(server, clip, response_format="vtt").text.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_long_audio_is_segmented_like_transcribe(server, quickstart_dir, tmp_path):
    clips = clinic_clips(quickstart_dir, 40)
    pieces = [sf.read(c, dtype="float32")[0] for c in clips]
    gap = np.zeros(8000, np.float32)
    samples = np.concatenate([x for p in pieces for x in (p, gap)])[: 16000 * 45]
    long_file = tmp_path / "long.flac"
    sf.write(long_file, samples, 16000)
    assert long_file.stat().st_size < 2**20 and samples.size > 16000 * 30
    body = post(server, long_file, response_format="verbose_json").json()
    tiny, adapter = str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter")
    [want] = load_model(tiny, adapter).transcribe([long_file])
    assert len(body["segments"]) == len(want["segments"]) > 1
    assert [(s["start"], s["end"], s["emotion"]) for s in body["segments"]] == \
        [(s["start"], s["end"], s["emotion"]) for s in want["segments"]]
    assert (body["text"], body["emotion"]) == (want["text"], want["emotion"])


def test_the_openai_client_reads_text_and_keeps_the_tags(server, quickstart_dir):
    from openai import OpenAI

    clip = clinic_clips(quickstart_dir, 1)[0]
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    with open(clip, "rb") as handle:
        result = client.audio.transcriptions.create(model="clinic", file=handle,
                                                    response_format="verbose_json")
    expected = post(server, clip, response_format="verbose_json").json()
    assert result.text == expected["text"]
    assert result.model_extra["emotion"] == expected["emotion"]
    assert result.segments[0].start == 0.0


def test_hot_load_and_unload_under_concurrent_requests_lose_none(server, quickstart_dir):
    clips = clinic_clips(quickstart_dir, 2)
    expected = {model: [post(server, c, model=model).json()["raw"] for c in clips]
                for model in ("clinic", "sensevoice-small")}
    stop_at = time.time() + 1e9
    outcomes = []

    def client(index: int):
        model = ("clinic", "sensevoice-small")[index % 2]
        while time.time() < stop_at:
            clip_index = len(outcomes) % 2
            response = post(server, clips[clip_index], model=model)
            outcomes.append((model, response.status_code, response.json().get("raw"), clip_index))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, i) for i in range(4)]
        loaded = httpx.post(f"{server}/v1/admin/adapters", headers=ADMIN, timeout=60,
                            json={"name": "clinic2", "path": "clinic-run/adapter"})
        assert loaded.status_code == 201, loaded.text
        second = [post(server, c, model="clinic2").json()["raw"] for c in clips]
        with ThreadPoolExecutor(3) as burst:  # requests for clinic2 in flight while it unloads
            in_flight = [burst.submit(post, server, clips[0], "clinic2") for _ in range(3)]
            time.sleep(0.05)
            unloaded = httpx.delete(f"{server}/v1/admin/adapters/clinic2", headers=ADMIN, timeout=60)
            burst_codes = [f.result().status_code for f in in_flight]
        stop_at = time.time() + 1.0
        [f.result() for f in futures]
    assert unloaded.status_code == 200, unloaded.text
    assert second == expected["clinic"]
    assert set(burst_codes) <= {200, 404} and 200 in burst_codes  # admitted ones completed
    assert outcomes and all(code == 200 for _, code, _, _ in outcomes)
    assert all(raw == expected[model][i] for model, _, raw, i in outcomes)
    assert post(server, clips[0], model="clinic2").status_code == 404
    assert [m["id"] for m in httpx.get(f"{server}/v1/models").json()["data"]] == \
        ["sensevoice-small", "clinic", "clinic+rules"]


def test_admin_refusals_and_bad_adapters_leave_the_server_serving(server, quickstart_dir, tmp_path):
    clip = clinic_clips(quickstart_dir, 1)[0]
    good = quickstart_dir / "clinic-run/adapter"
    load = lambda name, path, headers=ADMIN: httpx.post(  # noqa: E731
        f"{server}/v1/admin/adapters", headers=headers, json={"name": name, "path": path}, timeout=60)
    assert load("x", "clinic-run/adapter", headers={}).status_code == 401
    assert load("x", "clinic-run/adapter", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert load("x", "../../etc").status_code == 403
    assert load("x", str(tmp_path)).status_code == 403  # absolute, outside the root
    assert load("clinic", "clinic-run/adapter").status_code == 400  # name taken
    assert load("x", "no-such-dir").status_code == 400
    bad = quickstart_dir / "bad-adapters"
    shutil.rmtree(bad, ignore_errors=True)
    corrupt, pickled, other_base = bad / "corrupt", bad / "pickled", bad / "other-base"
    for folder in (corrupt, pickled, other_base):
        shutil.copytree(good, folder)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    meta = json.loads((other_base / "svlora.json").read_text())
    (other_base / "svlora.json").write_text(json.dumps({**meta, "base_sha256": "0" * 64}))
    for folder in ("bad-adapters/corrupt", "bad-adapters/pickled", "bad-adapters/other-base"):
        response = load("x", folder)
        assert response.status_code == 400, (folder, response.text)
    assert "base" in load("x", "bad-adapters/other-base").json()["detail"]
    assert httpx.delete(f"{server}/v1/admin/adapters/nope", headers=ADMIN).status_code == 404
    assert httpx.delete(f"{server}/v1/admin/adapters/clinic", headers=ADMIN).status_code == 409  # rules use it
    assert post(server, clip, model="clinic").status_code == 200
    assert [m["id"] for m in httpx.get(f"{server}/v1/models").json()["data"]] == \
        ["sensevoice-small", "clinic", "clinic+rules"]


def test_bad_input_gets_its_status_and_the_server_survives(server, quickstart_dir, tmp_path):
    clip = clinic_clips(quickstart_dir, 1)[0]
    assert post(server, clip, model="nope").status_code == 404
    assert post(server, clip, response_format="docx").status_code == 400
    assert post(server, clip, language="xx").status_code == 400
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio at all")
    response = post(server, tmp_path / "bad.wav")
    assert response.status_code == 400 and "unreadable audio" in response.json()["detail"]
    assert str(tmp_path) not in response.json()["detail"]  # the server's temp path is not shown
    (tmp_path / "empty.wav").write_bytes(b"")
    assert post(server, tmp_path / "empty.wav").status_code == 400
    big = write_tone(tmp_path / "big.wav", seconds=40.0)  # 1.28 MB > the 1 MiB cap
    assert post(server, big).status_code == 413
    response = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "clinic"})
    assert response.status_code == 422  # no file part
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_overload_gets_503_with_retry_after_and_the_lru_bound_evicts(quickstart_dir):
    process, url = start_server(quickstart_dir, "--max-queue", "1", "--batch-window-ms", "300",
                                "--max-seconds", "5", "--adapter-root", str(quickstart_dir),
                                "--admin-token", TOKEN, "--max-adapters", "1")
    try:
        clip = clinic_clips(quickstart_dir, 1)[0]
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: post(url, clip), range(6)))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503}, codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        too_long = write_tone(quickstart_dir / "six-seconds.wav", seconds=6.0)
        response = post(url, too_long)
        assert response.status_code == 400 and "longer than --max-seconds 5" in response.json()["detail"]
        corrupt = quickstart_dir / "lru-corrupt"
        shutil.rmtree(corrupt, ignore_errors=True)
        shutil.copytree(quickstart_dir / "clinic-run/adapter", corrupt)
        (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad")
        refused = httpx.post(f"{url}/v1/admin/adapters", headers=ADMIN, timeout=60,
                             json={"name": "broken", "path": "lru-corrupt"})
        assert refused.status_code == 400  # and nothing was evicted to make room for it
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["sensevoice-small", "clinic"]
        loaded = httpx.post(f"{url}/v1/admin/adapters", headers=ADMIN, timeout=60,
                            json={"name": "clinic2", "path": "clinic-run/adapter"})
        assert loaded.status_code == 201, loaded.text
        names = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        assert names == ["sensevoice-small", "clinic2"]  # clinic, least recently used, evicted
        assert post(url, clip, model="clinic2").status_code == 200
    finally:
        stop(process)
