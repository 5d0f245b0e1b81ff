"""`svlora serve`: one SenseVoiceSmall base in memory, adapters and post-processing pipelines
selectable per request by name, behind an OpenAI-style `POST /v1/audio/transcriptions` that
keeps emotion, event and language (and their probabilities). FastAPI + uvicorn; requests are
decoded together by a dynamic batcher (mixed adapters in one forward pass); long files go
through the same VAD segmentation as `svlora transcribe`; adapters load and unload at run time
through a bearer-token admin API."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel as Body

from svlora.adapters.batcher import DynamicBatcher, Job, Overloaded
from svlora.adapters.metrics import ServeMetrics
from svlora.adapters.pool import Conflict, ModelPool, ServeSettings
from svlora.audio import AudioDecodeError
from svlora.decoding import prepare_file
from svlora.errors import SvloraError

RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt", "vtt")
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
ADMIN_TOKEN_ENV = "SVLORA_ADMIN_TOKEN"

__all__ = ["ServeSettings", "ModelPool", "create_app", "serve"]


def timestamp(seconds: float, separator: str) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{int(rest):02d}{separator}{int(rest % 1 * 1000):03d}"


def segments_of(result: dict, duration: float, heads: tuple[str, ...] = ()) -> list[dict]:
    """Each segment with start, end, text and its own tags, and a cascade's extra heads
    (one segment for a short file)."""
    items = result.get("segments") or [{**result, "start": 0.0, "end": duration}]
    return [{"id": i, "start": s["start"], "end": s["end"], "text": s["text"],
             "emotion": s.get("emotion"), "event": s.get("event"), "language": s.get("language"),
             **{head: s[head] for head in heads if head in s}}
            for i, s in enumerate(items)]


def subtitles(segments: list[dict], kind: str) -> str:
    separator = "," if kind == "srt" else "."
    blocks = []
    for number, segment in enumerate(segments, start=1):
        span = f"{timestamp(segment['start'], separator)} --> {timestamp(segment['end'], separator)}"
        blocks.append(f"{number}\n{span}\n{segment['text']}\n" if kind == "srt" else
                      f"{span}\n{segment['text']}\n")
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(blocks)


def response_body(result: dict, duration: float, response_format: str,
                  heads: tuple[str, ...] = ()) -> Response:
    """The response in `response_format`; `heads` (the label schema's extra heads, e.g. role)
    are returned with their probabilities where a cascade predicted them."""
    text = result["text"]
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles(segments_of(result, duration), response_format))
    body = {"text": text, "emotion": result.get("emotion"), "event": result.get("event"),
            "language": result.get("language"), "raw": result["raw"],
            "emotion_probs": result.get("emotion_probs"), "event_probs": result.get("event_probs"),
            "language_probs": result.get("language_probs")}
    for key in ("stage1_emotion", "stage1_event", "rules_fired",
                *(name for head in heads for name in (head, f"{head}_probs"))):
        if key in result:
            body[key] = result[key]
    if response_format == "verbose_json":
        body.update(task="transcribe", duration=round(duration, 3),
                    segments=segments_of(result, duration, heads))
    return JSONResponse(body)


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
                              [j.hotwords for j in jobs])
        return pool.finish([j.route for j in jobs], results)

    batcher = DynamicBatcher(decode_jobs, settings.batch_window_ms, settings.max_batch_requests,
                             settings.max_queue,
                             on_batch=lambda jobs: metrics.observe_batch([j.stage1 for j in jobs]))
    app = FastAPI(title="svlora", version="1")
    app.state.pool, app.state.batcher = pool, batcher
    app.router.add_event_handler("shutdown", batcher.close)
    admin_token = settings.admin_token or os.environ.get(ADMIN_TOKEN_ENV)

    def require_admin(authorization: str | None) -> None:
        if not admin_token:
            raise HTTPException(403, f"admin API disabled: start with --admin-token or {ADMIN_TOKEN_ENV}")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

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
                             use_itn: bool = Form(False), hotwords: str | None = Form(None)):
        request.state.model_label = label = model if model in pool.names() else "unknown"
        response, seconds = await transcribe_request(file, model, language, response_format, use_itn,
                                                     hotwords)
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

    async def transcribe_request(file: UploadFile, model: str, language: str, response_format: str,
                                 use_itn: bool, terms: str | None) -> tuple[Response, float]:
        if response_format not in RESPONSE_FORMATS:
            raise HTTPException(400, f"response_format {response_format!r}: use one of "
                                f"{', '.join(RESPONSE_FORMATS)}")
        try:
            hotwords = await asyncio.to_thread(pool.hotwords_for, terms)
        except SvloraError as error:  # a bad or oversized `hotwords` field
            raise HTTPException(400, str(error)) from None
        languages = pool.base.labels.decode_languages
        if language not in languages:
            raise HTTPException(400, f"language {language[:40]!r}: use one of {', '.join(languages)}")
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            limit = f"{settings.max_upload_bytes / 2**20:g}"
            raise HTTPException(413, f"file larger than {limit} MiB (the server's --max-upload-mb "
                                f"{limit}); send a shorter or compressed file, or raise the limit")
        if not data:
            raise HTTPException(400, "empty file")
        try:
            route = pool.acquire(model)
        except KeyError:
            raise HTTPException(404, f"model {model[:80]!r} not found; available: "
                                f"{', '.join(pool.names())}") from None
        try:
            prepared = await asyncio.to_thread(prepare_upload, data, file.filename or "upload")
            job = Job(prepared, route.stage1, language, "withitn" if use_itn else "woitn",
                      with_pooled=route.cascade is not None, route=route, hotwords=hotwords)
            try:
                future = batcher.submit(job)
            except Overloaded as error:
                raise HTTPException(503, str(error), headers={"Retry-After": str(error.retry_after)}) from None
            result = await asyncio.wrap_future(future)  # decoded and post-processed by the worker
        finally:
            pool.release(route)
        return (response_body(result, prepared.seconds, response_format, tuple(pool.base.labels.heads)),
                prepared.seconds)

    return app


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(ModelPool(settings)), host=host, port=port, log_level="warning")
