"""Text-only corpora (AISHELL-like retention sets): prepared with --no-emotion, trained without an
emotion loss on those rows, and left out of every emotion metric."""

import csv
import json

import numpy as np
import pytest
import torch

from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.errors import ManifestError
from svlora.eval.scoring import arm_metrics, bootstrap_indices, metric_delta, score_clip
from svlora.manifest import ManifestRow, read_manifest
from tests.conftest import write_tone


def text_only_csv(tmp_path, rows: int = 12):
    table = tmp_path / "general.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "text", "speaker"])
        for i in range(rows):
            write_tone(tmp_path / f"clips/{i}.wav", seconds=0.6, frequency=180 + 17 * i)
            writer.writerow([f"clips/{i}.wav", f"句子 {i}", f"spk{i % 4}"])
    return table


def test_prepare_refuses_a_table_without_emotion_unless_asked(tmp_path):
    table = text_only_csv(tmp_path)
    with pytest.raises(ManifestError, match=r"general.csv:1: no 'emotion' column .*--no-emotion"):
        prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), language="zh"))
    report = prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), language="zh",
                                           no_emotion=True, split_by="speaker"))
    assert report["rows_accepted"] == 12 and report["emotion_counts"] == {"(none)": 12}
    assert report["warnings"] == []  # a text-only set is not "imbalanced"
    rows = [json.loads(line) for name in ("train", "val", "test")
            for line in (tmp_path / f"out/{name}.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["emo_target"] is None for r in rows)
    assert read_manifest(tmp_path / "out/train.jsonl")[0].has_emotion is False


def test_a_table_without_text_is_a_header_error(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("audio,emotion\nclips/a.wav,happy\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"labels.csv:1: no 'text' column"):
        prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "out"), language="en"))


def test_text_only_rows_get_no_emotion_loss(tiny_model_dir, tmp_path):
    from svlora.finetune.data import build_examples, collate
    from svlora.model import IGNORE_ID, load_base_model

    base = load_base_model(str(tiny_model_dir))
    write_tone(tmp_path / "a.wav", seconds=1.0, frequency=300)
    labelled = ManifestRow(key="a", source=str(tmp_path / "a.wav"), source_len=100, target="hi",
                           target_len=2, text_language="<|en|>", emo_target="<|HAPPY|>",
                           event_target="<|Speech|>", with_or_wo_itn="<|woitn|>")
    unlabelled = ManifestRow(**{**labelled.to_dict(), "key": "b", "emo_target": None})
    [with_emotion, without] = build_examples(base, [labelled, unlabelled], "x")
    assert int(without.target_ids[1]) == IGNORE_ID
    assert torch.equal(with_emotion.target_ids[[0, 2, 3]], without.target_ids[[0, 2, 3]])
    # FunASR's rich-tag loss ignores exactly this id (SenseVoiceSmall's ignore_id)
    assert base.model.ignore_id == IGNORE_ID == base.model.criterion_att.padding_idx


def clip_row(key: str, emotion: str | None) -> ManifestRow:
    return ManifestRow(key=key, source="x.wav", source_len=100, target="ab", target_len=2,
                       text_language="<|zh|>", emo_target=emotion, event_target="<|Speech|>",
                       with_or_wo_itn="<|woitn|>")


def test_eval_leaves_text_only_clips_out_of_emotion_metrics():
    rows = [clip_row("1", "<|SAD|>"), clip_row("2", "<|HAPPY|>"), clip_row("3", None),
            clip_row("4", None)]
    outputs = ["<|zh|><|SAD|><|Speech|><|woitn|>ab", "<|zh|><|SAD|><|Speech|><|woitn|>ab",
               "<|zh|><|SAD|><|Speech|><|woitn|>ab", "<|zh|><|HAPPY|><|Speech|><|woitn|>a"]
    clips = [score_clip(r, o) for r, o in zip(rows, outputs)]
    metrics = arm_metrics(rows, clips, bootstrap_indices(4, 100))
    assert metrics["emotion_accuracy"] == 0.5          # 1 of the 2 labelled clips
    assert metrics["emotion_ua"] == 0.5                 # SAD 1, HAPPY 0
    # SAD predicted on 2 labelled clips (1 right): P 0.5, R 1 → F1 2/3; HAPPY F1 0
    assert metrics["emotion_macro_f1"] == pytest.approx(1 / 3)
    assert set(metrics["per_class"]) == {"<|SAD|>", "<|HAPPY|>"}
    assert metrics["cer"] == 1 / 8                      # text still counts on every clip
    only_text = [clip_row(str(i), None) for i in range(3)]
    text_clips = [score_clip(r, outputs[0]) for r in only_text]
    text_metrics = arm_metrics(only_text, text_clips, bootstrap_indices(3, 50))
    assert text_metrics["emotion_accuracy"] is None and text_metrics["emotion_ua"] is None
    delta = metric_delta(only_text, text_clips, text_clips, bootstrap_indices(3, 50))
    assert "emotion_accuracy" not in delta and delta["cer"] == 0
    assert np.isfinite(delta["ci95"]["cer"]).all()
