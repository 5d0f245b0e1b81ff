"""Time in `svlora serve`, over real HTTP and WebSocket against a server in a subprocess:
word timestamps and subtitles, `stream=true` through the openai client (deltas, and a done text
equal to the plain response), and `/v1/realtime?intent=transcription` (each committed turn
transcribed exactly as an upload of the same audio, Silero turns on real speech, sessions
side by side as each alone, every refusal an error event while the server keeps serving)."""

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.adapters.test_serve import clinic_clips, metric, post, start_server, stop
from tests.conftest import SHARED_DATA

SUBTITLE_SECONDS = 1.5
IDLE_SECONDS, SESSION_SECONDS = 3, 12
ESD = SHARED_DATA / "esd_en_0020_dev"


@pytest.fixture(scope="module")
def server(trained_dir):
    process, url = start_server(
        trained_dir, "--rules", "clinic+rules=clinic:soft_particles", "--batch-window-ms", "100",
        "--subtitle-seconds", str(SUBTITLE_SECONDS), "--realtime-max-connections", "3",
        "--realtime-idle-seconds", str(IDLE_SECONDS), "--realtime-max-session-seconds", str(SESSION_SECONDS))
    yield url
    stop(process)


@pytest.fixture(scope="module")
def long_clinic_file(trained_dir, tmp_path_factory) -> Path:
    """45 s of clinic clips with half-second pauses: cut into segments by the server."""
    pieces = [sf.read(c, dtype="float32")[0] for c in clinic_clips(trained_dir, 40)]
    gap = np.zeros(8000, np.float32)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.concatenate([x for p in pieces for x in (p, gap)])[:16000 * 45], 16000)
    return path


# ---- files: timestamps, subtitles, streams ----------------------------------------------------
def test_words_are_ordered_inside_their_segments_and_subtitle_cues_are_short(server, long_clinic_file):
    body = post(server, long_clinic_file, response_format="verbose_json",
                **{"timestamp_granularities[]": ["word", "segment"]}).json()
    words, segments = body["words"], body["segments"]
    assert len(segments) > 1 and len(words) > 20
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] for w in words)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    assert " ".join(w["word"] for w in words) == " ".join(body["text"].split())  # English, no ITN
    for segment in segments:  # a segment runs from its first word to its last
        inside = [w for w in words if segment["start"] <= w["start"] and w["end"] <= segment["end"]]
        assert inside and inside[0]["start"] == segment["start"] and inside[-1]["end"] == segment["end"]
        assert segment["emotion"].startswith("<|")
    assert "words" not in post(server, long_clinic_file, response_format="verbose_json").json()

    srt = post(server, long_clinic_file, response_format="srt").text
    cues = [block.split("\n") for block in srt.strip().split("\n\n")]
    spans = [[clock_seconds(t) for t in cue[1].split(" --> ")] for cue in cues]
    assert len(cues) > len(segments) and [int(cue[0]) for cue in cues] == list(range(1, len(cues) + 1))
    assert all(0 < end - start <= SUBTITLE_SECONDS + 1e-9 for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert " ".join(cue[2] for cue in cues) == " ".join(body["text"].split())
    vtt = post(server, long_clinic_file, response_format="vtt").text
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(cues)


def clock_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.parametrize("model", ["clinic", "clinic+rules"])
def test_a_stream_through_the_openai_client_ends_with_the_plain_text(server, trained_dir, long_clinic_file,
                                                                     model):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    for path in (clinic_clips(trained_dir, 1)[0], long_clinic_file):
        plain = post(server, path, model=model).json()
        with open(path, "rb") as handle:
            events = list(client.audio.transcriptions.create(model=model, file=handle, stream=True))
        deltas, done = events[:-1], events[-1]
        assert [e.type for e in deltas] == ["transcript.text.delta"] * len(deltas) and deltas
        assert done.type == "transcript.text.done"
        assert done.text == plain["text"] == "".join(e.delta for e in deltas)
        tags = ("emotion", "event", "language", "emotion_probs", "raw")
        assert {k: done.model_extra[k] for k in tags} == {k: plain[k] for k in tags}
        assert all(e.model_extra["segment"]["emotion"].startswith("<|") for e in deltas)
        if path == long_clinic_file:  # a delta per segment, in order
            verbose = post(server, path, model=model, response_format="verbose_json").json()
            assert len(deltas) == len(verbose["segments"]) > 1
            assert [e.model_extra["segment"]["emotion"] for e in deltas] == \
                [s["emotion"] for s in verbose["segments"]]


def test_bad_timestamp_and_stream_fields_get_400(server, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]
    refusals = {"timestamp_granularities[] 'char': use word and/or segment":
                {"response_format": "verbose_json", "timestamp_granularities[]": "char"},
                "timestamp_granularities[] needs response_format verbose_json":
                {"timestamp_granularities[]": "word"},
                "stream=true gives text deltas: use response_format json or text, not srt":
                {"stream": "true", "response_format": "srt"}}
    for message, fields in refusals.items():
        response = post(server, clip, **fields)
        assert (response.status_code, response.json()["detail"]) == (400, message)


# ---- realtime ---------------------------------------------------------------------------------
def realtime(server: str):
    return connect(server.replace("http", "ws") + "/v1/realtime?intent=transcription", max_size=2**25)


def events_until(ws, done, seconds: float = 60) -> list[dict]:
    """Server events up to and including the one `done(event)` accepts."""
    received, deadline = [], time.time() + seconds
    while True:
        event = json.loads(ws.recv(timeout=max(deadline - time.time(), 0.1)))
        received.append(event)
        if done(event):
            return received


def opened(ws, **session) -> dict:
    assert json.loads(ws.recv(timeout=30))["type"] == "transcription_session.created"
    ws.send(json.dumps({"type": "transcription_session.update", "session": session}))
    event = json.loads(ws.recv(timeout=30))
    assert event["type"] == "transcription_session.updated", event
    return event


def send_audio(ws, data: bytes, chunk_bytes: int = 9600) -> None:
    for start in range(0, len(data), chunk_bytes):
        ws.send(json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(data[start:start + chunk_bytes]).decode()}))


def pcm16_24k(samples16k: np.ndarray) -> bytes:
    samples = soxr.resample(samples16k, 16000, 24000, quality="HQ")
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def wav_of(pcm: bytes, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.frombuffer(pcm, "<i2"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def posted(server, data: bytes, model: str = "clinic") -> dict:
    response = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("turn.wav", data)},
                          data={"model": model}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def committed_turns(server, audios: list[bytes], model="clinic", barrier=None, **session) -> list[dict]:
    """Each audio appended and committed by hand (after `barrier`, when given, so that two
    sessions commit together); the completed events in order."""
    with realtime(server) as ws:
        opened(ws, input_audio_transcription={"model": model}, turn_detection=None, **session)
        completed = []
        for data in audios:
            send_audio(ws, data)
            if barrier is not None:
                barrier.wait(timeout=60)
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = events_until(ws, lambda e: e["type"].endswith((".completed", ".failed")))
            completed += [e for e in events if e["type"].endswith(".completed")]
    assert len(completed) == len(audios)
    return completed


def same_result(event: dict, upload: dict) -> bool:
    return (event["transcript"], event["emotion"], event["event"], event["language"], event["emotion_probs"]) == \
        (upload["text"], upload["emotion"], upload["event"], upload["language"], upload["emotion_probs"])


def test_committed_pcm16_turns_equal_uploads_of_the_same_audio(server, trained_dir):
    audios = [pcm16_24k(sf.read(clip, dtype="float32")[0]) for clip in clinic_clips(trained_dir, 3)]
    completed = committed_turns(server, audios)
    assert len(completed) == 3
    for event, data in zip(completed, audios):
        assert same_result(event, posted(server, wav_of(data))), event
        assert event["usage"]["seconds"] == pytest.approx(len(data) / 2 / 24000, abs=0.002)


def test_g711_ulaw_turns_decode_as_libsndfile_decodes_them(server, trained_dir, tmp_path):
    clip = clinic_clips(trained_dir, 1)[0]
    samples = soxr.resample(sf.read(clip, dtype="float32")[0], 16000, 8000, quality="HQ")
    raw, wav = tmp_path / "turn.ulaw", tmp_path / "turn.wav"
    sf.write(raw, samples, 8000, format="RAW", subtype="ULAW")
    sf.write(wav, samples, 8000, format="WAV", subtype="ULAW")
    [event] = committed_turns(server, [raw.read_bytes()], input_audio_format="g711_ulaw")
    assert same_result(event, posted(server, wav.read_bytes()))


def test_sessions_side_by_side_get_what_each_gets_alone_and_share_forward_passes(server, trained_dir):
    """Two sessions on different models commit at the same moments: each hears what it hears
    alone, and their turns meet in forward passes (batches holding both models)."""
    clips, models = clinic_clips(trained_dir, 6), ("clinic", "sensevoice-small")
    audios = [[pcm16_24k(sf.read(c, dtype="float32")[0]) for c in clips[i::2]] for i in range(2)]
    alone = [[e["transcript"] for e in committed_turns(server, a, m)] for a, m in zip(audios, models)]
    before = httpx.get(f"{server}/metrics").text
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as threads:
        together = list(threads.map(lambda a, m: [e["transcript"] for e in committed_turns(server, a, m, barrier)],
                                    audios, models))
    after = httpx.get(f"{server}/metrics").text
    assert together == alone and alone[0] != alone[1]
    grew = {name: metric(after, name) - metric(before, name)
            for name in ("svlora_batch_models_sum", "svlora_batch_models_count")}
    assert grew["svlora_batch_models_sum"] > grew["svlora_batch_models_count"]  # some batch had both


@pytest.mark.skipif(not ESD.is_dir(), reason=f"needs the real recordings in {ESD} (Silero VAD does "
                    "not hear the generated demo speech as speech)")
def test_server_vad_turns_on_real_speech_one_completed_each_equal_to_uploads(server):
    clips = sorted(ESD.glob("Angry/*.flac"))[:4]
    pause = np.zeros(16000, np.float32)
    pieces, truth, at = [pause], [], 1.0
    for clip in clips:
        samples = sf.read(clip, dtype="float32")[0]
        pieces += [samples, pause]
        truth.append((at, at + samples.size / 16000))
        at += samples.size / 16000 + 1.0
    audio = pcm16_24k(np.concatenate(pieces))
    with realtime(server) as ws:
        opened(ws, input_audio_transcription={"model": "clinic"},
               turn_detection={"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300})
        send_audio(ws, audio)
        events = []
        while sum(e["type"].endswith(".completed") for e in events) < len(clips):
            events += events_until(ws, lambda e: e["type"].endswith((".completed", ".failed")))
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    completed = [e for e in events if e["type"].endswith(".completed")]
    assert len(started) == len(completed) == len(clips)
    for (start, end), event in zip(truth, completed):  # the turn covers the clip's speech
        assert start - 0.4 <= event["audio_start_ms"] / 1000 <= start + 0.5  # (clips open and end
        assert end - 0.5 <= event["audio_end_ms"] / 1000 <= end + 0.5        # with some silence)
        assert event["emotion"].startswith("<|")
        turn = audio[event["audio_start_ms"] * 48:event["audio_end_ms"] * 48]
        assert same_result(event, posted(server, wav_of(turn)))


def error_of(ws) -> dict:
    event = json.loads(ws.recv(timeout=30))
    assert event["type"] == "error", event
    return event["error"]


def test_bad_events_get_error_events_and_the_session_goes_on(server, trained_dir):
    clip_audio = pcm16_24k(sf.read(clinic_clips(trained_dir, 1)[0], dtype="float32")[0])
    with realtime(server) as ws:
        opened(ws, turn_detection=None)
        ws.send(json.dumps({"type": "transcription_session.update", "event_id": "mine",
                            "session": {"input_audio_transcription": {"model": "nope"}}}))
        error = error_of(ws)
        assert (error["code"], error["event_id"], error["param"]) == \
            ("model_not_found", "mine", "session.input_audio_transcription.model")
        assert "available: sensevoice-small, clinic, clinic+rules" in error["message"]
        bad = {"invalid_audio": {"type": "input_audio_buffer.append", "audio": "not base64!"},
               "unknown_event": {"type": "response.create"},
               "input_audio_buffer_commit_empty": {"type": "input_audio_buffer.commit"},
               "invalid_audio_format": {"type": "transcription_session.update",
                                        "session": {"input_audio_format": "opus"}}}
        for code, event in bad.items():
            ws.send(json.dumps(event))
            assert error_of(ws)["code"] == code
        ws.send("{not json")
        assert error_of(ws)["code"] == "invalid_json"
        ws.send(b"\x00\x01")
        assert error_of(ws)["code"] == "invalid_event"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (2 << 20)}))
        assert error_of(ws)["code"] == "event_too_large"
        send_audio(ws, b"\x01\x02\x03", chunk_bytes=3)
        assert "whole 16-bit samples" in error_of(ws)["message"]
        send_audio(ws, clip_audio)  # still serving this session
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        [completed] = [e for e in events_until(ws, lambda e: e["type"].endswith(".completed"))
                       if e["type"].endswith(".completed")]
        assert completed["transcript"] == posted(server, wav_of(clip_audio), "sensevoice-small")["text"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_limits_close_sessions_with_their_reason(server):
    with connect(server.replace("http", "ws") + "/v1/realtime") as ws:  # no intent
        assert error_of(ws)["code"] == "invalid_intent"
    with ExitStack() as stack:
        for _ in range(3):
            ws = stack.enter_context(realtime(server))
            assert json.loads(ws.recv(timeout=30))["type"] == "transcription_session.created"
        with realtime(server) as extra:
            error = error_of(extra)
            assert error["code"] == "too_many_sessions" and "--realtime-max-connections" in error["message"]
    time.sleep(0.5)  # the server sees the closes
    with realtime(server) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "transcription_session.created"
        started = time.time()
        assert error_of(ws)["code"] == "idle_timeout"
        assert IDLE_SECONDS - 0.5 <= time.time() - started <= IDLE_SECONDS + 5
    with realtime(server) as ws:
        opened(ws, turn_detection=None)
        started = time.time()
        while True:  # busy, never idle: the session's own length ends it
            with suppress(ConnectionClosed):  # closed while we slept: its error is still to read
                ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            event = json.loads(ws.recv(timeout=30))
            if event["type"] == "error":
                break
            time.sleep(1.0)
        assert event["error"]["code"] == "session_expired"
        assert SESSION_SECONDS - 1 <= time.time() - started <= SESSION_SECONDS + 5
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
