"""`svlora serve --capture` and `POST /v1/feedback` over real HTTP (two servers in
subprocesses; token set-ups that need no model in-process): what a capture stores equals what
the client got, rate 0 stores nothing, the size cap evicts the oldest, every feedback refusal
gets its status, and a capture folder that vanishes costs captures, never responses. The
writer is tested in-process: a blocked writer never holds up a submit, a full queue drops and
counts, a failed write leaves no orphan audio."""

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from svlora.adapter_format import adapter_identity
from svlora.adapters.capture import CaptureWriter, PendingCapture, store
from svlora.captures import (Capture, folder_bytes, read_capture, read_captures, read_feedback,
                             require_capture_dir, write_capture)
from svlora.io import sha256_file
from svlora.label_schema import LabelSchema, load_schema
from svlora.recipes.rules import rules_path
from tests.adapters.test_serve import ADMIN, TOKEN, clinic_clips, metric, post, start_server, stop
from tests.adapters.test_serve_realtime import committed_turns, pcm16_24k

FEEDBACK_TOKEN = "reviewer-token"
REVIEWER = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
RECORD_BYTES = 12_000  # more than a capture record of a short clip takes


def wait_for(check, seconds: float = 15.0):
    """`check()`'s first truthy value, polled (the writer works off the request path)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds:g} s: {check}")


def biggest_clip(trained_dir) -> Path:
    return max(clinic_clips(trained_dir, 12), key=lambda path: path.stat().st_size)


def capture_cap_gb(trained_dir) -> float:
    """A --capture-max-gb that holds two captures of any clip the tests send, not three of the
    biggest."""
    return 2.5 * (biggest_clip(trained_dir).stat().st_size + RECORD_BYTES) / 2**30


def capture_server(trained_dir, folder: Path, *extra):
    process, url = start_server(trained_dir, "--capture", str(folder), *extra)
    return process, url, folder


@pytest.fixture(scope="module")
def capturing(trained_dir, tmp_path_factory):
    """Every request kept under a small cap; feedback behind its own token."""
    process, url, folder = capture_server(
        trained_dir, tmp_path_factory.mktemp("captures") / "kept", "--capture-rate", "1",
        "--capture-max-gb", f"{capture_cap_gb(trained_dir):.9f}", "--admin-token", TOKEN,
        "--feedback-token", FEEDBACK_TOKEN, "--rules", "clinic+rules=clinic:soft_particles")
    yield url, folder
    stop(process)


@pytest.fixture(scope="module")
def sampled_out(trained_dir, tmp_path_factory):
    """--capture-rate 0; feedback behind the admin token. (Each start costs seconds of CPU: the
    other token set-ups run in-process, in stub_app.)"""
    process, url, folder = capture_server(trained_dir, tmp_path_factory.mktemp("captures") / "none",
                                          "--capture-rate", "0", "--admin-token", TOKEN)
    yield url, folder
    stop(process)


def feedback(url, body, headers=REVIEWER):
    return httpx.post(f"{url}/v1/feedback", headers=headers, timeout=30,
                      content=body if isinstance(body, bytes) else json.dumps(body))


def captured(folder: Path, capture_id: str) -> Capture:
    return wait_for(lambda: read_capture(folder, capture_id))


# ---- what a capture keeps --------------------------------------------------------------------
def test_a_capture_equals_the_response_and_keeps_the_uploaded_bytes(capturing, trained_dir):
    url, folder = capturing
    clip = clinic_clips(trained_dir, 1)[0]
    response = post(url, clip, response_format="verbose_json", language="en",
                    **{"timestamp_granularities[]": ["word", "segment"]})
    body = response.json()
    assert response.status_code == 200 and body["id"] == response.headers["svlora-capture-id"]
    record = captured(folder, body["id"])
    for key in ("text", "raw", "emotion", "event", "language", "emotion_probs", "event_probs",
                "language_probs", "words"):
        assert record.response[key] == body[key], key
    assert body["words"] and "path" not in record.response  # not the server's temp file
    assert (folder / record.audio).read_bytes() == clip.read_bytes()
    assert record.audio_sha256 == sha256_file(clip) and record.audio.endswith(clip.suffix)
    assert (record.model, record.kind, record.endpoint, record.language) == \
        ("clinic", "adapter", "transcriptions", "en")
    assert record.seconds == pytest.approx(sf.info(clip).duration, abs=0.01)
    base_sha256 = httpx.get(f"{url}/v1/models").json()["data"][0]["base_sha256"]
    assert LabelSchema.from_dict(record.hashes.pop("labels")) == load_schema(trained_dir / "clinic/labels.json")
    assert record.hashes == {"base_sha256": base_sha256,
                             "adapter_sha256": adapter_identity(trained_dir / "clinic-run/adapter")}


def test_pipelines_base_text_and_streams_are_captured_with_what_served_them(capturing, trained_dir):
    url, folder = capturing
    clip = clinic_clips(trained_dir, 2)[1]
    body = post(url, clip, model="clinic+rules").json()
    record = captured(folder, body["id"])
    assert record.kind == "pipeline" and record.response["rules_fired"] == body["rules_fired"]
    assert record.hashes["stage1"] == "clinic"
    assert record.hashes["rules_sha256"] == sha256_file(rules_path("soft_particles"))
    base = post(url, clip, model="sensevoice-small").json()
    record = captured(folder, base["id"])
    assert record.kind == "base" and set(record.hashes) == {"base_sha256", "labels"}
    assert record.response["emotion_probs"] == base["emotion_probs"]

    text = post(url, clip, response_format="text")  # no body id: the header carries it
    assert captured(folder, text.headers["svlora-capture-id"]).response["text"] == text.text
    with open(clip, "rb") as handle, httpx.stream(
            "POST", f"{url}/v1/audio/transcriptions", files={"file": (clip.name, handle)},
            data={"model": "clinic", "stream": "true"}, timeout=60) as streamed:
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: ")]
        header = streamed.headers["svlora-capture-id"]
    [done] = [e for e in events if e["type"] == "transcript.text.done"]
    assert done["id"] == header and captured(folder, header).response["text"] == done["text"]


def test_a_realtime_turn_is_captured_as_a_wav_of_its_audio(capturing, trained_dir):
    url, folder = capturing
    pcm = pcm16_24k(sf.read(clinic_clips(trained_dir, 1)[0], dtype="float32")[0])
    [event] = committed_turns(url, [pcm])
    record = captured(folder, event["capture_id"])
    samples, rate = sf.read(folder / record.audio, dtype="int16")
    assert rate == 24000 and np.array_equal(samples, np.frombuffer(pcm, "<i2"))
    assert (record.endpoint, record.response["text"]) == ("realtime", event["transcript"])


def test_past_the_cap_the_oldest_captures_go(capturing, trained_dir):
    """Four captures of the biggest clip: the last three alone pass the cap, so neither of the
    first two can be kept (eviction goes oldest first)."""
    url, folder = capturing
    ids = [post(url, biggest_clip(trained_dir)).json()["id"] for _ in range(4)]
    captured(folder, ids[-1])
    kept = [c.id for c in read_captures(folder)]
    assert ids[-1] in kept and ids[0] not in kept and ids[1] not in kept
    assert folder_bytes(folder) <= capture_cap_gb(trained_dir) * 2**30
    assert not [p for p in (folder / "audio").iterdir() if p.stem not in kept]  # no orphan audio
    response = feedback(url, {"id": ids[0], "emotion": "HAPPY"})
    assert response.status_code == 404 and "evicted" in response.json()["detail"]


def test_rate_0_stores_nothing_and_its_ids_are_not_captured(sampled_out, trained_dir):
    url, folder = sampled_out
    responses = [post(url, clip) for clip in clinic_clips(trained_dir, 3)]
    assert all(r.status_code == 200 and r.json()["id"].startswith("cap_") for r in responses)
    assert not any("svlora-capture-id" in r.headers for r in responses)
    text = httpx.get(f"{url}/metrics").text
    assert [metric(text, "svlora_captures_total", outcome=o) for o in ("written", "dropped")] == [0, 0]
    assert not any(read_capture(folder, r.json()["id"]) for r in responses)
    response = feedback(url, {"id": responses[0].json()["id"], "emotion": "HAPPY"}, headers=ADMIN)
    assert response.status_code == 404 and "sampled out" in response.json()["detail"]


# ---- feedback --------------------------------------------------------------------------------
def test_feedback_is_appended_checked_against_the_served_schema(capturing, trained_dir):
    url, folder = capturing
    capture_id = post(url, clinic_clips(trained_dir, 1)[0]).json()["id"]
    captured(folder, capture_id)
    first = feedback(url, {"id": capture_id, "emotion": "<|HESITANT|>", "text": "heparin at noon",
                           "role": "nurse", "reviewer": "ana"})
    assert first.status_code == 201, first.text
    assert first.json()["labels"] == {"emotion": "HESITANT", "text": "heparin at noon", "role": "nurse"}
    second = feedback(url, {"id": capture_id, "emotion": "SAD"})
    assert second.status_code == 201, second.text
    mine = [r for r in read_feedback(folder) if r.id == capture_id]
    assert [(r.labels, r.reviewer, r.source) for r in mine] == [
        ({"emotion": "HESITANT", "text": "heparin at noon", "role": "nurse"}, "ana", "api"),
        ({"emotion": "SAD"}, None, "api")]
    assert mine[0].time == first.json()["time"]

    refusals = {  # body → (status, words the detail names)
        json.dumps({"id": capture_id, "emotion": "EXCITED"}): (400, ["emotion", "'EXCITED'", "HESITANT"]),
        json.dumps({"id": capture_id, "role": "surgeon"}): (400, ["role", "nurse, patient"]),
        json.dumps({"id": capture_id, "mood": "calm"}): (400, ["unknown field 'mood'"]),
        json.dumps({"id": capture_id}): (400, ["no labels"]),
        json.dumps({"emotion": "SAD"}): (400, ["id is missing"]),
        "[1, 2]": (400, ["JSON object"]),
        "{not json": (400, ["not JSON"]),
        json.dumps({"id": "cap_0000000000000_00000000", "emotion": "SAD"}): (404, ["not found"]),
        json.dumps({"id": "../../etc/passwd", "emotion": "SAD"}): (404, ["not found"]),
        json.dumps({"id": capture_id, "text": "x" * 70_000}): (413, ["64 KiB"]),
    }
    for body, (status, words) in refusals.items():
        response = feedback(url, body.encode())
        assert response.status_code == status, (body[:60], response.text)
        assert all(w in response.json()["detail"] for w in words), (body[:60], response.text)
    assert len([r for r in read_feedback(folder) if r.id == capture_id]) == 2  # no refusal appended


def test_feedback_needs_its_token(capturing, trained_dir):
    url, folder = capturing
    capture_id = post(url, clinic_clips(trained_dir, 1)[0]).json()["id"]
    captured(folder, capture_id)
    body = {"id": capture_id, "emotion": "SAD"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": FEEDBACK_TOKEN}, ADMIN):
        response = feedback(url, body, headers=headers)  # the admin token too: a feedback token is set
        assert response.status_code == 401, (headers, response.text)
    assert feedback(url, body).status_code == 201
    assert len([r for r in read_feedback(folder) if r.id == capture_id]) == 1


def hand_written(folder: Path, index: int, hashes: dict) -> Capture:
    """A capture as another server run left it in the folder."""
    capture_id = f"cap_{1700000000000 + index}_0123abcd"
    record = Capture(capture_id, "2023-11-14T22:13:20.000+00:00", "clinic", "adapter", hashes,
                     f"audio/{capture_id}.wav", "0" * 64, 1.0, {"text": "hi"})
    write_capture(folder, record, b"RIFF")
    return record


def test_without_a_feedback_token_the_admin_token_takes_feedback(sampled_out):
    url, folder = sampled_out
    record = hand_written(folder, 0, {})
    assert feedback(url, {"id": record.id, "event": "Speech"}, headers=REVIEWER).status_code == 401
    response = feedback(url, {"id": record.id, "event": "Speech"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert read_feedback(folder)[-1].labels == {"event": "Speech"}


def test_feedback_is_checked_against_the_schema_the_capture_was_answered_in(sampled_out):
    """The server speaks the clinic schema (HESITANT, role); a capture that recorded
    SenseVoice's own schema takes neither, one that recorded none takes the server's."""
    url, folder = sampled_out
    sensevoice = hand_written(folder, 1, {"labels": LabelSchema().to_dict()})
    unrecorded = hand_written(folder, 2, {})
    for body in ({"emotion": "HESITANT"}, {"role": "nurse"}):
        refused = feedback(url, {"id": sensevoice.id, **body}, headers=ADMIN)
        assert refused.status_code == 400, refused.text
        assert feedback(url, {"id": unrecorded.id, **body}, headers=ADMIN).status_code == 201
    assert "EMO_UNKNOWN" in feedback(url, {"id": sensevoice.id, "emotion": "X"}, headers=ADMIN).json()["detail"]


def stub_app(trained_dir, **settings):
    """create_app over a pool that holds no model (feedback never decodes): the token and
    --capture set-ups without a server start each."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from svlora.adapters.pool import ServeSettings
    from svlora.adapters.serve import create_app

    schema = load_schema(trained_dir / "clinic/labels.json")
    pool = SimpleNamespace(settings=ServeSettings(model="unused", **settings), adapters={},
                           base=SimpleNamespace(labels=schema), labels_of=lambda name: schema)
    return TestClient(create_app(pool))


def test_feedback_without_capture_or_without_a_token_says_what_to_start_with(trained_dir, tmp_path,
                                                                            monkeypatch):
    monkeypatch.delenv("SVLORA_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SVLORA_FEEDBACK_TOKEN", raising=False)
    body = {"id": "cap_1700000000000_0123abcd", "emotion": "SAD"}
    with stub_app(trained_dir, admin_token=TOKEN) as client:
        refused = client.post("/v1/feedback", json=body, headers=ADMIN)
    assert refused.status_code == 409 and "--capture DIR" in refused.json()["detail"]
    folder = tmp_path / "captures"
    with stub_app(trained_dir, capture_dir=str(folder)) as client:
        refused = client.post("/v1/feedback", json=body, headers=ADMIN)
    assert refused.status_code == 403 and "--feedback-token" in refused.json()["detail"]
    hand_written(folder, 0, {})
    monkeypatch.setenv("SVLORA_FEEDBACK_TOKEN", FEEDBACK_TOKEN)  # the env var, as --feedback-token
    with stub_app(trained_dir, capture_dir=str(folder), admin_token=TOKEN) as client:
        assert client.post("/v1/feedback", json=body, headers=ADMIN).status_code == 401
        assert client.post("/v1/feedback", json=body, headers=REVIEWER).status_code == 201
    assert [r.labels for r in read_feedback(folder)] == [{"emotion": "SAD"}]


def test_feedback_on_a_full_disk_is_refused_with_507_and_the_next_one_is_kept(trained_dir, tmp_path,
                                                                             monkeypatch):
    import errno

    import svlora.adapters.serve as serve_module

    folder = tmp_path / "captures"
    hand_written(folder, 0, {})
    body = {"id": "cap_1700000000000_0123abcd", "emotion": "SAD"}
    real_append = serve_module.append_feedback

    def full_disk(where, entry):
        raise OSError(errno.ENOSPC, "No space left on device", str(where / "feedback.jsonl"))

    with stub_app(trained_dir, capture_dir=str(folder), admin_token=TOKEN) as client:
        monkeypatch.setattr(serve_module, "append_feedback", full_disk)
        refused = client.post("/v1/feedback", json=body, headers=ADMIN)
        monkeypatch.setattr(serve_module, "append_feedback", real_append)
        kept = client.post("/v1/feedback", json=body, headers=ADMIN)
    assert refused.status_code == 507
    assert refused.json()["detail"] == (f"feedback not saved: {folder / 'feedback.jsonl'}: No space left on "
                                        f"device; free space in (or restore) {folder} and send it again")
    assert kept.status_code == 201 and [r.labels for r in read_feedback(folder)] == [{"emotion": "SAD"}]


def test_an_unusable_capture_dir_fails_at_startup_in_one_line(trained_dir, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "svlora.cli", "serve", "--model", str(trained_dir / "tiny-base"),
         "--capture", str(tmp_path / "a-file" / "captures")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"svlora serve: error: --capture {tmp_path / 'a-file' / 'captures'}: cannot create it (Not a "
        "directory); choose a writable directory"]


# ---- the writer, in-process ------------------------------------------------------------------
def pending(index: int, audio: bytes = b"RIFF....") -> PendingCapture:
    return PendingCapture(f"cap_{1700000000000 + index}_0123abcd", "clinic", "adapter", {}, 1.0,
                          {"text": f"clip {index}"}, audio, "wav")


def test_a_blocked_writer_never_holds_up_submit_and_a_full_queue_drops_and_counts(tmp_path):
    release, writing, outcomes = threading.Event(), threading.Event(), []

    def blocked_store(folder, max_bytes, item, used):
        writing.set()
        release.wait(30)  # a disk that hangs
        return store(folder, max_bytes, item, used)

    folder = require_capture_dir(tmp_path / "captures", create=True)
    writer = CaptureWriter(folder, 2**20, 1.0, queue_size=2, count=outcomes.append, write=blocked_store)
    accepted = [writer.submit(pending(0))]
    assert writing.wait(10)  # the writer holds item 0 and blocks
    submitted = threading.Event()

    def request_path():  # what the server does per request, while the writer is stuck
        accepted.extend(writer.submit(pending(i)) for i in range(1, 5))
        submitted.set()

    threading.Thread(target=request_path, daemon=True).start()
    assert submitted.wait(10), "submit waited for the blocked writer"
    assert accepted == [True, True, True, False, False] and outcomes == ["dropped", "dropped"]
    assert writer.find(pending(4).id, wait_s=0) is None  # dropped: never stored
    release.set()
    assert writer.find(pending(2).id).response == {"text": "clip 2"}
    writer.close()
    assert sorted(outcomes) == ["dropped", "dropped", "written", "written", "written"]


def test_a_vanished_folder_is_counted_and_logged_once_and_writing_resumes(tmp_path):
    folder = require_capture_dir(tmp_path / "captures", create=True)
    outcomes, lines = [], []
    writer = CaptureWriter(folder, 2**20, 1.0, count=outcomes.append, warn=lines.append)
    shutil.rmtree(folder)
    for index in range(3):
        writer.submit(pending(index))
    wait_for(lambda: len(outcomes) == 3)
    assert outcomes == ["error"] * 3 and not folder.exists()  # not silently recreated
    [line] = lines
    assert pending(0).id in line and "gone" in line and str(folder) in line
    require_capture_dir(folder, create=True)
    writer.submit(pending(3, audio=b"x" * 100))
    assert writer.find(pending(3).id).audio_sha256 == hashlib.sha256(b"x" * 100).hexdigest()
    writer.close()
    assert outcomes[-1] == "written"


def test_a_write_failing_after_the_audio_leaves_no_orphan_audio(tmp_path):
    folder = require_capture_dir(tmp_path / "captures", create=True)
    (folder / "captures" / f"{pending(0).id}.json").mkdir()  # the record cannot be put in place
    with pytest.raises(IsADirectoryError):
        store(folder, 2**20, pending(0), 0)
    assert list((folder / "audio").iterdir()) == []
    assert store(folder, 2**20, pending(1), 0)[0] == "written"
    assert [p.name for p in (folder / "audio").iterdir()] == [f"{pending(1).id}.wav"]


def test_the_server_keeps_serving_when_its_capture_dir_vanishes(capturing, trained_dir):
    """Last of the capturing server's tests: its folder is removed, then put back."""
    url, folder = capturing
    clip = clinic_clips(trained_dir, 1)[0]
    errors = lambda: metric(httpx.get(f"{url}/metrics").text, "svlora_captures_total", outcome="error")  # noqa: E731
    before = errors()
    shutil.rmtree(folder)
    response = post(url, clip)
    assert response.status_code == 200 and response.json()["text"]
    wait_for(lambda: errors() == before + 1)
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    require_capture_dir(folder, create=True)
    capture_id = post(url, clip).json()["id"]
    assert captured(folder, capture_id).audio_sha256 == sha256_file(clip)
