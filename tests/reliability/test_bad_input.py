"""Wrong inputs that used to exit 0 with a wrong result: each is now reported."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from svlora.cli import main
from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.data_prep.check import check_manifests
from svlora.errors import SvloraError
from svlora.eval.gates import parse_gates
from tests.conftest import write_tone


def table(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "text", "emotion", "speaker"])
        writer.writerows(rows)
    return path


def good(tmp_path, count=9):
    rows = []
    for i in range(count):
        write_tone(tmp_path / f"clips/{i}.wav", seconds=0.5, frequency=200 + 31 * i)
        rows.append([f"clips/{i}.wav", f"sentence {i}", ["happy", "sad", "angry"][i % 3], f"s{i % 3}"])
    return rows


def test_nan_audio_truncated_wav_tags_in_text_and_empty_audio_cells(tmp_path):
    rows = good(tmp_path)
    sf.write(tmp_path / "clips/nan.wav", np.array([0.1, np.nan] * 4000, dtype=np.float32), 16000,
             subtype="FLOAT")
    write_tone(tmp_path / "clips/long.wav", seconds=1.0, frequency=901)
    data = (tmp_path / "clips/long.wav").read_bytes()
    (tmp_path / "clips/trunc.wav").write_bytes(data[: len(data) // 2])
    write_tone(tmp_path / "clips/tag.wav", frequency=902)
    rows += [["clips/nan.wav", "a", "happy", "s0"], ["clips/trunc.wav", "b", "sad", "s1"],
             ["clips/tag.wav", "<|zh|>你好", "sad", "s2"], ["", "no audio", "sad", "s1"]]
    source = table(tmp_path / "labels.csv", rows)
    report = prepare_corpus(PrepareOptions(input=str(source), out=str(tmp_path / "out"), language="en",
                                           split_by="speaker", val=0.34, test=0.33))
    reasons = {r["row"]: r["reason"] for r in report["rejected"]}
    assert "NaN or infinite samples" in reasons[f"{source}:11"]
    assert "truncated WAV" in reasons[f"{source}:12"]
    assert "SenseVoice tag" in reasons[f"{source}:13"]
    assert "empty audio cell" in reasons[f"{source}:14"]
    assert report["rows_accepted"] == 9


def test_check_flags_nan_audio_and_empty_or_mistyped_manifests(tmp_path):
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.inf] * 4000, dtype=np.float32), 16000, subtype="FLOAT")
    row = {"key": "a", "source": str(tmp_path / "nan.wav"), "source_len": 50, "target": "x",
           "target_len": 1, "text_language": "<|en|>", "emo_target": "<|SAD|>",
           "event_target": "<|Speech|>", "with_or_wo_itn": "<|woitn|>"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "key": "b",
                                      "source_len": "50"}) + "\n")
    (tmp_path / "empty.jsonl").write_text("\n")
    findings = check_manifests([str(tmp_path / "m.jsonl"), str(tmp_path / "empty.jsonl")])
    messages = " | ".join(e["message"] for e in findings["errors"])
    assert "NaN or infinite samples" in messages
    assert "source_len='50' should be an integer" in messages
    assert "the manifest has no rows" in messages


def test_prepare_never_writes_over_its_input(tmp_path):
    manifest = tmp_path / "train.jsonl"
    write_tone(tmp_path / "a.wav")
    manifest.write_text(json.dumps({"key": "a", "source": "a.wav", "source_len": 100, "target": "x",
                                    "target_len": 1, "text_language": "<|en|>",
                                    "emo_target": "<|SAD|>", "event_target": "<|Speech|>",
                                    "with_or_wo_itn": "<|woitn|>"}) + "\n")
    before = manifest.read_bytes()
    with pytest.raises(SvloraError, match="would write train.jsonl over the input"):
        prepare_corpus(PrepareOptions(input=str(manifest), out=str(tmp_path), format="sensevoice-jsonl"))
    assert manifest.read_bytes() == before


def test_rejected_csv_reruns_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the user passes a relative path, as one does
    rows = good(tmp_path)
    write_tone(tmp_path / "clips/bored.wav", frequency=777)
    rows.append(["clips/bored.wav", "y", "bored", "s1"])
    table(tmp_path / "labels.csv", rows)
    prepare_corpus(PrepareOptions(input="labels.csv", out="out", language="en", split_by="speaker",
                                  val=0.34, test=0.33))
    fixed = (tmp_path / "out/rejected.csv").read_text().replace(",bored,", ",neutral,")
    (tmp_path / "out/rejected.csv").write_text(fixed)
    monkeypatch.chdir(tmp_path / "out")  # elsewhere: the paths must still resolve
    again = prepare_corpus(PrepareOptions(input=str(tmp_path / "out/rejected.csv"), out=str(tmp_path / "re"),
                                          language="en", split_by="none", val=0.0, test=0.0))
    assert again["rows_accepted"] == 1 and again["rows_rejected"] == 0


@pytest.mark.parametrize("spec, adapters, general, message", [
    ("", True, True, "--gate is empty"),
    ("emotion_uar>=+0.02", True, True, "unknown metric 'emotion_uar'"),
    ("cer<=abc", True, True, r"expected METRIC>=\+DELTA"),
    ("general_cer<=0.01", True, False, "needs --general"),
    ("cer<=0.01", False, True, "no --adapter was given"),
])
def test_gates_are_checked_before_any_decoding(spec, adapters, general, message):
    with pytest.raises(SvloraError, match=message):
        parse_gates(spec, has_adapters=adapters, has_general=general)


def test_duplicate_keys_in_an_eval_manifest_are_an_error(trained_dir, tmp_path, capsys):
    lines = (trained_dir / "clinic/test.jsonl").read_text().splitlines()
    (tmp_path / "dup.jsonl").write_text("\n".join(lines[:3] + lines[:1]) + "\n")
    shutil.copy(trained_dir / "clinic/labels.json", tmp_path)  # the clinic's label schema
    assert main(["eval", "--model", str(trained_dir / "tiny-base"), "--data",
                 str(tmp_path / "dup.jsonl"), "--out", str(tmp_path / "r")]) == 1
    assert "appears twice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before decoding anything


def test_a_truncated_adapter_is_one_clear_error(trained_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_dir / "clinic-run/adapter", adapter)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    write_tone(tmp_path / "a.wav")
    assert main(["transcribe", "--model", str(trained_dir / "tiny-base"), "--adapter",
                 str(adapter), str(tmp_path / "a.wav")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("svlora transcribe: error:") and "not a readable safetensors file" in line


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno
    import os

    rows = good(tmp_path)
    table(tmp_path / "labels.csv", rows)
    real_replace = os.replace

    def full(source, target, *args, **kwargs):
        if str(target).endswith("prepare_report.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_replace(source, target, *args, **kwargs)
    monkeypatch.setattr(os, "replace", full)
    assert main(["prepare", str(tmp_path / "labels.csv"), "--format", "csv", "--out",
                 str(tmp_path / "out"), "--language", "en", "--split-by", "speaker",
                 "--val", "0.34", "--test", "0.33"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "prepare_report.json: No space left on device; free some space" in line


@pytest.mark.parametrize("command", ["prepare", "eval"])
def test_a_file_as_out_is_refused_before_any_work(command, tiny_model_dir, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    rows = good(tmp_path)
    table(tmp_path / "labels.csv", rows)
    arguments = {"prepare": ["prepare", str(tmp_path / "labels.csv"), "--format", "csv",
                             "--language", "en"],
                 "eval": ["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "m.jsonl")]}
    (tmp_path / "m.jsonl").write_text(json.dumps({"key": "a", "source": str(tmp_path / "clips/0.wav"),
                                                  "source_len": 50, "target": "x", "target_len": 1,
                                                  "text_language": "<|en|>", "emo_target": "<|SAD|>",
                                                  "event_target": "<|Speech|>",
                                                  "with_or_wo_itn": "<|woitn|>"}) + "\n")
    assert main(arguments[command] + ["--out", str(a_file)]) == 1
    assert f"--out {a_file} is a file; give a directory" in capsys.readouterr().err
