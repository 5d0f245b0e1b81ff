"""Each corpus preset on a small generated tree in that corpus's documented layout."""

from pathlib import Path

import pytest

from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.manifest import read_manifest
from tests.conftest import write_tone

_frequency = iter(range(100, 100000, 7))


def tone(path: Path) -> Path:
    return write_tone(path, seconds=0.4, frequency=next(_frequency))


def make_esd(root: Path) -> None:
    for speaker in ("0003", "0013", "0014"):
        lines = []
        for e, emotion in enumerate(("Angry", "Happy", "Neutral", "Sad", "Surprise")):
            for i in range(2):
                utt = f"{speaker}_{e * 350 + i + 1:06d}"
                tone(root / speaker / emotion / ("train" if i else "test") / f"{utt}.wav")
                lines.append(f"{utt}\tsentence {i}\t{emotion}")
        (root / speaker / f"{speaker}.txt").write_text("\n".join(lines) + "\n")


def make_ravdess(root: Path) -> None:
    for actor in (1, 2, 3, 4):
        for emotion in ("01", "02", "05", "08"):
            for statement in ("01", "02"):
                tone(root / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-{statement}-01-{actor:02d}.wav")
        tone(root / f"Actor_{actor:02d}" / f"03-02-03-01-01-01-{actor:02d}.wav")  # song


def make_crema_d(root: Path) -> None:
    for actor in ("1001", "1002", "1003", "1091"):
        for sentence in ("IEO", "DFA"):
            for emotion in ("ANG", "DIS", "NEU"):
                tone(root / "AudioWAV" / f"{actor}_{sentence}_{emotion}_XX.wav")


def make_emodb(root: Path) -> None:
    for speaker in ("03", "08", "09", "10"):
        for text in ("a01", "b10"):
            for letter in ("W", "L", "F", "N"):
                tone(root / "wav" / f"{speaker}{text}{letter}a.wav")


def make_casia(root: Path) -> None:
    for speaker in ("liuchanhg", "wangzhe", "zhaoquanyin", "ZhaoZuoxiang"):
        for emotion in ("angry", "happy", "neutral"):
            for i in (201, 202):
                tone(root / speaker / emotion / f"{i}.wav")
    (root / "texts.txt").write_text("201\t我们去公园\n202\t今天下雨了\n", encoding="utf-8")


def make_tess(root: Path) -> None:
    for speaker in ("OAF", "YAF"):
        for emotion in ("angry", "ps", "neutral", "sad"):
            for word in ("back", "bar", "base"):
                tone(root / f"{speaker}_{emotion}" / f"{speaker}_{word}_{emotion}.wav")


CASES = {
    # preset: (maker, extra options, accepted, expected emotions, a row check)
    "esd": (make_esd, {}, 30, {"ANGRY", "HAPPY", "NEUTRAL", "SAD", "SURPRISED"},
            lambda r: r.target.startswith("sentence") and
            r.text_language == ("<|zh|>" if r.speaker == "0003" else "<|en|>")),
    "ravdess": (make_ravdess, {"label_map": {"calm": "NEUTRAL"}}, 36,
                {"NEUTRAL", "ANGRY", "SURPRISED", "HAPPY"},
                lambda r: r.target in ("Kids are talking by the door", "Dogs are sitting by the door")
                and (r.event_target == "<|Sing|>") == (r.emo_target == "<|HAPPY|>")),
    "crema-d": (make_crema_d, {}, 24, {"ANGRY", "DISGUSTED", "NEUTRAL"},
                lambda r: r.target in ("It's eleven o'clock", "Don't forget a jacket")),
    "emodb": (make_emodb, {"language": "en", "label_map": {"boredom": "NEUTRAL"}}, 32,
              {"ANGRY", "HAPPY", "NEUTRAL"}, lambda r: r.speaker.startswith("speaker")),
    "casia": (make_casia, {"transcripts": "texts.txt"}, 24, {"ANGRY", "HAPPY", "NEUTRAL"},
              lambda r: r.target in ("我们去公园", "今天下雨了") and r.text_language == "<|zh|>"),
    # two speakers only: split by the word instead
    "tess": (make_tess, {"split_by": "text"}, 24, {"ANGRY", "SURPRISED", "NEUTRAL", "SAD"},
             lambda r: r.target.startswith("Say the word ") and r.speaker in ("OAF", "YAF")),
}


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_reads_its_corpus_layout(tmp_path, preset):
    maker, extra, accepted, emotions, row_ok = CASES[preset]
    root = tmp_path / preset
    maker(root)
    if "transcripts" in extra:
        extra = {**extra, "transcripts": str(root / extra["transcripts"])}
    options = {"split_by": "speaker", "val": 0.25, "test": 0.25, **extra}
    report = prepare_corpus(PrepareOptions(input=str(root), out=str(tmp_path / "out"), format=preset,
                                           **options))
    assert report["rows_rejected"] == 0, report["rejected"][:3]
    assert report["rows_accepted"] == accepted
    rows = [r for s in ("train", "val", "test") for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")]
    assert {r.emo_target.strip("<|>") for r in rows} == emotions
    assert all(row_ok(r) for r in rows)
    split_key = "text" if options["split_by"] == "text" else "speaker"
    assert report["leakage"][split_key] == []


@pytest.mark.parametrize("preset, label, advice", [
    ("ravdess", "calm", "--label-map"), ("emodb", "boredom", "--label-map")])
def test_labels_sensevoice_lacks_are_rejected_with_advice(tmp_path, preset, label, advice):
    maker = CASES[preset][0]
    maker(tmp_path / preset)
    report = prepare_corpus(PrepareOptions(input=str(tmp_path / preset), out=str(tmp_path / "out"),
                                           format=preset, language="en", split_by="speaker", val=0.25,
                                           test=0.25))
    reasons = {r["reason"] for r in report["rejected"]}
    assert any(f"unknown emotion label {label!r}" in r and advice in r for r in reasons)


def test_emodb_is_german_and_needs_an_explicit_language(tmp_path):
    make_emodb(tmp_path / "emodb")
    with pytest.raises(Exception, match="every row .* was rejected"):
        prepare_corpus(PrepareOptions(input=str(tmp_path / "emodb"), out=str(tmp_path / "out"),
                                      format="emodb", label_map={"boredom": "NEUTRAL"}))


def make_casia_as_circulated(root: Path) -> None:
    """What public copies hold: 4 speakers × 6 emotions, ids 201-250 share the 50 sentences
    listed (GB18030, numbered '201. text') in the root; other ids have no transcript."""
    for speaker in ("liuchanhg", "wangzhe", "zhaoquanyin", "ZhaoZuoxiang"):
        for emotion in ("angry", "fear", "happy", "neutral", "sad", "surprise"):
            for clip_id in ("201", "202", "203", "1"):
                tone(root / speaker / emotion / f"{clip_id}.wav")
    sentences = "201. 我们去公园\r\n202、今天下雨了\r\n203：他说的是真的\r\n"
    (root / "CASIA 50 sentences.txt").write_bytes(sentences.encode("gb18030"))


def test_casia_as_circulated_finds_its_gb18030_sentence_list(tmp_path):
    root = tmp_path / "casia"
    make_casia_as_circulated(root)
    report = prepare_corpus(PrepareOptions(input=str(root), out=str(tmp_path / "out"), format="casia",
                                           split_by="speaker", val=0.25, test=0.25))
    assert report["rows_accepted"] == 4 * 6 * 3
    rows = [r for s in ("train", "val", "test") for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")]
    assert {r.target for r in rows} == {"我们去公园", "今天下雨了", "他说的是真的"}
    # the 24 clips with id 1 are reported, with why they have no transcript
    assert report["rejected_by_reason"] == {"missing transcript": 24}
    assert all("not in the sentence list CASIA 50 sentences.txt" in r["reason"]
               for r in report["rejected"])


@pytest.mark.parametrize("line, parsed", [
    ("201. 我们去公园", ("201", "我们去公园")), ("201、我们去公园", ("201", "我们去公园")),
    ("201: 我们去公园", ("201", "我们去公园")), ("201：我们去公园", ("201", "我们去公园")),
    ("201\t我们去公园", ("201", "我们去公园")), ("0020_000001\tDog!\tNeutral", ("0020_000001", "Dog!")),
    ("BAC009S0252W0121 在 北京", ("BAC009S0252W0121", "在 北京")), ("   ", None)])
def test_transcript_lines_in_every_numbering(line, parsed):
    from svlora.data_prep.readers import parse_transcript_line

    assert parse_transcript_line(line) == parsed


def test_casia_without_a_sentence_list_says_what_to_pass(tmp_path):
    root = tmp_path / "casia"
    make_casia_as_circulated(root)
    (root / "CASIA 50 sentences.txt").unlink()
    with pytest.raises(Exception, match="pass the sentence list with --transcripts"):
        prepare_corpus(PrepareOptions(input=str(root), out=str(tmp_path / "out"), format="casia",
                                      split_by="speaker"))


def test_esd_never_follows_a_symlinked_speaker_or_emotion_dir(tmp_path):
    root = tmp_path / "esd"
    make_esd(root)
    (root / "0099").symlink_to("0003")  # would read 0003's clips again as speaker 0099
    (root / "0014" / "Sad").rename(root / "0014" / "Sad-real")
    (root / "0014" / "Sad").symlink_to(root / "0013" / "Sad")  # 0013's clips as 0014's
    report = prepare_corpus(PrepareOptions(input=str(root), out=str(tmp_path / "out"), format="esd",
                                           split_by="speaker", val=0.34, test=0.33))
    assert report["rows_read"] == 28 and report["rows_rejected"] == 0  # 0014 has no Sad now
    rows = [r for s in ("train", "val", "test") for r in read_manifest(tmp_path / "out" / f"{s}.jsonl")]
    assert {r.speaker for r in rows} == {"0003", "0013", "0014"}
    assert all(Path(r.source).name.startswith(r.speaker) for r in rows)
    warned = " | ".join(report["warnings"])
    assert f"{root / '0099'}: symlinked directory" in warned
    assert f"{root / '0014' / 'Sad'}: symlinked directory" in warned


def test_formats_list_each_preset_from_its_one_definition(monkeypatch):
    """FORMATS once repeated the preset names by hand; a new preset must need no second edit."""
    import importlib

    import svlora.data_prep.formats as formats
    from svlora.data_prep.presets import PRESETS

    monkeypatch.setitem(PRESETS, "new-corpus", lambda root, encoding: [])
    try:
        assert "new-corpus" in importlib.reload(formats).FORMATS
    finally:
        monkeypatch.undo()
        importlib.reload(formats)
    assert "new-corpus" not in formats.FORMATS
