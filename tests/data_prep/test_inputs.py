"""Every input format and encoding, on generated fixtures."""

import importlib
import json
from pathlib import Path

import pytest

from svlora.cli import main
from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.data_prep.hf import HfColumns
from svlora.data_prep.readers import read_csv, read_kaldi
from svlora.errors import ManifestError, SvloraError
from svlora.manifest import read_manifest
from tests.conftest import write_tone

HEADER = "audio,text,emotion,speaker\n"


def clip_rows(root: Path, count: int = 10, folder: str = "clips") -> list[tuple[str, str, str, str]]:
    rows = []
    for i in range(count):
        name = f"{folder}/clip {i}.wav"
        write_tone(root / name, frequency=200 + 7 * i)
        rows.append((name, f"文本 {i}", ["happy", "sad"][i % 2], f"spk{i % 5}"))
    return rows


def all_rows(out: Path) -> list:
    return [row for split in ("train", "val", "test") for row in read_manifest(out / f"{split}.jsonl")]


@pytest.mark.parametrize("encoding, newline, bom", [
    ("utf-8", "\n", False), ("utf-8", "\r\n", True), ("gb18030", "\r\n", False), ("gbk", "\n", False)])
def test_csv_encodings_and_line_endings(tmp_path, encoding, newline, bom):
    rows = clip_rows(tmp_path)
    text = HEADER + "".join(",".join(r) + "\n" for r in rows)
    data = text.replace("\n", newline).encode(encoding)
    (tmp_path / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    prepare_corpus(PrepareOptions(input=str(tmp_path / "labels.csv"), out=str(tmp_path / "out"),
                                  format="csv", language="zh", encoding=encoding, val=0.2, test=0.2))
    texts = sorted(r.target for r in all_rows(tmp_path / "out"))
    assert texts == sorted(r[1] for r in rows)  # no stray \\r, BOM or mojibake


def test_wrong_encoding_names_the_line(tmp_path):
    rows = clip_rows(tmp_path)
    text = HEADER + "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "labels.csv").write_bytes(text.encode("gb18030"))
    with pytest.raises(ManifestError, match=r"labels.csv:2: cannot decode as utf-8.*--encoding"):
        read_csv(tmp_path / "labels.csv")


def test_absolute_paths_and_non_ascii_names(tmp_path):
    clip = write_tone(tmp_path / "录音 目录" / "ça va.wav")
    other = write_tone(tmp_path / "b.wav", frequency=300)
    third = write_tone(tmp_path / "c.wav", frequency=350)
    (tmp_path / "list").mkdir()
    (tmp_path / "list/labels.csv").write_text(
        HEADER + f"{clip},one,happy,a\n../b.wav,two,sad,b\n{third},three,sad,c\n", encoding="utf-8")
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "list/labels.csv"), out=str(tmp_path / "o"),
                                           format="csv", language="en", split_by="speaker", val=0.34,
                                           test=0.33))
    assert report["rows_rejected"] == 0
    assert {Path(r.source) for r in all_rows(tmp_path / "o")} == {clip, other.resolve(), third}


def write_kaldi(root: Path, count: int = 10, emotions: bool = True) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    lines = {"wav.scp": [], "text": [], "utt2spk": [], "utt2emo": []}
    for i in range(count):
        utt = f"spk{i % 5}-utt{i}"
        wav = write_tone(root / "wavs" / f"{utt}.wav", frequency=150 + 11 * i)
        lines["wav.scp"].append(f"{utt} {wav}")
        lines["text"].append(f"{utt} words number {i}")
        lines["utt2spk"].append(f"{utt} spk{i % 5}")
        lines["utt2emo"].append(f"{utt} {['angry', 'neutral'][i % 2]}")
    for name, content in lines.items():
        if name != "utt2emo" or emotions:
            (data / name).write_text("\n".join(content) + "\n")
    return data


def test_kaldi_data_dir(tmp_path):
    data = write_kaldi(tmp_path)
    report = prepare_corpus(PrepareOptions(input=str(data), out=str(tmp_path / "out"), format="kaldi",
                                           language="en", val=0.2, test=0.2))
    assert report["rows_accepted"] == 10 and report["split_by"] == "speaker+text"
    rows = {r.key: r for r in all_rows(tmp_path / "out")}
    assert rows["spk3-utt8"].target == "words number 8"
    assert rows["spk3-utt8"].emo_target == "<|ANGRY|>" and rows["spk3-utt8"].speaker == "spk3"


def test_kaldi_piped_wav_scp_and_missing_utt2emo_are_refused(tmp_path):
    data = write_kaldi(tmp_path)
    with open(data / "wav.scp", "a") as handle:
        handle.write("spk9-utt99 sox in.wav -t wav - |\n")
    with pytest.raises(ManifestError, match=r"wav.scp:11: spk9-utt99 is a piped command"):
        read_kaldi(data)
    bare = write_kaldi(tmp_path / "bare", emotions=False)
    with pytest.raises(ManifestError, match="no utt2emo"):
        read_kaldi(bare)


def test_sensevoice_jsonl_is_validated_and_resplit(tmp_path):
    rows = clip_rows(tmp_path, count=12)
    manifest = tmp_path / "old.jsonl"
    lines = [json.dumps({"key": f"k{i}", "source": r[0], "source_len": 100, "target": r[1],
                         "target_len": len(r[1]), "text_language": "<|zh|>",
                         "emo_target": "<|HAPPY|>" if i % 2 else "<|SAD|>",
                         "event_target": "<|Speech|>", "with_or_wo_itn": "<|withitn|>",
                         "speaker": r[3]}, ensure_ascii=False) for i, r in enumerate(rows)]
    lines.append(json.dumps({"key": "bad", "source": rows[0][0], "source_len": 1, "target": "x",
                             "target_len": 1, "text_language": "<|zh|>", "emo_target": "<|BORED|>",
                             "event_target": "<|Speech|>", "with_or_wo_itn": "<|woitn|>"}))
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = prepare_corpus(PrepareOptions(input=str(manifest), out=str(tmp_path / "out"),
                                           format="sensevoice-jsonl", split_by="text", val=0.25, test=0.25))
    assert report["rows_accepted"] == 12
    assert [r["reason"] for r in report["rejected"]] == [
        "unknown emotion label '<|BORED|>': not a SenseVoice emotion; map it with --label-map "
        "(e.g. 'calm: NEUTRAL') or declare it in --labels"]
    out_rows = all_rows(tmp_path / "out")
    assert {r.with_or_wo_itn for r in out_rows} == {"<|withitn|>"}
    assert {r.key for r in out_rows} == {f"k{i}" for i in range(12)}
    assert all(99 <= r.source_len <= 101 for r in out_rows)  # recomputed from the audio


@pytest.mark.parametrize("subtype, rate, channels, fmt, suffix", [
    ("PCM_24", 48000, 2, "WAV", ".wav"), ("FLOAT", 8000, 1, "WAV", ".wav"),
    ("PCM_16", 96000, 1, "FLAC", ".flac"), ("VORBIS", 22050, 2, "OGG", ".ogg"),
    ("PCM_16", 16000, 1, "FLAC", ".wav"),  # a FLAC file named .wav: decoded by content
])
def test_audio_containers_rates_and_sample_formats(tmp_path, subtype, rate, channels, fmt, suffix):
    lines = []
    for i in range(6):
        path = write_tone(tmp_path / f"a{i}{suffix}", seconds=1.0, rate=rate, channels=channels,
                          frequency=300 + 20 * i, subtype=subtype, format=fmt)
        lines.append(json.dumps({"audio": path.name, "text": f"t{i}", "emotion": "happy",
                                 "language": "en", "speaker": f"s{i}"}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines))
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "in.jsonl"), out=str(tmp_path / "o"),
                                           format="jsonl", val=0.2, test=0.2))
    assert report["rows_rejected"] == 0, report["rejected"]
    assert all(99 <= r.source_len <= 101 for r in all_rows(tmp_path / "o"))


def test_hf_dataset_saved_to_disk_with_named_columns(tmp_path):
    import datasets

    rows = clip_rows(tmp_path, count=10)
    table = {"clip": [str(tmp_path / r[0]) for r in rows], "sentence": [r[1] for r in rows],
             "mood": [r[2] for r in rows], "who": [r[3] for r in rows]}
    dataset = datasets.Dataset.from_dict(table).cast_column("clip", datasets.Audio())
    datasets.DatasetDict({"train": dataset, "extra": dataset}).save_to_disk(str(tmp_path / "ds"))
    options = dict(input=str(tmp_path / "ds"), out=str(tmp_path / "out"), format="hf",
                   language="zh", val=0.2, test=0.2)
    with pytest.raises(ManifestError, match="choose one with --hf-split"):
        prepare_corpus(PrepareOptions(**options, hf=HfColumns(audio="clip", text="sentence",
                                                       emotion="mood", speaker="who")))
    report = prepare_corpus(PrepareOptions(**options, hf=HfColumns(audio="clip", text="sentence",
                                                            emotion="mood", speaker="who",
                                                            split="train")))
    assert report["rows_accepted"] == 10 and report["split_by"] == "speaker+text"
    out_rows = all_rows(tmp_path / "out")
    assert sorted(r.target for r in out_rows) == sorted(table["sentence"])
    # the embedded audio was written out once and equals the original clip
    extracted = {Path(r.source).name.split("_", 1)[1]: Path(r.source) for r in out_rows}
    assert extracted["clip 3.wav"].read_bytes() == (tmp_path / "clips/clip 3.wav").read_bytes()


def test_audiofolder_metadata_csv(tmp_path):
    rows = clip_rows(tmp_path / "af", count=6, folder=".")
    lines = ["file_name,text,emotion,speaker"] + [f"{Path(r[0]).name},{r[1]},{r[2]},{r[3]}"
                                                   for r in rows]
    (tmp_path / "af/metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="run --format csv on its metadata.csv"):
        prepare_corpus(PrepareOptions(input=str(tmp_path / "af"), out=str(tmp_path / "out"), format="hf",
                                      language="zh"))
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / "af/metadata.csv"), out=str(tmp_path / "out"),
                                           format="csv", language="zh", split_by="text", val=0.2, test=0.2))
    assert report["rows_accepted"] == 6
    assert all(Path(r.source).parent == (tmp_path / "af").resolve() for r in all_rows(tmp_path / "out"))


def test_folder_never_follows_a_symlinked_directory(tmp_path):
    """`angry -> .` once relabelled every clip ANGRY and dropped the real ones as duplicates."""
    root = tmp_path / "corpus"
    lines = []
    for i, emotion in enumerate(["happy", "sad"] * 3):
        write_tone(root / emotion / f"clip{i}.wav", frequency=200 + 11 * i)
        lines.append(f"clip{i}\tsentence {i}")
    (root / "transcripts.txt").write_text("\n".join(lines) + "\n")
    (root / "angry").symlink_to(".")
    (root / "sad" / "loop").symlink_to("..")  # nested links are not entered either
    report = prepare_corpus(PrepareOptions(input=str(root), out=str(tmp_path / "out"),
                                           format="folder", language="en", split_by="none",
                                           val=0.0, test=0.0))
    assert report["rows_read"] == 6 and report["rows_rejected"] == 0
    rows = read_manifest(tmp_path / "out" / "train.jsonl")
    assert sorted((Path(r.source).parent.name, r.emo_target) for r in rows) == \
        [("happy", "<|HAPPY|>")] * 3 + [("sad", "<|SAD|>")] * 3
    warned = [w for w in report["warnings"] if "symlinked directory" in w]
    assert [w.split(": ")[0] for w in warned] == [str(root / "angry"), str(root / "sad" / "loop")]
    assert all("not followed" in w for w in warned)


def write_labels(path: Path, clips: list[tuple[str, str, str, str]]) -> Path:
    path.write_text(HEADER + "".join(",".join(c) + "\n" for c in clips), encoding="utf-8")
    return path


@pytest.mark.parametrize("value", ["RELAXED", "", "[NEUTRAL]"])
def test_label_map_values_are_checked_before_any_audio_is_read(tmp_path, capsys, monkeypatch,
                                                               value):
    def no_audio(*args, **kwargs):
        raise AssertionError("audio was read before the label map was checked")

    monkeypatch.setattr(importlib.import_module("svlora.data_prep.prepare"), "inspect_clips", no_audio)
    table = write_labels(tmp_path / "labels.csv", clip_rows(tmp_path, count=4))
    label_map = tmp_path / "map.yaml"
    label_map.write_text(f"happy: HAPPY\ncalm: {value}\n")
    assert main(["prepare", str(table), "--format", "csv", "--out", str(tmp_path / "o"),
                 "--language", "zh", "--label-map", str(label_map)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("svlora prepare: error:")
    assert str(label_map) in err and "calm:" in err and "not a SenseVoice emotion" in err
    assert "HAPPY, SAD, ANGRY, NEUTRAL, FEARFUL, DISGUSTED, SURPRISED" in err
    # the library checks a map passed in directly too
    with pytest.raises(SvloraError, match=r"label_map: calm: 'RELAXED' is not a SenseVoice"):
        prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "o2"), language="zh",
                                      label_map={"calm": "RELAXED"}))
