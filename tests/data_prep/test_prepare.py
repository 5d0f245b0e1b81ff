import csv
import json
from pathlib import Path

import pytest

from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.data_prep.checks import AudioLimits
from svlora.errors import ManifestError
from svlora.manifest import read_manifest
from tests.conftest import SHARED_DATA, write_tone


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "text", "emotion", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows(root: Path, speakers: int = 6, per_speaker: int = 3) -> list[dict]:
    rows = []
    for s in range(speakers):
        for i in range(per_speaker):
            name = f"clips/spk{s}_{i}.wav"
            write_tone(root / name, seconds=0.5 + 0.1 * i, frequency=200 + 10 * s + 3 * i)
            rows.append({"audio": name, "text": f"sentence {s} {i}",
                         "emotion": ["happy", "Sad", "ANGRY"][i % 3], "speaker": f"spk{s}"})
    return rows


def prepare_table(tmp_path: Path, rows: list[dict], **options) -> tuple[Path, dict]:
    """Write rows to labels.csv and prepare it (English, 20% val, 20% test unless overridden)."""
    table = write_csv(tmp_path / "labels.csv", rows)
    settings = {"language": "en", "val": 0.2, "test": 0.2, **options}
    return table, prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"),
                                                format="csv", **settings))


def test_rejects_exactly_the_corrupt_unknown_label_and_missing_transcript_rows(tmp_path):
    rows = good_rows(tmp_path)
    (tmp_path / "clips/corrupt.wav").write_bytes(b"RIFF not really a wav file")
    write_tone(tmp_path / "clips/bored.wav", frequency=501)
    write_tone(tmp_path / "clips/untranscribed.wav", frequency=502)
    rows += [{"audio": "clips/corrupt.wav", "text": "x", "emotion": "happy", "speaker": "spk0"},
             {"audio": "clips/bored.wav", "text": "y", "emotion": "bored", "speaker": "spk1"},
             {"audio": "clips/untranscribed.wav", "text": "", "emotion": "sad", "speaker": "spk2"}]
    table, report = prepare_table(tmp_path, rows)
    rejected = {Path(r["audio"]).name: r for r in report["rejected"]}
    assert set(rejected) == {"corrupt.wav", "bored.wav", "untranscribed.wav"}
    assert rejected["corrupt.wav"]["reason"].startswith("unreadable audio")
    assert "unknown emotion label 'bored'" in rejected["bored.wav"]["reason"]
    assert rejected["untranscribed.wav"]["reason"] == "missing transcript"
    assert rejected["corrupt.wav"]["row"] == f"{table}:20"  # header is line 1, 18 good rows
    written = sum(len(read_manifest(tmp_path / "out" / f"{s}.jsonl")) for s in ("train", "val", "test"))
    assert written == report["rows_accepted"] == 18
    assert json.loads((tmp_path / "out/prepare_report.json").read_text())["rows_rejected"] == 3


def test_manifest_rows_follow_funasr_sensevoice_schema(tmp_path):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path))
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv", language="en",
                                  val=0.2, test=0.2))
    line = json.loads((tmp_path / "out/train.jsonl").read_text().splitlines()[0])
    assert {"key", "source", "source_len", "target", "target_len", "text_language", "emo_target",
            "event_target", "with_or_wo_itn"} <= set(line)
    assert line["text_language"] == "<|en|>" and line["event_target"] == "<|Speech|>"
    assert line["with_or_wo_itn"] == "<|woitn|>" and line["emo_target"].startswith("<|")
    assert line["target_len"] == len(line["target"]) and line["source_len"] >= 50


@pytest.mark.parametrize("split_by, group", [("speaker", "speaker"), ("text", "target")])
def test_splits_share_no_group(tmp_path, split_by, group):
    rows = good_rows(tmp_path, speakers=10, per_speaker=3)
    for row in rows:  # every sentence spoken by two speakers
        row["text"] = f"sentence {int(row['speaker'][3:]) // 2} {row['text'][-1]}"
    table = write_csv(tmp_path / "labels.csv", rows)
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv", language="en",
                                  split_by=split_by, val=0.2, test=0.2, seed=3))
    groups = {s: {getattr(r, group) for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")}
              for s in ("train", "val", "test")}
    assert all(groups.values())
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"]
                or groups["val"] & groups["test"])


def test_language_is_never_guessed(tmp_path):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path))
    with pytest.raises(ManifestError, match="no 'language' column and no --language"):
        prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv"))


def test_label_map_maps_domain_labels(tmp_path):
    rows = good_rows(tmp_path)
    for row in rows:
        row["emotion"] = "calm"
    table = write_csv(tmp_path / "labels.csv", rows)
    report = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv",
                                           language="en", label_map={"Calm": "NEUTRAL"}, val=0.2, test=0.2))
    assert report["rows_rejected"] == 0
    assert set(report["splits"]["train"]["emotion"]) == {"<|NEUTRAL|>"}


def test_jsonl_input_and_stereo_44k_audio(tmp_path):
    lines = []
    for s in range(5):
        write_tone(tmp_path / f"a{s}.flac", seconds=1.0, rate=44100, channels=2, frequency=300 + s)
        lines.append(json.dumps({"audio": f"a{s}.flac", "text": f"hi {s}", "emotion": "neutral",
                                 "language": "en", "speaker": f"s{s}"}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "in.jsonl"), out=str(tmp_path / "out"),
                                           format="jsonl", val=0.2, test=0.2))
    assert report["rows_accepted"] == 5
    row = read_manifest(tmp_path / "out/train.jsonl")[0]
    assert 99 <= row.source_len <= 101  # 1 s at 100 frames/s after resampling to 16 kHz


def test_silent_and_too_long_clips_are_rejected_with_reasons(tmp_path):
    rows = good_rows(tmp_path)
    write_tone(tmp_path / "silent.wav", amplitude=0.0)
    write_tone(tmp_path / "long.wav", seconds=3.0, frequency=777)
    rows += [{"audio": "silent.wav", "text": "a", "emotion": "sad", "speaker": "spk0"},
             {"audio": "long.wav", "text": "b", "emotion": "sad", "speaker": "spk0"},
             {"audio": "missing.wav", "text": "c", "emotion": "sad", "speaker": "spk0"}]
    table = write_csv(tmp_path / "labels.csv", rows)
    report = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), format="csv",
                                           language="en", limits=AudioLimits(max_seconds=2.0),
                                           val=0.2, test=0.2))
    reasons = {Path(r["audio"]).name: r["reason"] for r in report["rejected"]}
    assert reasons["silent.wav"].startswith("silent audio")
    assert reasons["long.wav"].startswith("too long")
    assert reasons["missing.wav"].startswith("audio file not found")


ESD = SHARED_DATA / "esd_en_0020_dev"


@pytest.mark.skipif(not ESD.is_dir(), reason=f"development data not present at {ESD}")
def test_prepares_the_esd_folder_layout(tmp_path):
    report = prepare_corpus(PrepareOptions(input=str(ESD), out=str(tmp_path / "esd"), format="folder",
                                           split_by="text", language="en", val=0.1, test=0.2))
    assert report["rows_read"] == 600 and report["rows_rejected"] == 0
    emotions = set(report["splits"]["train"]["emotion"])
    assert emotions == {"<|NEUTRAL|>", "<|ANGRY|>", "<|HAPPY|>", "<|SAD|>", "<|SURPRISED|>"}
    texts = {s: {r.target for r in read_manifest(tmp_path / "esd" / f"{s}.jsonl")}
             for s in ("train", "val", "test")}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["val"])
    first = read_manifest(tmp_path / "esd/test.jsonl")[0]
    assert first.target and first.text_language == "<|en|>"


def test_the_package_hides_none_of_its_modules():
    """svlora.data_prep.prepare was the function once any public name had loaded."""
    import importlib
    import pkgutil
    import types

    import svlora.data_prep as package

    for name in package.__all__:  # load every public name, as `from svlora.data_prep import *`
        getattr(package, name)
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"svlora.data_prep.{module.name}")
        assert getattr(package, module.name) is loaded
        assert isinstance(loaded, types.ModuleType)
    from svlora.data_prep import prepare

    assert prepare.prepare_corpus is package.prepare_corpus
