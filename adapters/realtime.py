"""The realtime transcription session behind `WS /v1/realtime?intent=transcription`: OpenAI's
transcription-session events (the subset a transcription client needs), audio decoded from
pcm16 at 24 kHz or G.711 at 8 kHz, turns found by a Silero VAD of the session's own (its
recurrent state is never shared between connections) or committed by the client.

This module holds the session's state and rules and does no I/O: `RealtimeSession.handle(event)`
gives the server events to send and the turns to transcribe; serve.py owns the socket and
sends each turn through the same batcher as file requests."""

from __future__ import annotations

import base64
import binascii
import itertools
import uuid
from dataclasses import dataclass, field

import numpy as np

from svlora.audio import TARGET_RATE

AUDIO_FORMATS = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}  # OpenAI's, and their rates
VAD_WINDOW = 512                  # samples at 16 kHz per Silero VAD step (32 ms)
MAX_EVENT_BYTES = 1 << 20         # one client event (OpenAI allows 15 MiB; 1 MiB is 21 s of pcm16)
MAX_BUFFER_SECONDS = 120.0        # audio not yet committed; past it the append is refused
DEFAULT_TURN_DETECTION = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                          "silence_duration_ms": 500}
END_PAD_MS = 200                  # a turn's audio runs this far past where its speech stopped
SPECULATE_AFTER_MS = 250          # a silence this long starts decoding the turn, in case it ends


def speculation_ms(silence_ms: int) -> int:
    """How long a silence starts a speculative decoding: early enough to save most of the
    wait for the turn's end, late enough to skip the pauses between words."""
    return max(END_PAD_MS, min(SPECULATE_AFTER_MS, silence_ms - 2 * VAD_WINDOW * 1000 // TARGET_RATE))


TURN_DETECTION_BOUNDS = {"threshold": (0.0, 1.0), "prefix_padding_ms": (0, 2000),
                         "silence_duration_ms": (100, 5000)}


class ClientError(Exception):
    """A client event the session refuses: sent back as an `error` event, the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def error_event(error: ClientError, client_event_id: str | None = None) -> dict:
    return {"type": "error", "event_id": new_id("event"),
            "error": {"type": "invalid_request_error", "code": error.code, "message": str(error),
                      "param": error.param, "event_id": client_event_id}}


# ---- audio ---------------------------------------------------------------------------------
def ulaw_table() -> np.ndarray:
    """ITU-T G.711 µ-law byte → 16-bit sample (the standard expansion; audioop left Python)."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (codes >> 4) & 0x07, codes & 0x0F
    magnitude = ((mantissa << 3) + 0x84 << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law byte → 16-bit sample."""
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (codes >> 4) & 0x07, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         (mantissa << 4) + 0x108 << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


G711_TABLES = {"g711_ulaw": ulaw_table(), "g711_alaw": alaw_table()}


def decoded_samples(data: bytes, audio_format: str) -> np.ndarray:
    """A chunk of the session's input format as float32 samples at its own rate."""
    if audio_format == "pcm16":
        if len(data) % 2:
            raise ClientError("invalid_audio", f"pcm16 audio must be whole 16-bit samples; this "
                              f"chunk has {len(data)} bytes", "audio")
        pcm = np.frombuffer(data, dtype="<i2")
    else:
        pcm = G711_TABLES[audio_format][np.frombuffer(data, dtype=np.uint8)]
    return pcm.astype(np.float32) / 32768.0


def to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """A turn's audio at 16 kHz, resampled as a file of that audio would be (svlora.audio)."""
    import soxr

    if rate == TARGET_RATE or not samples.size:
        return samples
    return soxr.resample(samples, rate, TARGET_RATE, quality="HQ").astype(np.float32)


# ---- turn detection --------------------------------------------------------------------------
class SileroTurns:
    """Speech start/end in a stream, on a Silero VAD model of its own (one per session): the
    stream is resampled to 16 kHz as it arrives and scored every 32 ms. Positions are in
    milliseconds of the session's audio."""

    def __init__(self, rate: int, threshold: float, silence_ms: int):
        import soxr
        from silero_vad import VADIterator

        from svlora.segments import load_vad

        self.iterator = VADIterator(load_vad().model, threshold=threshold, sampling_rate=TARGET_RATE,
                                    min_silence_duration_ms=silence_ms, speech_pad_ms=0)
        self.resampler = soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32") if rate != TARGET_RATE else None
        self.pending = np.zeros(0, np.float32)
        self.pause_after = speculation_ms(silence_ms) * TARGET_RATE // 1000
        self.paused = False

    def feed(self, samples: np.ndarray) -> list[tuple[str, int]]:
        """(kind, ms) changes found in this chunk: "start" of speech; "pause" once a silence has
        lasted speculation_ms (ms: where the speech stopped), "resume" if speech comes back
        before the end; "end", placed where it was decided (after silence_duration_ms, as
        OpenAI's audio_end_ms is)."""
        import torch

        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.pending = np.concatenate([self.pending, samples])
        changes, vad = [], self.iterator
        while self.pending.size >= VAD_WINDOW:
            window, self.pending = self.pending[:VAD_WINDOW], self.pending[VAD_WINDOW:]
            change = vad(torch.from_numpy(window.copy()))
            if change:
                kind = "start" if "start" in change else "end"
                at = change["start"] if kind == "start" else vad.current_sample
                changes.append((kind, int(at * 1000 // TARGET_RATE)))
                self.paused = False
            elif vad.triggered and vad.temp_end and not self.paused \
                    and vad.current_sample - vad.temp_end >= self.pause_after:
                self.paused = True  # where the speech stopped: the end's own reckoning
                changes.append(("pause", int((vad.temp_end - VAD_WINDOW) * 1000 // TARGET_RATE)))
            elif self.paused and not vad.temp_end:
                self.paused = False
                changes.append(("resume", int(vad.current_sample * 1000 // TARGET_RATE)))
        return changes

    def reset(self) -> None:
        self.iterator.reset_states()
        self.paused = False


# ---- the session -----------------------------------------------------------------------------
@dataclass
class Turn:
    """Committed audio to transcribe: samples at the input rate from `start_ms` to `end_ms` of
    the session's audio."""

    item_id: str
    previous_item_id: str | None
    samples: np.ndarray
    rate: int
    start_ms: int
    end_ms: int
    model: str
    language: str

    @property
    def span(self) -> tuple[int, int]:
        return self.start_ms, self.end_ms


@dataclass
class SessionConfig:
    model: str
    language: str = "auto"
    input_audio_format: str = "pcm16"
    turn_detection: dict | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))

    def to_dict(self) -> dict:
        return {"object": "realtime.transcription_session", "input_audio_format": self.input_audio_format,
                "input_audio_transcription": {"model": self.model, "language": self.language},
                "turn_detection": self.turn_detection}


class RealtimeSession:
    """One connection's state: configuration, the uncommitted audio (at the input rate), the
    turn detector and item ids. `models` and `languages` are what update may choose from;
    `detector(rate, threshold, silence_ms)` makes a turn detector (SileroTurns)."""

    def __init__(self, model: str, models, languages: list[str], detector=SileroTurns,
                 max_buffer_seconds: float = MAX_BUFFER_SECONDS):
        self.id = new_id("sess")
        self.config = SessionConfig(model)
        self.models, self.languages = models, languages
        self.make_detector, self.detector = detector, None
        self.max_buffer_seconds = max_buffer_seconds
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0     # samples of the session's audio before the buffer's first
        self.received = 0         # samples of the session's audio so far
        self.speech_item: str | None = None
        self.speech_start_ms = 0
        self.pause_ms: int | None = None   # where the speech under way stopped, if it has
        # speculation: turns worth decoding before their end is confirmed, and the items whose
        # speculative turn is void (speech came back); the socket layer drains both
        self.speculative: list[Turn] = []
        self.abandoned: list[str] = []
        self.last_item: str | None = None
        self.items = itertools.count()

    @property
    def rate(self) -> int:
        return AUDIO_FORMATS[self.config.input_audio_format]

    def created(self) -> dict:
        return {"type": "transcription_session.created", "event_id": new_id("event"),
                "session": {"id": self.id, **self.config.to_dict()}}

    def handle(self, event: dict) -> tuple[list[dict], list[Turn]]:
        """The server events answering one client event, and turns ready to transcribe;
        ClientError for an event the session refuses (its state unchanged)."""
        kind = event.get("type")
        if kind == "transcription_session.update":
            return [self.update(event.get("session"))], []
        if kind == "input_audio_buffer.append":
            return self.append(event.get("audio"))
        if kind == "input_audio_buffer.commit":
            return self.commit()
        if kind == "input_audio_buffer.clear":
            return self.clear(), []
        raise ClientError("unknown_event", f"unknown event type {str(kind)[:60]!r}; this server "
                          "handles transcription_session.update and input_audio_buffer.append, "
                          ".commit and .clear", "type")

    # -- configuration
    def update(self, session) -> dict:
        if not isinstance(session, dict):
            raise ClientError("invalid_session", "transcription_session.update needs a `session` object",
                              "session")
        config = SessionConfig(self.config.model, self.config.language, self.config.input_audio_format,
                               self.config.turn_detection)
        if "input_audio_format" in session:
            audio_format = session["input_audio_format"]
            if audio_format not in AUDIO_FORMATS:
                raise ClientError("invalid_audio_format", f"input_audio_format {str(audio_format)[:40]!r}: "
                                  f"use one of {', '.join(AUDIO_FORMATS)}", "session.input_audio_format")
            if audio_format != config.input_audio_format and self.buffer.size:
                raise ClientError("buffer_not_empty", "commit or clear the audio buffer before changing "
                                  "input_audio_format", "session.input_audio_format")
            config.input_audio_format = audio_format
        transcription = session.get("input_audio_transcription")
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise ClientError("invalid_session", "input_audio_transcription must be an object",
                                  "session.input_audio_transcription")
            model = transcription.get("model", config.model)
            if model not in self.models():
                raise ClientError("model_not_found", f"model {str(model)[:80]!r} not found; available: "
                                  f"{', '.join(self.models())}", "session.input_audio_transcription.model")
            language = transcription.get("language") or "auto"
            if language not in self.languages:
                raise ClientError("invalid_language", f"language {str(language)[:40]!r}: use one of "
                                  f"{', '.join(self.languages)}", "session.input_audio_transcription.language")
            config.model, config.language = model, language
        if "turn_detection" in session:
            config.turn_detection = checked_turn_detection(session["turn_detection"])
        if config.turn_detection != self.config.turn_detection or \
                config.input_audio_format != self.config.input_audio_format:
            self.detector = None  # remade on the next append with the new settings
            if self.speech_item is not None and self.pause_ms is not None:
                self.abandoned.append(self.speech_item)
            self.speech_item, self.pause_ms = None, None
        self.config = config
        return {"type": "transcription_session.updated", "event_id": new_id("event"),
                "session": {"id": self.id, **config.to_dict()}}

    # -- audio
    def append(self, audio) -> tuple[list[dict], list[Turn]]:
        if not isinstance(audio, str):
            raise ClientError("invalid_audio", "input_audio_buffer.append needs `audio`: base64 of "
                              f"{self.config.input_audio_format} audio", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("invalid_audio", "`audio` is not valid base64", "audio") from None
        return self.add_samples(decoded_samples(data, self.config.input_audio_format))

    def add_samples(self, samples: np.ndarray) -> tuple[list[dict], list[Turn]]:
        """Audio already decoded to float32 at the session's input rate (the demo's microphone)."""
        if (self.buffer.size + samples.size) / self.rate > self.max_buffer_seconds:
            raise ClientError("buffer_full", f"more than {self.max_buffer_seconds:g} s of audio not "
                              "committed; this chunk was refused: commit (or let the VAD end the turn) "
                              "or clear the buffer", "audio")
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += samples.size
        if self.config.turn_detection is None:
            return [], []
        return self.detect(samples)

    def detect(self, samples: np.ndarray) -> tuple[list[dict], list[Turn]]:
        detection = self.config.turn_detection
        if self.detector is None:
            self.detector = self.make_detector(self.rate, detection["threshold"],
                                               detection["silence_duration_ms"])
        events, turns = [], []
        for kind, at_ms in self.detector.feed(samples):
            if kind == "start" and self.speech_item is None:
                self.speech_item = new_id("item")
                self.speech_start_ms = max(at_ms - detection["prefix_padding_ms"], self.ms(self.buffer_start))
                self.pause_ms = None
                events.append({"type": "input_audio_buffer.speech_started", "event_id": new_id("event"),
                               "audio_start_ms": self.speech_start_ms, "item_id": self.speech_item})
            elif kind == "pause" and self.speech_item is not None:
                self.pause_ms = at_ms
                self.speculative.append(self.turn_between(self.speech_item, self.speech_start_ms,
                                                          self.turn_end(at_ms)))
            elif kind == "resume" and self.speech_item is not None and self.pause_ms is not None:
                self.pause_ms = None
                self.abandoned.append(self.speech_item)
            elif kind == "end" and self.speech_item is not None:
                end_ms = min(at_ms, self.ms(self.received))
                events.append({"type": "input_audio_buffer.speech_stopped", "event_id": new_id("event"),
                               "audio_end_ms": end_ms, "item_id": self.speech_item})
                speech_end = self.pause_ms if self.pause_ms is not None else \
                    max(self.speech_start_ms, end_ms - detection["silence_duration_ms"])
                more_events, turn = self.commit_span(self.speech_item, self.speech_start_ms,
                                                     self.turn_end(speech_end))
                events += more_events
                turns.append(turn)
                self.speech_item, self.pause_ms = None, None
        if self.speech_item is None:  # silence: keep only what a turn's prefix padding may need
            keep = self.samples_at(detection["prefix_padding_ms"] + 100)
            drop = max(0, self.buffer.size - keep)
            drop -= (self.buffer_start + drop) % (self.rate // 1000)  # the buffer starts on a ms
            self.buffer, self.buffer_start = self.buffer[drop:], self.buffer_start + drop
        return events, turns

    def commit(self) -> tuple[list[dict], list[Turn]]:
        """The client's commit: the whole buffer becomes a turn (in VAD mode too, ending the
        speech under way)."""
        if not self.buffer.size:
            raise ClientError("input_audio_buffer_commit_empty", "the audio buffer is empty; append "
                              "audio before committing")
        item = self.speech_item or new_id("item")
        if self.pause_ms is not None:
            self.abandoned.append(item)  # the whole buffer, not the speculated span
        self.speech_item, self.pause_ms = None, None
        if self.detector is not None:
            self.detector.reset()
        events, turn = self.commit_span(item, self.ms(self.buffer_start), self.ms(self.received))
        return events, [turn]

    def turn_end(self, speech_end_ms: int) -> int:
        """A turn's audio ends END_PAD_MS after its speech (never past what was received)."""
        return min(speech_end_ms + END_PAD_MS, self.ms(self.received))

    def turn_between(self, item: str, start_ms: int, end_ms: int) -> Turn:
        first = max(0, self.samples_at(start_ms) - self.buffer_start)
        last = max(first, self.samples_at(end_ms) - self.buffer_start)
        return Turn(item, self.last_item, self.buffer[first:last].copy(), self.rate, start_ms, end_ms,
                    self.config.model, self.config.language)

    def take_speculation(self) -> tuple[list[Turn], list[str]]:
        """Turns to decode ahead of their end, and items whose speculation is void."""
        speculative, abandoned = self.speculative, self.abandoned
        self.speculative, self.abandoned = [], []
        return speculative, abandoned

    def commit_span(self, item: str, start_ms: int, end_ms: int) -> tuple[list[dict], Turn]:
        """The buffer's audio from start_ms to end_ms as a turn; the buffer keeps what follows."""
        turn = self.turn_between(item, start_ms, end_ms)
        last = max(0, self.samples_at(end_ms) - self.buffer_start)
        self.buffer, self.buffer_start = self.buffer[last:], self.buffer_start + last
        committed = {"type": "input_audio_buffer.committed", "event_id": new_id("event"),
                     "previous_item_id": self.last_item, "item_id": item}
        self.last_item = item
        return [committed], turn

    def clear(self) -> list[dict]:
        self.buffer_start += self.buffer.size
        self.buffer = np.zeros(0, np.float32)
        if self.speech_item is not None and self.pause_ms is not None:
            self.abandoned.append(self.speech_item)
        self.speech_item, self.pause_ms = None, None
        if self.detector is not None:
            self.detector.reset()
        return [{"type": "input_audio_buffer.cleared", "event_id": new_id("event")}]

    def ms(self, samples: int) -> int:
        return samples * 1000 // self.rate

    def samples_at(self, ms: int) -> int:
        return ms * self.rate // 1000


def checked_turn_detection(value) -> dict | None:
    """null (the client commits), or server_vad with its settings within bounds."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise ClientError("invalid_turn_detection", "turn_detection: null or {\"type\": \"server_vad\", "
                          "...} (semantic_vad is not offered)", "session.turn_detection")
    detection = dict(DEFAULT_TURN_DETECTION)
    for key, (low, high) in TURN_DETECTION_BOUNDS.items():
        if key in value:
            number = value[key]
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not low <= number <= high:
                raise ClientError("invalid_turn_detection", f"turn_detection.{key} {number!r}: a number "
                                  f"from {low} to {high}", f"session.turn_detection.{key}")
            detection[key] = int(number) if key.endswith("_ms") else float(number)
    return detection


def completed_event(turn: Turn, result: dict, heads: tuple[str, ...] = ()) -> dict:
    """`conversation.item.input_audio_transcription.completed` with SenseVoice's tags."""
    tags = {key: result.get(key) for key in ("emotion", "event", "language", "emotion_probs",
                                             "event_probs", "language_probs")}
    extra = {key: result[key] for head in heads for key in (head, f"{head}_probs") if key in result}
    extra.update({key: result[key] for key in ("rules_fired", "stage1_emotion") if key in result})
    return {"type": "conversation.item.input_audio_transcription.completed", "event_id": new_id("event"),
            "item_id": turn.item_id, "content_index": 0, "transcript": result["text"], **tags, **extra,
            "audio_start_ms": turn.start_ms, "audio_end_ms": turn.end_ms,
            "usage": {"type": "duration", "seconds": round(turn.samples.size / turn.rate, 3)}}
