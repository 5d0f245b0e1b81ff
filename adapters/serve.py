"""`svlora serve`: one SenseVoiceSmall base in memory, adapters selectable per request by name,
behind an OpenAI-style `POST /v1/audio/transcriptions` that keeps emotion, event and language
(and their probabilities). FastAPI + uvicorn; long files go through the same VAD segmentation
as `svlora transcribe`."""

import tempfile
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from svlora.adapter_format import attach_adapter
from svlora.audio import TARGET_RATE, AudioDecodeError, load_audio
from svlora.decoding import transcribe_files
from svlora.errors import SvloraError
from svlora.model import BaseModel, load_base_model, weights_sha256
from svlora.segments import load_vad

RESPONSE_FORMATS = ("json", "verbose_json", "text", "srt", "vtt")
LANGUAGES = ("auto", "zh", "en", "yue", "ja", "ko")


@dataclass
class ServeSettings:
    model: str
    adapters: dict[str, str] = field(default_factory=dict)  # name → adapter dir
    base_name: str = "sensevoice-small"
    device: str = "cpu"
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit
    max_audio_seconds: float = 3600.0
    allow_base_mismatch: bool = False


class ModelPool:
    """The base and its adapters, layered on one PEFT model; a request switches the active
    adapter under a lock (one decode at a time)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.base: BaseModel = load_base_model(settings.model, device=settings.device)
        self.base_sha256 = weights_sha256(self.base.model_dir)
        self.peft_model = None
        self.adapters: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.vad = None
        for name, path in settings.adapters.items():
            if name == settings.base_name:
                raise SvloraError(f"--adapter {name}={path}: {name} is the base model's name")
            self.peft_model, meta = attach_adapter(self.peft_model or self.base.model, path,
                                                   self.base_sha256, settings.allow_base_mismatch,
                                                   name)
            self.adapters[name] = {"path": str(path), "base_sha256": meta.get("base_sha256")}

    def names(self) -> list[str]:
        return [self.settings.base_name, *self.adapters]

    def vad_model(self):
        if self.vad is None:
            self.vad = load_vad() or False
        return self.vad or None

    def transcribe(self, name: str, path: str, language: str, itn: str) -> dict:
        with self.lock:
            if name == self.settings.base_name:
                context = self.peft_model.disable_adapter() if self.peft_model else nullcontext()
            else:
                self.peft_model.set_adapter(name)
                context = nullcontext()
            with context:
                [result] = transcribe_files(self.base, [path], language=language, itn=itn,
                                            max_file_seconds=self.settings.max_audio_seconds,
                                            vad_loader=self.vad_model)
        return result


def timestamp(seconds: float, separator: str) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{int(rest):02d}{separator}{int(rest % 1 * 1000):03d}"


def segments_of(result: dict, duration: float) -> list[dict]:
    """Each segment with start, end, text and its own tags (one segment for a short file)."""
    items = result.get("segments") or [{**result, "start": 0.0, "end": duration}]
    return [{"id": i, "start": s["start"], "end": s["end"], "text": s["text"],
             "emotion": s.get("emotion"), "event": s.get("event"), "language": s.get("language")}
            for i, s in enumerate(items)]


def subtitles(segments: list[dict], kind: str) -> str:
    separator = "," if kind == "srt" else "."
    blocks = []
    for number, segment in enumerate(segments, start=1):
        span = f"{timestamp(segment['start'], separator)} --> {timestamp(segment['end'], separator)}"
        blocks.append(f"{number}\n{span}\n{segment['text']}\n" if kind == "srt" else
                      f"{span}\n{segment['text']}\n")
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(blocks)


def create_app(pool: ModelPool) -> FastAPI:
    app = FastAPI(title="svlora", version="1")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": pool.names()}

    @app.get("/v1/models")
    def models() -> dict:
        entries = [{"id": pool.settings.base_name, "object": "model", "owned_by": "svlora",
                    "base_sha256": pool.base_sha256}]
        entries += [{"id": name, "object": "model", "owned_by": "svlora", "adapter": info["path"],
                     "base_sha256": info["base_sha256"]} for name, info in pool.adapters.items()]
        return {"object": "list", "data": entries}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(...),
                             language: str = Form("auto"), response_format: str = Form("json"),
                             use_itn: bool = Form(False)):
        if model not in pool.names():
            raise HTTPException(404, f"model {model!r} not found; available: {', '.join(pool.names())}")
        if response_format not in RESPONSE_FORMATS:
            raise HTTPException(400, f"response_format {response_format!r}: use one of "
                                f"{', '.join(RESPONSE_FORMATS)}")
        if language not in LANGUAGES:
            raise HTTPException(400, f"language {language!r}: use one of {', '.join(LANGUAGES)}")
        data = await file.read(pool.settings.max_upload_bytes + 1)
        if len(data) > pool.settings.max_upload_bytes:
            raise HTTPException(413, f"file larger than {pool.settings.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty file")
        with tempfile.NamedTemporaryFile(suffix=Path(file.filename or "audio").suffix) as handle:
            handle.write(data)
            handle.flush()
            try:
                duration = load_audio(handle.name).size / TARGET_RATE
                result = pool.transcribe(model, handle.name, language,
                                         "withitn" if use_itn else "woitn")
            except AudioDecodeError as error:
                raise HTTPException(400, f"unreadable audio: {error}") from None
            except SvloraError as error:
                raise HTTPException(400, str(error)) from None
        text = result["text"]
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(subtitles(segments_of(result, duration), response_format))
        body = {"text": text, "emotion": result.get("emotion"), "event": result.get("event"),
                "language": result.get("language"), "raw": result["raw"],
                "emotion_probs": result.get("emotion_probs"), "event_probs": result.get("event_probs"),
                "language_probs": result.get("language_probs")}
        if response_format == "verbose_json":
            body.update(task="transcribe", duration=round(duration, 3),
                        segments=segments_of(result, duration))
        return JSONResponse(body)

    return app


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(ModelPool(settings)), host=host, port=port, log_level="warning")
