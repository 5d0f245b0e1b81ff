"""Capture folders as `svlora serve --capture DIR` writes them (write_capture, real WAV bytes,
responses shaped like the server's verbose_json), for the review tests."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from svlora.captures import Capture, Feedback, append_feedback, new_capture_id, require_capture_dir, write_capture
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema
from svlora.labels import EMOTION_TAGS, EVENT_TAGS, LANGUAGE_TAGS

RATE = 16000
CLOCK = [1_780_000_000.0]  # ids sort by time: each capture a second after the last


def wav_bytes(seed: int, seconds: float = 0.8) -> bytes:
    """A distinct, non-silent, unclipped 16 kHz clip (a tone plus noise) as WAV bytes."""
    generator = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    samples = 0.3 * np.sin(2 * np.pi * (180 + 7 * seed) * t) + 0.02 * generator.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def distribution(tags: dict, top: str, p_top: float, second: str | None = None, p_second: float = 0.0) -> dict:
    """{'<|TAG|>': p} over every tag of a SenseVoice set, as the decoder returns it: `top` with
    p_top, `second` with p_second, the rest shared out evenly (sums to 1)."""
    named = {f"<|{top}|>": p_top, **({f"<|{second}|>": p_second} if second else {})}
    rest = [tag for tag in tags if tag not in named]
    share = (1.0 - sum(named.values())) / len(rest)
    return {tag: round(named.get(tag, share), 6) for tag in tags}


def response(text: str, emotion: str, p_emotion: float, second: str, p_second: float,
             language: str = "en", p_language: float = 0.97, event: str = "Speech",
             p_event: float = 0.95, emotions: tuple[str, ...] | None = None) -> dict:
    """The server's answer (text + tags_body): tags as <|X|>, every set's probabilities
    (emotions over `emotions`, a schema's classes, else SenseVoice's)."""
    emotions = [f"<|{name}|>" for name in emotions] if emotions else EMOTION_TAGS
    return {"text": text, "raw": f"<|{language}|><|{emotion}|><|{event}|><|woitn|>{text}",
            "emotion": f"<|{emotion}|>", "event": f"<|{event}|>", "language": f"<|{language}|>",
            "emotion_probs": distribution(emotions, emotion, p_emotion, second, p_second),
            "event_probs": distribution(EVENT_TAGS, event, p_event),
            "language_probs": distribution(LANGUAGE_TAGS, language, p_language)}


def add_capture(folder: Path, model: str, answer: dict, seed: int, kind: str = "adapter",
                audio: bytes | None = None, schema: LabelSchema | None = DEFAULT_SCHEMA) -> Capture:
    """Write one capture of the audio `seed` (or `audio`) as model `model` answered it, its
    hashes as serve records them (the label schema it answered in; None: a capture that
    records none)."""
    CLOCK[0] += 1.0
    data = audio if audio is not None else wav_bytes(seed)
    capture_id = new_capture_id(CLOCK[0])
    capture = Capture(id=capture_id, time="2026-12-10T09:00:00.000+00:00", model=model, kind=kind,
                      hashes={"base_sha256": "b" * 64, **({"adapter_sha256": "a" * 64} if kind == "adapter" else {}),
                              **({"labels": schema.to_dict()} if schema else {})},
                      audio=f"audio/{capture_id}.wav", audio_sha256=hashlib.sha256(data).hexdigest(),
                      seconds=len(sf.read(io.BytesIO(data))[0]) / RATE, response=answer)
    write_capture(folder, capture, data)
    return capture


def review(folder: Path, capture: Capture, source: str = "api", reviewer: str | None = None, **labels) -> None:
    append_feedback(folder, Feedback(capture.id, labels, source=source, reviewer=reviewer))


@pytest.fixture
def capture_dir(tmp_path) -> Path:
    return require_capture_dir(tmp_path / "captures-dir", create=True)
