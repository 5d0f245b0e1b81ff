"""Long audio is decoded in bounded segments (Silero VAD, fixed windows without it): encoder
input never exceeds the segment cap, whatever the file's length."""

import numpy as np
import pytest
import soundfile as sf

import svlora.decoding as decoding
from svlora.adapters import load_model
from svlora.cli import main
from svlora.segments import Segment, merge_speech


def speechy_file(path, minutes: float = 2.0):
    """Bursts of 2–6 s of noisy harmonics separated by 0.6 s pauses."""
    rng = np.random.default_rng(0)
    pieces, total = [], 0
    while total < minutes * 60 * 16000:
        seconds = rng.uniform(2, 6)
        t = np.arange(int(seconds * 16000)) / 16000
        voice = sum(np.sin(2 * np.pi * f * t) for f in (140, 280, 420)) * 0.1
        voice = voice * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
        pieces += [voice.astype(np.float32), np.zeros(9600, np.float32)]
        total += t.size + 9600
    sf.write(path, np.concatenate(pieces), 16000)
    return path


@pytest.fixture()
def longest_batch_input(monkeypatch):
    seen = []
    real = decoding.decode_features

    def spy(base, features, *args, **kwargs):
        seen.extend(f.shape[0] for f in features)
        return real(base, features, *args, **kwargs)
    monkeypatch.setattr(decoding, "decode_features", spy)
    return seen


def test_a_long_file_is_cut_at_pauses_into_bounded_segments(tiny_model_dir, tmp_path,
                                                            longest_batch_input):
    path = speechy_file(tmp_path / "call.wav")
    [result] = load_model(str(tiny_model_dir)).transcribe([path], max_segment_seconds=20)
    segments = result["segments"]
    assert result["segmentation"] == "vad" and len(segments) >= 6
    assert all(0 < s["end"] - s["start"] <= 20.0 + 1e-6 for s in segments)
    assert all(a["end"] <= b["start"] for a, b in zip(segments, segments[1:]))
    assert max(longest_batch_input) * 0.06 <= 20.5  # LFR frames of 60 ms: never a whole file
    assert {"raw", "text", "emotion", "event", "language"} <= set(segments[0])


def test_without_a_vad_fixed_windows_cover_the_file(tiny_model_dir, tmp_path, monkeypatch):
    path = speechy_file(tmp_path / "call.wav", minutes=1.0)
    runtime = load_model(str(tiny_model_dir))
    monkeypatch.setattr(runtime, "vad_model", lambda: None)
    [result] = runtime.transcribe([path], max_segment_seconds=25)
    assert result["segmentation"] == "fixed"
    assert [s["start"] for s in result["segments"]] == [0.0, 25.0, 50.0]


def test_merging_speech_respects_the_cap():
    spans = [(0.0, 4.0), (4.5, 9.0), (9.2, 40.0), (41.0, 42.0)]
    merged = merge_speech(spans, 10.0)
    assert merged[0] == Segment(0.0, 9.0)
    assert all(s.seconds <= 10.0 + 1e-9 for s in merged) and merged[-1] == Segment(39.2, 42.0)


def test_max_seconds_refuses_longer_files(tiny_model_dir, tmp_path, capsys):
    path = speechy_file(tmp_path / "call.wav", minutes=0.5)
    assert main(["transcribe", "--model", str(tiny_model_dir), "--max-seconds", "10", str(path)]) == 1
    assert "longer than --max-seconds 10" in capsys.readouterr().err


def test_eval_max_seconds_names_the_long_clip(tiny_model_dir, tmp_path, capsys):
    import json

    path = speechy_file(tmp_path / "call.wav", minutes=0.5)
    row = {"key": "call", "source": str(path), "source_len": 3000, "target": "x", "target_len": 1,
           "text_language": "<|en|>", "emo_target": "<|SAD|>", "event_target": "<|Speech|>",
           "with_or_wo_itn": "<|woitn|>"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "m.jsonl"),
                 "--out", str(tmp_path / "r"), "--max-seconds", "20"]) == 1
    assert "1 clip(s) longer than --max-seconds 20 (e.g. call, 30.0 s)" in capsys.readouterr().err
