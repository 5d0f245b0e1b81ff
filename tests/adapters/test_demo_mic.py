"""The demo's microphone tab, driven through its callbacks with the chunks a browser sends
(48 kHz int16): a committed turn reads as the clip transcribed whole, a pause ends a turn
(Silero, on real speech), a changed setting starts a new session. (The tab's wiring is
rendered by the browser tests of the demo page; a fake microphone is not driven there.)"""

import numpy as np
import pytest
import soundfile as sf
import soxr

from svlora.adapters import load_model
from svlora.adapters.demo import mic_chunk, mic_commit
from svlora.adapters.pool import ModelPool, ServeSettings
from tests.adapters.test_serve import clinic_clips
from tests.conftest import SHARED_DATA

ESD = SHARED_DATA / "esd_en_0020_dev"


@pytest.fixture(scope="module")
def pool(trained_dir):
    return ModelPool(ServeSettings(model=str(trained_dir / "tiny-base"),
                                   adapters={"clinic": str(trained_dir / "clinic-run/adapter")}))


def browser_chunks(samples16k: np.ndarray, seconds: float = 0.5):
    """What Gradio's streaming microphone hands over: (48000, int16 chunk) pieces."""
    samples = soxr.resample(samples16k, 16000, 48000)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    step = int(seconds * 48000)
    return [(48000, pcm[start:start + step]) for start in range(0, pcm.size, step)]


def test_a_committed_turn_reads_like_the_clip_transcribed_whole(pool, trained_dir):
    clips = clinic_clips(trained_dir, 2)
    runtime = load_model(str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter"))
    state, rows = None, []
    for clip in clips:
        for chunk in browser_chunks(sf.read(clip, dtype="float32")[0]):
            state, rows = mic_chunk(pool, state, chunk, "clinic", "auto", vad=False)
        state, rows = mic_commit(pool, state)
    want = runtime.transcribe(clips)
    assert [(r[5], r[2]) for r in rows] == [(w["text"], w["emotion"]) for w in want]
    assert rows[0][0] == 0.0 and rows[0][1] == pytest.approx(rows[1][0], abs=0.001)
    state, same = mic_commit(pool, state)  # nothing new said: no turn
    assert same == rows
    state, fresh = mic_chunk(pool, state, None, "sensevoice-small", "auto", vad=False)
    assert fresh == []  # another model: a new session


@pytest.mark.skipif(not ESD.is_dir(), reason=f"needs the real recordings in {ESD} (Silero VAD does "
                    "not hear the generated demo speech as speech)")
def test_pauses_end_turns_as_you_speak(pool):
    pause = np.zeros(16000, np.float32)
    speech = [sf.read(path, dtype="float32")[0] for path in sorted(ESD.glob("Happy/*.flac"))[:2]]
    state, rows = None, []
    for chunk in browser_chunks(np.concatenate([pause, speech[0], pause, speech[1], pause, pause])):
        state, rows = mic_chunk(pool, state, chunk, "clinic", "auto", vad=True)
    assert len(rows) == 2 and all(row[2].startswith("<|") for row in rows)
    assert rows[0][1] < rows[1][0]
