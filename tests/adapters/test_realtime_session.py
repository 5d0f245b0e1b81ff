"""The realtime session's rules without a socket: G.711 against the ITU values, audio chunks
refused with their reason, turns cut where the detector says with the prefix padding, the
buffer bounded in silence, commit/clear, session updates validated, and Silero's state kept
per session (two sessions fed in turns give what each gives alone)."""

import base64

import numpy as np
import pytest
import soxr

from svlora.adapters.realtime import (ClientError, RealtimeSession, SileroTurns, alaw_table,
                                      completed_event, decoded_samples, ulaw_table)
from tests.reliability.test_long_audio import speechy_file

MODELS = ["base", "clinic"]


class EnergyTurns:
    """A turn detector for the session's bookkeeping tests: speech is any 10 ms frame above an
    amplitude, an end is `silence_ms` of quiet (Silero's own behaviour is tested below)."""

    def __init__(self, rate, threshold, silence_ms, pause_ms=None):
        self.rate, self.silence_ms, self.pause_ms = rate, silence_ms, pause_ms
        self.position = self.quiet_since = 0
        self.speaking = self.paused = False

    def feed(self, samples):
        changes, frame = [], self.rate // 100
        for start in range(0, samples.size, frame):
            loud = np.abs(samples[start:start + frame]).max(initial=0) > 0.1
            ms = (self.position + start) * 1000 // self.rate
            if loud and not self.speaking:
                self.speaking = True
                changes.append(("start", ms))
            if loud:
                if self.paused:
                    self.paused = False
                    changes.append(("resume", ms))
                self.quiet_since = None
            elif self.speaking:
                self.quiet_since = ms if self.quiet_since is None else self.quiet_since
                if self.pause_ms and not self.paused and ms + 10 - self.quiet_since >= self.pause_ms:
                    self.paused = True
                    changes.append(("pause", self.quiet_since))
                if ms + 10 - self.quiet_since >= self.silence_ms:
                    self.speaking = self.paused = False
                    changes.append(("end", ms + 10))
        self.position += samples.size
        return changes

    def reset(self):
        self.speaking = False


def session(**kwargs):
    return RealtimeSession("base", lambda: MODELS, ["auto", "en", "zh"], detector=EnergyTurns, **kwargs)


def pcm16(samples: np.ndarray) -> str:
    return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def tone(seconds, rate=24000):
    return 0.5 * np.sin(2 * np.pi * 200 * np.arange(int(seconds * rate)) / rate).astype(np.float32)


def quiet(seconds, rate=24000):
    return np.zeros(int(seconds * rate), np.float32)


def append(s, samples, chunk_seconds=0.1):
    events, turns = [], []
    step = int(chunk_seconds * s.rate)
    for start in range(0, samples.size, step):
        more, done = s.handle({"type": "input_audio_buffer.append", "audio": pcm16(samples[start:start + step])})
        events += more
        turns += done
    return events, turns


def test_g711_tables_match_the_itu_values():
    ulaw, alaw = ulaw_table(), alaw_table()
    assert (ulaw[0xFF], ulaw[0x7F], ulaw[0x00], ulaw[0x80]) == (0, 0, -32124, 32124)
    assert (alaw[0xD5], alaw[0x55], alaw[0xAA], alaw[0x2A]) == (8, -8, 32256, -32256)
    assert len(set(ulaw.tolist())) == 255 and len(set(alaw.tolist())) == 256  # µ-law has ±0
    assert np.all(np.diff(ulaw[0x80:0xFF][::-1].astype(int)) > 0)  # monotone within a sign


def test_bad_audio_is_refused_with_its_reason():
    s = session()
    with pytest.raises(ClientError, match="whole 16-bit samples; this chunk has 3 bytes"):
        s.handle({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()})
    with pytest.raises(ClientError, match="not valid base64"):
        s.handle({"type": "input_audio_buffer.append", "audio": "%%%"})
    with pytest.raises(ClientError, match="needs `audio`"):
        s.handle({"type": "input_audio_buffer.append"})
    with pytest.raises(ClientError, match="unknown event type 'response.create'"):
        s.handle({"type": "response.create"})
    with pytest.raises(ClientError, match="buffer is empty"):
        s.handle({"type": "input_audio_buffer.commit"})
    assert decoded_samples(b"\x00\x80\xff\x7f", "pcm16").tolist() == [-1.0, 32767 / 32768]


def test_turns_are_cut_where_speech_starts_and_stops_with_the_prefix_padding():
    s = session()
    audio = np.concatenate([quiet(1.0), tone(1.2), quiet(1.0), tone(0.8), quiet(1.0)])
    events, turns = append(s, audio)
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    assert kinds == ["speech_started", "speech_stopped", "committed"] * 2
    # a turn ends END_PAD_MS (200) after its speech; speech_stopped says when that was decided
    assert [(t.start_ms, t.end_ms) for t in turns] == [(700, 2400), (2900, 4200)]
    assert [e["audio_start_ms"] for e in events if "audio_start_ms" in e] == [700, 2900]
    assert [e["audio_end_ms"] for e in events if "audio_end_ms" in e] == [2700, 4500]
    # a turn is exactly the session's audio between its start and end
    assert np.array_equal(turns[0].samples, decoded_samples(base64.b64decode(pcm16(audio)), "pcm16")[16800:57600])
    assert turns[1].previous_item_id == turns[0].item_id == events[2]["item_id"]


def test_silence_keeps_the_buffer_small_and_a_long_unended_turn_is_refused_not_dropped():
    s = session(max_buffer_seconds=6.0)
    append(s, quiet(30.0), chunk_seconds=1.0)
    assert s.buffer.size <= 0.4 * s.rate and s.received == 30 * s.rate
    s.handle({"type": "transcription_session.update", "session": {"turn_detection": None}})
    append(s, quiet(4.9), chunk_seconds=0.7)
    with pytest.raises(ClientError, match="more than 6 s of audio not committed; this chunk was refused"):
        append(s, quiet(1.0), chunk_seconds=1.0)
    events, [turn] = s.handle({"type": "input_audio_buffer.commit"})  # the 0.4 s kept and the 4.9 s
    assert events[0]["type"] == "input_audio_buffer.committed" and turn.samples.size == 5.3 * s.rate


def test_manual_commit_and_clear():
    s = session()
    s.handle({"type": "transcription_session.update", "session": {"turn_detection": None}})
    append(s, tone(0.5))
    events, _ = s.handle({"type": "input_audio_buffer.clear"})
    assert events[0]["type"] == "input_audio_buffer.cleared" and s.buffer.size == 0
    append(s, tone(0.3))
    _, [turn] = s.handle({"type": "input_audio_buffer.commit"})
    assert (turn.start_ms, turn.end_ms, turn.samples.size) == (500, 800, 7200)


def test_updates_are_validated_and_a_refused_one_changes_nothing():
    s = session()
    updated = s.update({"input_audio_format": "g711_ulaw",
                        "input_audio_transcription": {"model": "clinic", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}})
    assert updated["session"]["input_audio_transcription"] == {"model": "clinic", "language": "en"}
    assert updated["session"]["turn_detection"]["silence_duration_ms"] == 800 and s.rate == 8000
    refusals = {"model 'nope' not found; available: base, clinic": {"input_audio_transcription": {"model": "nope"}},
                "input_audio_format 'mp3'": {"input_audio_format": "mp3"},
                "language 'xx'": {"input_audio_transcription": {"language": "xx"}},
                "semantic_vad is not offered": {"turn_detection": {"type": "semantic_vad"}},
                "threshold 2: a number from 0.0 to 1.0": {"turn_detection": {"type": "server_vad", "threshold": 2}},
                "needs a `session` object": None}
    for message, update in refusals.items():
        with pytest.raises(ClientError, match=message):
            s.handle({"type": "transcription_session.update", "session": update})
    assert s.config.model == "clinic" and s.config.input_audio_format == "g711_ulaw"
    append(s, np.full(800, 0.2, np.float32))
    with pytest.raises(ClientError, match="commit or clear the audio buffer before changing"):
        s.update({"input_audio_format": "pcm16"})


def test_completed_events_carry_the_tags_and_the_turns_span():
    s = session()
    _, [turn] = append(s, np.concatenate([quiet(0.5), tone(1.0), quiet(1.0)]))
    result = {"text": "hello", "emotion": "<|HAPPY|>", "event": "<|Speech|>", "language": "<|en|>",
              "emotion_probs": {"<|HAPPY|>": 0.9}, "event_probs": {}, "language_probs": {}, "role": "teacher",
              "role_probs": {"teacher": 1.0}}
    event = completed_event(turn, result, ("role",))
    assert (event["transcript"], event["emotion"], event["role"], event["item_id"]) == \
        ("hello", "<|HAPPY|>", "teacher", turn.item_id)
    assert event["usage"]["seconds"] == pytest.approx((turn.end_ms - turn.start_ms) / 1000, abs=0.002)


def test_silero_state_is_per_session(tmp_path):
    """Two sessions' detectors fed chunk by chunk in alternation give exactly what each gives
    alone: nothing of one stream's recurrent state leaks into the other."""
    import soundfile as sf

    samples, rate = sf.read(speechy_file(tmp_path / "speechy.wav", minutes=0.5), dtype="float32")
    streams = [soxr.resample(samples, rate, 24000).astype(np.float32),
               soxr.resample(samples[::-1].copy(), rate, 24000).astype(np.float32)]

    def changes(detector, stream):
        return [c for start in range(0, stream.size, 2400) for c in detector.feed(stream[start:start + 2400])]

    alone = [changes(SileroTurns(24000, 0.5, 500), stream) for stream in streams]
    assert all(len(found) >= 4 for found in alone), alone  # it hears the bursts
    detectors = [SileroTurns(24000, 0.5, 500) for _ in streams]
    together = [[], []]
    for start in range(0, streams[0].size, 2400):
        for index, (detector, stream) in enumerate(zip(detectors, streams)):
            together[index] += detector.feed(stream[start:start + 2400])
    assert together == alone


def test_a_long_enough_silence_speculates_the_turn_a_resumed_one_voids_it():
    s = RealtimeSession("base", lambda: MODELS, ["auto"],
                        detector=lambda rate, threshold, silence: EnergyTurns(rate, threshold, silence, 250))
    audio = np.concatenate([quiet(0.5), tone(1.0), quiet(0.3), tone(0.5), quiet(1.0)])
    _, turns = append(s, audio[:int(1.75 * 24000)])  # 250 ms into the inner pause
    speculative, abandoned = s.take_speculation()
    assert [t.span for t in speculative] == [(200, 1700)] and abandoned == [] and turns == []
    _, turns = append(s, audio[int(1.75 * 24000):int(2.5 * 24000)])  # speech again, then 200 ms quiet
    speculative, abandoned = s.take_speculation()
    assert speculative == [] and abandoned == [s.speech_item] and turns == []
    events, [turn] = append(s, audio[int(2.5 * 24000):])
    speculative, abandoned = s.take_speculation()
    # the speculated span is the committed turn's: the socket layer keeps that decoding
    assert [t.span for t in speculative] == [turn.span] == [(200, 2500)] and abandoned == []
    assert np.array_equal(speculative[0].samples, turn.samples)
    assert [e["type"] for e in events][-2:] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
