"""`svlora transcribe` on many files: a bad file is recorded and the rest go on, inputs are
checked before the model loads, progress and model loading are shown on stderr."""

import json

import pytest
import torch

from svlora.cli import main
from svlora.model import resolve_device
from tests.conftest import write_tone


@pytest.fixture
def three_files(tmp_path):
    good = [write_tone(tmp_path / "a.wav"), write_tone(tmp_path / "c.wav", frequency=330)]
    broken = tmp_path / "b.wav"
    broken.write_bytes(b"not audio at all")
    return [str(good[0]), str(broken), str(good[1])]


def test_text_mode_writes_an_error_line_goes_on_and_exits_1(tiny_model_dir, three_files, capsys):
    assert main(["transcribe", "--model", str(tiny_model_dir), *three_files]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == three_files
    assert lines[1].split("\t")[1] == "ERROR" and "cannot decode audio" in lines[1]
    assert "ERROR" not in lines[0] + lines[2]
    summary = captured.err.strip().splitlines()[-1]
    assert summary.startswith("svlora transcribe: error: 1 of 3 file(s) could not be transcribed")
    assert three_files[1] in summary


def test_json_mode_writes_an_error_record_in_order(tiny_model_dir, three_files, capsys):
    assert main(["transcribe", "--json", "--model", str(tiny_model_dir), *three_files]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == three_files
    assert set(records[1]) == {"path", "error"} and "cannot decode audio" in records[1]["error"]
    assert "raw" in records[0] and "raw" in records[2]


def test_inputs_are_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import svlora.adapters

    loads = []
    monkeypatch.setattr(svlora.adapters, "load_model", lambda *a, **k: loads.append(a))
    good = write_tone(tmp_path / "a.wav")
    (tmp_path / "folder.wav").mkdir()
    assert main(["transcribe", "--model", "any", str(good), str(tmp_path / "gone.wav"),
                 str(tmp_path / "folder.wav")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("svlora transcribe: error: 2 of 3 audio inputs cannot be read")
    assert "gone.wav: not found" in line and "folder.wav: not a file" in line
    assert loads == []


def test_many_files_show_progress_and_the_load_is_announced(tiny_model_dir, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device auto → cpu here
    paths = [str(write_tone(tmp_path / f"{i}.wav", seconds=0.3, frequency=200 + 10 * i))
             for i in range(21)]
    assert main(["transcribe", "--model", str(tiny_model_dir), *paths]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == paths
    assert "transcribing" in captured.err and "21/21" in captured.err
    assert f"svlora: loading {tiny_model_dir} on cpu" in captured.err
    assert f"svlora: loaded {tiny_model_dir} in " in captured.err
    assert main(["transcribe", "--model", str(tiny_model_dir), *paths[:20]]) == 0
    assert "transcribing" not in capsys.readouterr().err  # few files: no bar


@pytest.mark.parametrize("command, extra", [
    ("transcribe", ["a.wav"]), ("eval", ["--data", "m.jsonl", "--out", "r"]), ("serve", []),
    ("demo", [])])
def test_device_defaults_to_auto(command, extra):
    from svlora.cli.app import build_parser

    assert build_parser().parse_args([command, "--model", "m", *extra]).device == "auto"


def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_a_long_file_shows_a_decoding_bar(tiny_model_dir, tmp_path, capsys):
    """Over 5 minutes of audio in one go: its segments are counted on stderr as they decode."""
    from svlora.decoding import PROGRESS_AUDIO_SECONDS, iter_transcribe_files
    from svlora.model import load_base_model

    base = load_base_model(str(tiny_model_dir), log=None)
    long = write_tone(tmp_path / "long.wav", seconds=PROGRESS_AUDIO_SECONDS + 10)
    short = write_tone(tmp_path / "short.wav", seconds=60)
    list(iter_transcribe_files(base, [str(short)], vad_loader=lambda: None))
    assert "decoding" not in capsys.readouterr().err
    [result] = iter_transcribe_files(base, [str(long)], vad_loader=lambda: None)
    assert "decoding" in capsys.readouterr().err and len(result["segments"]) == 11
