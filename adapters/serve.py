"""`svlora serve`: one SenseVoiceSmall base in memory, adapters and post-processing pipelines
selectable per request by name, behind an OpenAI-style `POST /v1/audio/transcriptions` that
keeps emotion, event and language (and their probabilities). FastAPI + uvicorn; requests are
decoded together by a dynamic batcher (mixed adapters in one forward pass); long files go
through the same VAD segmentation as `svlora transcribe`; adapters load and unload at run time
through a bearer-token admin API. With --capture, sampled requests are kept (adapters/capture.py)
and reviewers' corrections taken at POST /v1/feedback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel as Body
from starlette.background import BackgroundTask

from svlora.adapters.batcher import DynamicBatcher, Job, Overloaded
from svlora.adapters.capture import (FEEDBACK_MAX_BYTES, CaptureWriter, PendingCapture,
                                     audio_extension, checked_capture_dir, checked_feedback_body,
                                     stored_response, wav_bytes)
from svlora.adapters.metrics import ServeMetrics
from svlora.adapters.pool import Conflict, ModelPool, ServeSettings
from svlora.audio import AudioDecodeError
from svlora.captures import (CaptureError, Feedback, append_feedback, checked_labels, new_capture_id,
                             recorded_schema)
from svlora.adapters.realtime import RealtimeSession, Turn, completed_event, to_model_rate
from svlora.adapters.realtime_socket import Connections, RealtimeLimits, run_session
from svlora.decoding import PreparedFile, prepare_file, prepare_waveform, result_from_segments
from svlora.errors import SvloraError
from svlora.subtitles import FORMATS as SUBTITLE_FORMATS, MAX_LINE_SECONDS, render as render_subtitles

RESPONSE_FORMATS = ("json", "verbose_json", "text", *SUBTITLE_FORMATS)
GRANULARITIES = ("word", "segment")
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
REALTIME_PATH = "/v1/realtime"
FEEDBACK_PATH = "/v1/feedback"
CAPTURE_HEADER = "svlora-capture-id"
MIN_TURN_SECONDS = 0.1
WS_MAX_BYTES = 16 * 2**20  # a larger WebSocket message closes the connection (1009)
ADMIN_TOKEN_ENV = "SVLORA_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "SVLORA_FEEDBACK_TOKEN"

__all__ = ["ServeSettings", "ModelPool", "create_app", "serve"]


def segments_of(result: dict, duration: float, heads: tuple[str, ...] = ()) -> list[dict]:
    """Each segment with start, end, text and its own tags, and a cascade's extra heads (one
    segment for a short file). With word timestamps a segment runs from its first word's start
    to its last word's end (else it is the VAD cut) and keeps its words (for subtitles)."""
    items = result.get("segments") or [{**result, "start": 0.0, "end": duration}]
    rows = []
    for i, s in enumerate(items):
        words = s.get("words")
        start, end = (words[0]["start"], words[-1]["end"]) if words else (s["start"], s["end"])
        rows.append({"id": i, "start": start, "end": end, "text": s["text"],
                     "emotion": s.get("emotion"), "event": s.get("event"), "language": s.get("language"),
                     **{head: s[head] for head in heads if head in s},
                     **({"words": words} if words is not None else {})})
    return rows


def tags_body(result: dict, heads: tuple[str, ...] = ()) -> dict:
    """A result's tags and probabilities (and what rules or a cascade added), as json gives."""
    body = {"emotion": result.get("emotion"), "event": result.get("event"),
            "language": result.get("language"), "raw": result["raw"],
            "emotion_probs": result.get("emotion_probs"), "event_probs": result.get("event_probs"),
            "language_probs": result.get("language_probs")}
    for key in ("stage1_emotion", "stage1_event", "rules_fired",
                *(name for head in heads for name in (head, f"{head}_probs"))):
        if key in result:
            body[key] = result[key]
    return body


def response_body(result: dict, duration: float, response_format: str, heads: tuple[str, ...] = (),
                  granularities: tuple[str, ...] = ("segment",),
                  subtitle_seconds: float = MAX_LINE_SECONDS, response_id: str | None = None) -> Response:
    """The response in `response_format`; `heads` (the label schema's extra heads, e.g. role)
    are returned with their probabilities where a cascade predicted them; verbose_json has
    `words` when `granularities` has "word"; json bodies lead with `response_id` when given."""
    text = result["text"]
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format in SUBTITLE_FORMATS:
        return PlainTextResponse(render_subtitles(segments_of(result, duration), response_format,
                                                  subtitle_seconds))
    body = {**({"id": response_id} if response_id else {}), "text": text, **tags_body(result, heads)}
    if response_format == "verbose_json":
        segments = [{k: v for k, v in s.items() if k != "words"} for s in segments_of(result, duration, heads)]
        body.update(task="transcribe", duration=round(duration, 3), segments=segments)
        if "word" in granularities:
            body["words"] = result.get("words", [])
    return JSONResponse(body)


def needs_timestamps(response_format: str) -> bool:
    """verbose_json's segment times and words and subtitle cues come from word timestamps."""
    return response_format in ("verbose_json", *SUBTITLE_FORMATS)


def checked_granularities(values: list[str] | None, response_format: str) -> tuple[str, ...]:
    granularities = tuple(values or ("segment",))
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown:
        raise HTTPException(400, f"timestamp_granularities[] {unknown[0][:40]!r}: use word and/or segment")
    if values and response_format != "verbose_json":
        raise HTTPException(400, "timestamp_granularities[] needs response_format verbose_json")
    return granularities


STREAM_AHEAD = 4  # a streamed file's segments in the batcher at once


@dataclass
class TranscriptionOptions:
    """A transcription request's form fields."""

    model: str
    language: str
    response_format: str
    use_itn: bool
    hotwords: str | None
    stream: bool
    granularities: list[str] | None

    def checked(self, languages: list[str]) -> tuple[str, ...]:
        """The timestamp granularities; HTTPException 400 naming a bad field."""
        if self.response_format not in RESPONSE_FORMATS:
            raise HTTPException(400, f"response_format {self.response_format[:40]!r}: use one of "
                                f"{', '.join(RESPONSE_FORMATS)}")
        if self.stream and self.response_format not in ("json", "text"):
            raise HTTPException(400, f"stream=true gives text deltas: use response_format json or "
                                f"text, not {self.response_format}")
        if self.language not in languages:
            raise HTTPException(400, f"language {self.language[:40]!r}: use one of {', '.join(languages)}")
        return checked_granularities(self.granularities, self.response_format)


def sse(event: dict) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def segment_event(item: dict, index: int, start: float, end: float, heads: tuple[str, ...]) -> dict:
    """What a streamed delta says about its segment: span, tags and probabilities."""
    return {"id": index, "start": start, "end": end, **tags_body(item, heads)}


def require_bearer(expected: str | None, authorization: str | None, off: str) -> None:
    """HTTPException 403 (`off` says how to turn it on) when no token is configured, 401 for a
    missing or wrong bearer token."""
    if not expected:
        raise HTTPException(403, off)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


async def bounded_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes `limit` bytes (read no further)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"body larger than {limit // 1024} KiB; send one feedback record")
    return data


class AdapterLoad(Body):
    name: str
    path: str


def create_app(pool: ModelPool) -> FastAPI:
    settings = pool.settings
    metrics = ServeMetrics()
    metrics.adapters.set(len(pool.adapters))

    def decode_jobs(jobs: list[Job]) -> list[dict | Exception]:
        """In the batcher's thread: decode the group together, then each route's rules or
        cascade (a slow post-processing step must not hold up the event loop)."""
        results = pool.decode([j.prepared for j in jobs], [j.stage1 for j in jobs], jobs[0].language,
                              jobs[0].itn, any(j.with_pooled for j in jobs),
                              [j.hotwords for j in jobs], [j.timestamps for j in jobs])
        return pool.finish([j.route for j in jobs], results)

    batcher = DynamicBatcher(decode_jobs, settings.batch_window_ms, settings.max_batch_requests,
                             settings.max_queue,
                             on_batch=lambda jobs: metrics.observe_batch([j.stage1 for j in jobs]))
    app = FastAPI(title="svlora", version="1")
    app.state.pool, app.state.batcher = pool, batcher
    app.router.add_event_handler("shutdown", batcher.close)
    admin_token = settings.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    # a feedback token, when set, is the only one feedback takes (reviewers need no admin rights)
    feedback_token = settings.feedback_token or os.environ.get(FEEDBACK_TOKEN_ENV) or admin_token
    capture = capture_writer(settings, metrics)
    if capture is not None:
        app.router.add_event_handler("shutdown", capture.close)

    def require_admin(authorization: str | None) -> None:
        require_bearer(admin_token, authorization,
                       f"admin API disabled: start with --admin-token or {ADMIN_TOKEN_ENV}")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": pool.names(), "queue": batcher.pending}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": pool.model_entries()}

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.queue.set(batcher.pending)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/adapters", status_code=201)
    async def load_adapter(request: AdapterLoad, authorization: str | None = Header(None)) -> dict:
        require_admin(authorization)
        try:
            entry = await asyncio.to_thread(pool.load_adapter, request.name, request.path)
        except PermissionError as error:
            raise HTTPException(403, str(error)) from None
        except Conflict as error:  # name taken, another admin change under way, all busy
            raise HTTPException(409, str(error)) from None
        except SvloraError as error:
            raise HTTPException(400, str(error)) from None
        metrics.adapters.set(len(pool.adapters))
        return entry

    @app.delete("/v1/admin/adapters/{name}")
    async def unload_adapter(name: str, authorization: str | None = Header(None)) -> dict:
        require_admin(authorization)
        try:
            await asyncio.to_thread(pool.unload_adapter, name)
        except KeyError:
            raise HTTPException(404, f"no adapter {name[:80]!r} is loaded") from None
        except Conflict as error:
            raise HTTPException(409, str(error)) from None
        metrics.adapters.set(len(pool.adapters))
        return {"id": name, "deleted": True}

    @app.post(FEEDBACK_PATH, status_code=201)
    async def feedback(request: Request, authorization: str | None = Header(None)) -> dict:
        """A reviewer's labels for a captured response, appended to DIR/feedback.jsonl."""
        if capture is None:
            raise HTTPException(409, "feedback needs captures: start svlora serve with --capture DIR")
        require_bearer(feedback_token, authorization, "feedback API disabled: start with "
                       f"--feedback-token ({FEEDBACK_TOKEN_ENV}) or --admin-token ({ADMIN_TOKEN_ENV})")
        try:
            capture_id, labels, reviewer = checked_feedback_body(
                await bounded_body(request, FEEDBACK_MAX_BYTES))
            record = await asyncio.to_thread(capture.find, capture_id)
            if record is None:
                raise HTTPException(404, f"capture {capture_id[:40]!r} not found: not captured "
                                    "(sampled out by --capture-rate, or dropped), evicted past "
                                    "--capture-max-gb, or never an id this server gave")
            schema = recorded_schema(record) or pool.labels_of(record.model)  # the one it answered in
            checked = checked_labels(labels, schema, f"feedback on {capture_id}")
        except CaptureError as error:
            raise HTTPException(400, str(error)) from None
        entry = Feedback(capture_id, checked, source="api", reviewer=reviewer)
        try:
            await asyncio.to_thread(append_feedback, capture.folder, entry)
        except OSError as error:  # a full disk, a vanished folder: this record is not kept, say so
            raise HTTPException(507, f"feedback not saved: {error.filename or capture.folder}: "
                                f"{error.strerror or error}; free space in (or restore) "
                                f"{capture.folder} and send it again") from None
        metrics.feedback.inc()
        return asdict(entry)

    @app.middleware("http")
    async def count_transcriptions(request: Request, call_next):
        """Each transcription request counted under the status actually sent: form errors
        (422) and unexpected failures (500, which call_next re-raises) included."""
        if request.url.path != TRANSCRIPTIONS_PATH:
            return await call_next(request)
        started, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:  # the label: a registered name the handler recorded, never the raw form field
            metrics.observe_request(getattr(request.state, "model_label", "unknown"), status,
                                    time.perf_counter() - started)

    @app.post(TRANSCRIPTIONS_PATH)
    async def transcriptions(request: Request, file: UploadFile = File(...), model: str = Form(...),
                             language: str = Form("auto"), response_format: str = Form("json"),
                             use_itn: bool = Form(False), hotwords: str | None = Form(None),
                             stream: bool = Form(False),
                             granularities: list[str] | None = Form(None, alias="timestamp_granularities[]")):
        request.state.model_label = label = model if model in pool.names() else "unknown"
        response, seconds = await transcribe_request(file, TranscriptionOptions(
            model, language, response_format, use_itn, hotwords, stream, granularities))
        metrics.audio.labels(label).inc(seconds)
        return response

    def prepare_upload(data: bytes, filename: str):
        """The upload written, read, cut and featurised (in a worker thread); a 400 names what
        is wrong. The temp file's suffix is fixed: the client's filename is only shown back
        (its extension may be 250 characters long), and audio is decoded by content anyway."""
        with tempfile.NamedTemporaryFile(suffix=".upload") as handle:
            handle.write(data)
            handle.flush()
            try:
                return prepare_file(pool.base, handle.name, max_file_seconds=settings.max_audio_seconds,
                                    vad_loader=pool.vad_model)
            except SvloraError as error:
                reason = str(error).replace(handle.name, filename[:200])
                unreadable = isinstance(error.__cause__, AudioDecodeError)
                raise HTTPException(400, f"unreadable audio: {reason}" if unreadable else reason) from None

    async def decoded(job: Job) -> dict:
        """The job's result from the shared batcher (decoded and post-processed by its worker)."""
        try:
            future = batcher.submit(job)
        except Overloaded as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(error.retry_after)}) from None
        return await asyncio.wrap_future(future)

    async def transcribe_request(file: UploadFile, options: TranscriptionOptions) -> tuple[Response, float]:
        granularities = options.checked(pool.base.labels.decode_languages)
        try:
            hotwords = await asyncio.to_thread(pool.hotwords_for, options.hotwords)
        except SvloraError as error:  # a bad or oversized `hotwords` field
            raise HTTPException(400, str(error)) from None
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            limit = f"{settings.max_upload_bytes / 2**20:g}"
            raise HTTPException(413, f"file larger than {limit} MiB (the server's --max-upload-mb "
                                f"{limit}); send a shorter or compressed file, or raise the limit")
        if not data:
            raise HTTPException(400, "empty file")
        try:
            route = pool.acquire(options.model)
        except KeyError:
            raise HTTPException(404, f"model {options.model[:80]!r} not found; available: "
                                f"{', '.join(pool.names())}") from None
        release = release_once(route)
        # with --capture every json body carries an id; the header says it was captured
        response_id = new_capture_id() if capture is not None else None
        kept = capture is not None and capture.sampled()
        served = pool.served_by(options.model) if kept else None  # while the route is held

        def keep(result: dict, seconds: float) -> bool:
            return kept and capture.submit(PendingCapture(
                response_id, options.model, *served, seconds, stored_response(result), data,
                audio_extension(file.filename), language=options.language))

        try:
            prepared = await asyncio.to_thread(prepare_upload, data, file.filename or "upload")

            def job(piece, post_processed: bool = True, timestamps: bool = False) -> Job:
                return Job(piece, route.stage1, options.language, "withitn" if options.use_itn else "woitn",
                           with_pooled=route.cascade is not None, route=route if post_processed else None,
                           hotwords=hotwords, timestamps=timestamps)

            if options.stream:  # the stream releases the model when it ends, or after a disconnect
                events = stream_events(prepared, route, job, tuple(pool.base.labels.heads), release,
                                       response_id, lambda final: keep(final, prepared.seconds))
                return (StreamingResponse(events, media_type="text/event-stream",
                                          headers={CAPTURE_HEADER: response_id} if kept else None,
                                          background=BackgroundTask(release)), prepared.seconds)
            result = await decoded(job(prepared, timestamps=needs_timestamps(options.response_format)))
        except BaseException:
            release()
            raise
        release()
        response = response_body(result, prepared.seconds, options.response_format,
                                 tuple(pool.base.labels.heads), granularities, settings.subtitle_seconds,
                                 response_id)
        if keep(result, prepared.seconds):
            response.headers[CAPTURE_HEADER] = response_id
        return response, prepared.seconds

    def release_once(route) -> Callable[[], None]:
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                pool.release(route)
        return release

    async def stream_events(prepared: PreparedFile, route, job, heads: tuple[str, ...], release,
                            response_id: str | None = None, keep: Callable[[dict], object] = lambda final: None):
        """Server-sent events in OpenAI's shape: `transcript.text.delta` per segment as it is
        decoded (a segment's text after its post-processing, with its tags), then
        `transcript.text.done` with the whole file's result, which is the non-streamed one: a
        long file's segments are decoded as separate jobs (a few ahead, sharing the batcher's
        forward passes) and the file's result assembled from them as decode_prepared does.
        The done event carries `response_id`; `keep(final)` captures the file's result."""
        tasks: list[asyncio.Future] = []
        try:
            if prepared.how == "whole":
                final = await decoded(job(prepared))
                yield sse({"type": "transcript.text.delta", "delta": final["text"],
                           "segment": segment_event(final, 0, 0.0, prepared.seconds, heads)})
            else:
                pieces = [PreparedFile(prepared.path, prepared.seconds, [segment], prepared.how, [features])
                          for segment, features in zip(prepared.segments, prepared.features)]
                tasks += [asyncio.ensure_future(decoded(job(p, post_processed=False)))
                          for p in pieces[:STREAM_AHEAD]]
                rows, said = [], False
                for index in range(len(pieces)):
                    if index + STREAM_AHEAD < len(pieces):
                        tasks.append(asyncio.ensure_future(decoded(job(pieces[index + STREAM_AHEAD],
                                                                       post_processed=False))))
                    raw = (await tasks[index])["segments"][0]
                    rows.append(raw)
                    [one] = await asyncio.to_thread(pool.finish, [route],
                                                    [result_from_segments(prepared.path, prepared.how, [raw])])
                    segment = one["segments"][0]
                    text = segment["text"]
                    yield sse({"type": "transcript.text.delta", "delta": (" " if said and text else "") + text,
                               "segment": segment_event(segment, index, segment["start"], segment["end"], heads)})
                    said = said or bool(text)
                [final] = await asyncio.to_thread(pool.finish, [route],
                                                  [result_from_segments(prepared.path, prepared.how, rows)])
            if isinstance(final, Exception):
                raise final
            keep(final)
            yield sse({"type": "transcript.text.done", **({"id": response_id} if response_id else {}),
                       "text": final["text"], **tags_body(final, heads),
                       "usage": {"type": "duration", "seconds": round(prepared.seconds, 3)}})
        except HTTPException as error:  # e.g. the queue filled up mid-file
            yield sse({"type": "error", "error": {"message": error.detail, "code": error.status_code}})
        except Exception as error:  # noqa: BLE001 — the client hears it; the server goes on
            yield sse({"type": "error", "error": {"message": f"{type(error).__name__}: {error}", "code": 500}})
        finally:
            for task in tasks:
                task.cancel()
            release()

    connections = Connections(settings.realtime_max_connections)
    limits = RealtimeLimits(settings.realtime_max_connections, settings.realtime_max_session_seconds,
                            settings.realtime_idle_seconds)
    heads = tuple(pool.base.labels.heads)

    async def transcribe_turn(turn: Turn) -> dict:
        """A committed realtime turn through the same path as an upload: resampled as a file
        of its audio would be, cut when long, decoded in the shared batcher."""
        if turn.samples.size < turn.rate * MIN_TURN_SECONDS:
            raise ValueError(f"{turn.samples.size / turn.rate * 1000:.0f} ms of audio is too short "
                             f"to transcribe (at least {MIN_TURN_SECONDS * 1000:.0f} ms)")
        route = pool.acquire(turn.model)  # KeyError: unloaded since the session chose it
        try:
            served = pool.served_by(turn.model) if capture is not None and capture.sampled() else None
            waveform = await asyncio.to_thread(to_model_rate, turn.samples, turn.rate)
            prepared = await asyncio.to_thread(prepare_waveform, pool.base, waveform, turn.item_id,
                                               vad_loader=pool.vad_model)
            result = await decoded(Job(prepared, route.stage1, turn.language, "woitn",
                                       with_pooled=route.cascade is not None, route=route,
                                       hotwords=pool.hotwords))
        finally:
            pool.release(route)
        label = turn.model if turn.model in pool.names() else "unknown"
        metrics.audio.labels(label).inc(prepared.seconds)
        event = completed_event(turn, result, heads)
        if served is not None:  # the turn's audio as the client sent it, as a WAV
            capture_id = new_capture_id()
            samples, rate = turn.samples, turn.rate
            if capture.submit(PendingCapture(capture_id, turn.model, *served, prepared.seconds,
                                             stored_response(result), lambda: wav_bytes(samples, rate),
                                             "wav", endpoint="realtime", language=turn.language)):
                event["capture_id"] = capture_id
        return event

    @app.websocket(REALTIME_PATH)
    async def realtime(websocket: WebSocket, intent: str | None = None) -> None:
        make = lambda: RealtimeSession(settings.base_name, pool.names, pool.base.labels.decode_languages)  # noqa: E731
        await run_session(websocket, intent, make, transcribe_turn, limits, connections)

    return app


def capture_writer(settings: ServeSettings, metrics: ServeMetrics) -> CaptureWriter | None:
    """The --capture folder's writer (its failures counted in `metrics`), None without one."""
    folder = checked_capture_dir(settings.capture_dir, settings.capture_rate, settings.capture_max_bytes)
    if folder is None:
        return None
    return CaptureWriter(folder, settings.capture_max_bytes, settings.capture_rate, settings.capture_queue,
                         count=lambda outcome: metrics.captures.labels(outcome).inc())


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    # a bad --capture fails before the model loads
    checked_capture_dir(settings.capture_dir, settings.capture_rate, settings.capture_max_bytes)
    uvicorn.run(create_app(ModelPool(settings)), host=host, port=port, log_level="warning",
                ws_max_size=WS_MAX_BYTES)
