"""`svlora serve` started for real in a subprocess on a free port, spoken to over HTTP: per-model
outputs equal `svlora transcribe`, mixed-adapter batches equal one-by-one requests, concurrent
long uploads are segmented as each is alone, hot load/unload under concurrent requests loses
none and routes by name, every bad input or adapter gets its status code."""

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

from svlora.adapter_format import adapter_identity
from svlora.adapters import load_model
from tests.conftest import write_tone
from tests.reliability.test_long_audio import speechy_file

TOKEN = "test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(trained_dir, *extra):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "svlora.cli", "serve", "--model", str(trained_dir / "tiny-base"),
         "--adapter", f"clinic={trained_dir / 'clinic-run/adapter'}", "--port", str(port), *extra],
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


def negated_adapter(adapter: Path, out: Path) -> Path:
    """A copy of `adapter` with its LoRA B factors negated (svlora.json kept): an adapter whose
    outputs differ from the original's and the base's, for routing checks."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, out)
    weights = load_file(out / "adapter_model.safetensors")
    save_file({k: -v if ".lora_B." in k else v for k, v in weights.items()},
              out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out


def adapter_root_for(trained_dir: Path, root: Path) -> Path:
    """An --adapter-root of the tests' own (bad adapters are written into it, never into the
    shared trained run): the clinic adapter and its negated copy."""
    shutil.copytree(trained_dir / "clinic-run/adapter", root / "clinic-run/adapter")
    negated_adapter(trained_dir / "clinic-run/adapter", root / "clinic-negated")
    return root


@pytest.fixture(scope="module")
def adapter_root(trained_dir, tmp_path_factory) -> Path:
    return adapter_root_for(trained_dir, tmp_path_factory.mktemp("adapter-root"))


@pytest.fixture(scope="module")
def server(trained_dir, adapter_root):
    process, url = start_server(
        trained_dir, "--max-upload-mb", "1", "--adapter-root", str(adapter_root),
        "--admin-token", TOKEN, "--rules", "clinic+rules=clinic:soft_particles",
        "--batch-window-ms", "100")
    yield url
    stop(process)


def post(url, path, model="clinic", filename=None, **fields):
    with open(path, "rb") as handle:
        return httpx.post(f"{url}/v1/audio/transcriptions",
                          files={"file": (filename or Path(path).name, handle)},
                          data={"model": model, **fields}, timeout=120)


def admin_load(url, name, path, headers=ADMIN):
    return httpx.post(f"{url}/v1/admin/adapters", headers=headers, json={"name": name, "path": path},
                      timeout=60)


def clinic_clips(trained_dir, count=3):
    rows = [json.loads(line) for line in (trained_dir / "clinic/test.jsonl").read_text().splitlines()]
    return [Path(r["source"]) for r in rows[:count]]


def long_uploads(folder: Path, count: int = 4, seconds: int = 45) -> list[Path]:
    """`count` different files of `seconds` of speech-like bursts and pauses (Silero VAD finds
    speech in them, so each is cut at its own pauses), each FLAC under the 1 MiB cap."""
    samples, rate = sf.read(speechy_file(folder / "speechy.wav", minutes=count * seconds / 60 + 0.1),
                            dtype="float32")
    paths = []
    for index in range(count):
        path = folder / f"long{index}.flac"
        sf.write(path, samples[index * seconds * rate:(index + 1) * seconds * rate], rate)
        assert path.stat().st_size < 2**20
        paths.append(path)
    return paths


def metric(text: str, name: str, **labels) -> float:
    """A sample's value from Prometheus text (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$" if wanted else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.groups()[-1]) if found else 0.0


def test_models_and_outputs_equal_transcribe(server, trained_dir):
    models = httpx.get(f"{server}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["sensevoice-small", "clinic", "clinic+rules"]
    assert models[1]["base_sha256"] == models[0]["base_sha256"]
    identity = adapter_identity(trained_dir / "clinic-run/adapter")  # weights + adapter_config.json
    assert [m.get("adapter_sha256") for m in models] == [None, identity, identity]
    clips = clinic_clips(trained_dir)
    tiny, adapter = str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter")
    runtimes = {"clinic": load_model(tiny, adapter), "sensevoice-small": load_model(tiny),
                "clinic+rules": load_model(tiny, adapter, rules="soft_particles")}
    for name in ("clinic", "sensevoice-small", "clinic+rules", "clinic"):
        expected = runtimes[name].transcribe(clips)
        for clip, want in zip(clips, expected):
            body = post(server, clip, model=name).json()
            assert (body["raw"], body["emotion"], body["text"]) == (want["raw"], want["emotion"], want["text"])
            assert sum(body["emotion_probs"].values()) == pytest.approx(1, abs=1e-4)
            assert ("rules_fired" in body) == (name == "clinic+rules")


def test_a_mixed_adapter_batch_equals_the_same_requests_one_by_one(server, trained_dir):
    clips = clinic_clips(trained_dir, 4)
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


def test_metrics_count_requests_latency_audio_and_batches(server, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]
    before = httpx.get(f"{server}/metrics").text
    post(server, clip, model="clinic")
    post(server, clip, model="nope")
    httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "clinic"})  # no file: 422
    text = httpx.get(f"{server}/metrics").text
    grew = lambda name, **labels: metric(text, name, **labels) - metric(before, name, **labels)  # noqa: E731
    assert grew("svlora_requests_total", model="clinic", status="200") == 1
    assert grew("svlora_request_errors_total", model="unknown", status="404") == 1
    assert grew("svlora_request_errors_total", model="unknown", status="422") == 1  # never parsed
    assert grew("svlora_request_latency_seconds_count", model="clinic") == 1
    assert grew("svlora_audio_seconds_total", model="clinic") == pytest.approx(sf.info(clip).duration, abs=0.01)
    assert metric(text, "svlora_loaded_adapters") == 1
    assert '"nope"' not in text  # label values come from registered names only


def test_response_formats(server, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]
    verbose = post(server, clip, response_format="verbose_json").json()
    [segment] = verbose["segments"]  # from the first word's start to the last word's end
    assert 0.0 < segment["start"] < segment["end"] <= verbose["duration"] and segment["emotion"] == verbose["emotion"]
    assert post(server, clip, response_format="text").text == verbose["text"]
    srt = post(server, clip, response_format="srt").text
    assert re.match(r"1\n00:00:00,\d{3} --> 00:00:0\d,\d{3}\n", srt) and verbose["text"] in srt
    assert re.match(r"WEBVTT\n\n00:00:00\.\d{3} --> ", post(server, clip, response_format="vtt").text)


def test_long_audio_is_segmented_like_transcribe(server, trained_dir, tmp_path):
    clips = clinic_clips(trained_dir, 40)
    pieces = [sf.read(c, dtype="float32")[0] for c in clips]
    gap = np.zeros(8000, np.float32)
    samples = np.concatenate([x for p in pieces for x in (p, gap)])[: 16000 * 45]
    long_file = tmp_path / "long.flac"
    sf.write(long_file, samples, 16000)
    assert long_file.stat().st_size < 2**20 and samples.size > 16000 * 30
    body = post(server, long_file, response_format="verbose_json").json()
    tiny, adapter = str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter")
    [want] = load_model(tiny, adapter).transcribe([long_file], timestamps=True)
    assert len(body["segments"]) == len(want["segments"]) > 1
    assert [(s["start"], s["end"], s["emotion"]) for s in body["segments"]] == \
        [(s["words"][0]["start"], s["words"][-1]["end"], s["emotion"]) for s in want["segments"]]
    assert (body["text"], body["emotion"]) == (want["text"], want["emotion"])


def test_concurrent_long_uploads_are_segmented_as_each_is_alone(server, tmp_path):
    uploads = long_uploads(tmp_path)
    alone = [post(server, path, response_format="verbose_json").json() for path in uploads]
    for body in alone:  # cut at the bursts' pauses by the VAD, not into fixed 30 s windows
        spans = [(s["start"], s["end"]) for s in body["segments"]]
        assert len(spans) > 1 and spans != [(0.0, 30.0), (30.0, 45.0)], spans
    with ThreadPoolExecutor(len(uploads)) as pool:  # one shared Silero state: the server crashed
        together = list(pool.map(lambda path: post(server, path, response_format="verbose_json"),
                                 uploads))
    assert [r.status_code for r in together] == [200] * len(uploads)
    assert [r.json() for r in together] == alone
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_the_openai_client_reads_text_and_keeps_the_tags(server, trained_dir):
    from openai import OpenAI

    clip = clinic_clips(trained_dir, 1)[0]
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    with open(clip, "rb") as handle:
        result = client.audio.transcriptions.create(model="clinic", file=handle,
                                                    response_format="verbose_json")
    expected = post(server, clip, response_format="verbose_json").json()
    assert result.text == expected["text"]
    assert result.model_extra["emotion"] == expected["emotion"]
    assert result.segments[0].start == expected["segments"][0]["start"] > 0


def test_hot_load_and_unload_under_concurrent_requests_lose_none(server, trained_dir, adapter_root):
    clips = clinic_clips(trained_dir, 2)
    expected = {model: [post(server, c, model=model).json()["raw"] for c in clips]
                for model in ("clinic", "sensevoice-small")}
    negated = [r["raw"] for r in load_model(str(trained_dir / "tiny-base"),
                                            str(adapter_root / "clinic-negated")).transcribe(clips)]
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
        loaded = admin_load(server, "clinic2", "clinic-negated")  # other weights than clinic's
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
    assert second == negated and all(a != b for a, b in zip(negated, expected["clinic"]))  # by name
    assert set(burst_codes) <= {200, 404} and 200 in burst_codes  # admitted ones completed
    assert outcomes and all(code == 200 for _, code, _, _ in outcomes)
    assert all(raw == expected[model][i] for model, _, raw, i in outcomes)
    assert post(server, clips[0], model="clinic2").status_code == 404
    assert [m["id"] for m in httpx.get(f"{server}/v1/models").json()["data"]] == \
        ["sensevoice-small", "clinic", "clinic+rules"]


def test_admin_refusals_and_bad_adapters_leave_the_server_serving(server, adapter_root, trained_dir,
                                                                  tmp_path):
    clip = clinic_clips(trained_dir, 1)[0]
    good = adapter_root / "clinic-run/adapter"
    load = lambda name, path, headers=ADMIN: admin_load(server, name, path, headers)  # noqa: E731
    assert load("x", "clinic-run/adapter", headers={}).status_code == 401
    assert load("x", "clinic-run/adapter", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert load("x", "../../etc").status_code == 403
    assert load("x", str(tmp_path)).status_code == 403  # absolute, outside the root
    assert load("clinic", "clinic-run/adapter").status_code == 409  # name taken
    assert load("x", "no-such-dir").status_code == 400
    assert load("x", "clinic-run/\0adapter").status_code == 400  # NUL byte: not a 500
    # '.' breaks PEFT's module dicts; __base__ is PEFT's "no adapter" row; forward is an
    # nn.Module attribute; names also become URLs and metric labels
    for name in ("a.b", "..", "__base__", "", "x" * 65, "forward", "clinic/2", "naïve"):
        response = load(name, "clinic-run/adapter")
        assert response.status_code == 400, (name, response.text)
    assert "A-Z a-z 0-9" in load("a.b", "clinic-run/adapter").json()["detail"]
    bad = adapter_root / "bad-adapters"
    corrupt, pickled, other_base, dropout = bad / "corrupt", bad / "pickled", bad / "other-base", bad / "dropout"
    for folder in (corrupt, pickled, other_base, dropout):
        shutil.copytree(good, folder)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    meta = json.loads((other_base / "svlora.json").read_text())
    (other_base / "svlora.json").write_text(json.dumps({**meta, "base_sha256": "0" * 64}))
    config = json.loads((dropout / "adapter_config.json").read_text())  # PEFT itself fails on it,
    (dropout / "adapter_config.json").write_text(json.dumps({**config, "lora_dropout": 2.0}))  # mid-way
    for folder in ("bad-adapters/corrupt", "bad-adapters/pickled", "bad-adapters/other-base"):
        response = load("x", folder)
        assert response.status_code == 400, (folder, response.text)
    assert "base" in load("x", "bad-adapters/other-base").json()["detail"]
    failed = load("x", "bad-adapters/dropout")
    assert failed.status_code == 400 and "not a loadable adapter" in failed.json()["detail"], failed.text
    assert load("after-failures", "clinic-run/adapter").status_code == 201  # PEFT was put back
    assert post(server, clip, model="after-failures").json()["raw"] == post(server, clip).json()["raw"]
    assert httpx.delete(f"{server}/v1/admin/adapters/after-failures", headers=ADMIN).status_code == 200
    assert httpx.delete(f"{server}/v1/admin/adapters/nope", headers=ADMIN).status_code == 404
    assert httpx.delete(f"{server}/v1/admin/adapters/clinic", headers=ADMIN).status_code == 409  # rules use it
    assert post(server, clip, model="clinic").status_code == 200
    assert [m["id"] for m in httpx.get(f"{server}/v1/models").json()["data"]] == \
        ["sensevoice-small", "clinic", "clinic+rules"]


def test_bad_input_gets_its_status_and_the_server_survives(server, trained_dir, tmp_path):
    clip = clinic_clips(trained_dir, 1)[0]
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
    response = post(server, big)
    assert response.status_code == 413 and "--max-upload-mb 1" in response.json()["detail"]
    response = post(server, clip, filename="clip." + "x" * 250)  # too long for a temp file's name
    assert response.status_code == 200, response.text
    response = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "clinic"})
    assert response.status_code == 422  # no file part
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_a_bad_model_name_is_refused_before_the_base_loads(tmp_path):
    from svlora.adapters.pool import ModelPool, ServeSettings
    from svlora.errors import SvloraError

    with pytest.raises(SvloraError, match="'clinic.v2' is not 1-64 characters of A-Z a-z 0-9"):
        ModelPool(ServeSettings(model=str(tmp_path / "no-model-here"), adapters={"clinic.v2": "unused"}))


def test_overload_gets_503_with_retry_after_and_the_lru_bound_evicts(trained_dir, tmp_path):
    root = adapter_root_for(trained_dir, tmp_path / "root")
    process, url = start_server(trained_dir, "--max-queue", "1", "--batch-window-ms", "300",
                                "--max-seconds", "5", "--adapter-root", str(root),
                                "--admin-token", TOKEN, "--max-adapters", "1")
    try:
        clip = clinic_clips(trained_dir, 1)[0]
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: post(url, clip), range(6)))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503}, codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        too_long = write_tone(tmp_path / "six-seconds.wav", seconds=6.0)
        response = post(url, too_long)
        assert response.status_code == 400 and "longer than --max-seconds 5" in response.json()["detail"]
        corrupt = root / "lru-corrupt"
        shutil.copytree(root / "clinic-run/adapter", corrupt)
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


def test_request_hotwords_in_a_mixed_batch_equal_load_model_and_keep_the_tags(server, trained_dir):
    """Requests with and without a `hotwords` field decoded together (one batch window): each
    equals load_model(hotwords=...) or the plain base, and the tags never differ."""
    terms_file = trained_dir / "demo" / "clinic" / "terms.txt"
    terms = ",".join(terms_file.read_text().split())
    rows = [json.loads(line) for line in (trained_dir / "clinic/test.jsonl").read_text().splitlines()]
    candidates = [Path(r["source"]) for r in rows if set(r["target"].split()) & set(terms.split(","))]
    tiny = str(trained_dir / "tiny-base")
    biased = {str(c): r for c, r in zip(candidates, load_model(tiny, hotwords=str(terms_file)).transcribe(candidates))}
    plain = {str(c): r for c, r in zip(candidates, load_model(tiny).transcribe(candidates))}
    changed = [c for c in candidates if biased[str(c)]["text"] != plain[str(c)]["text"]]
    assert changed, "hotwords changed no clip's text"
    clips = changed[:2] + [c for c in candidates if c not in changed][:2]
    jobs = [(clip, use) for clip in clips for use in (True, False)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        bodies = list(pool.map(lambda job: post(server, job[0], model="sensevoice-small",
                                                **({"hotwords": terms} if job[1] else {})).json(), jobs))
    served_plain = {str(clip): body for (clip, use), body in zip(jobs, bodies) if not use}
    for (clip, use), body in zip(jobs, bodies):
        want = (biased if use else plain)[str(clip)]
        assert (body["text"], body["emotion"]) == (want["text"], want["emotion"])
        # the server speaks its adapter's schema (HESITANT too); hotwords leave its probabilities
        assert body["emotion_probs"] == served_plain[str(clip)]["emotion_probs"]


def test_bad_request_hotwords_get_400_naming_the_problem(server, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]
    response = post(server, clip, hotwords="heparin\n<|HAPPY|>")
    assert response.status_code == 400 and "hotwords:2: <|HAPPY|> is a rich tag" in response.json()["detail"]
    response = post(server, clip, hotwords=",".join(f"term{i}" for i in range(1001)))
    assert response.status_code == 400 and "more than 1000" in response.json()["detail"]
    response = post(server, clip, hotwords="ß-blocker")
    assert response.status_code == 400 and "vocabulary lacks" in response.json()["detail"]
