"""Word timestamps: CTC spans of the decoded tokens (FunASR's forced aligner) merged into words,
by hand; and on the trained tiny model, words ordered, inside the clip and spelling the text."""

from __future__ import annotations

import torch

from svlora.timestamps import token_spans, word_timings


def test_spans_follow_the_best_alignment_and_repeats_need_a_blank():
    path = [0, 1, 1, 0, 2, 0, 0, 1]  # blank a a blank b blank blank a
    log_probs = torch.full((len(path), 4), -10.0)
    for frame, token in enumerate(path):
        log_probs[frame, token] = 0.0
    assert token_spans(torch.log_softmax(log_probs, -1), [1, 2, 1]) == [(1, 3), (4, 5), (7, 8)]
    assert token_spans(torch.log_softmax(log_probs, -1), []) == []


def test_pieces_merge_into_words_and_cjk_characters_stand_alone():
    words = word_timings(["\u2581he", "llo", "\u2581w"], [(0, 2), (3, 4), (6, 8)], offset_seconds=1.0)
    assert [(w.word, round(w.start, 2), round(w.end, 2)) for w in words] == \
        [("hello", 1.0, 1.24), ("w", 1.36, 1.48)]
    words = word_timings(["我", "吃", "\u2581ok"], [(0, 1), (2, 3), (4, 6)])
    assert [w.word for w in words] == ["我", "吃", "ok"]


def test_transcribe_words_are_ordered_inside_the_clip_and_spell_the_text(trained_dir):
    import json

    from svlora.adapters import load_model

    rows = [json.loads(line) for line in (trained_dir / "general/test.jsonl").read_text().splitlines()][:10]
    runtime = load_model(str(trained_dir / "tiny-base"))
    for row, result in zip(rows, runtime.transcribe([r["source"] for r in rows], timestamps=True)):
        words = result["words"]
        assert " ".join(w["word"] for w in words) == " ".join(result["text"].split())
        assert all(0 <= w["start"] < w["end"] <= row["source_len"] / 100 + 0.06 for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))


def test_timing_errors_pair_words_spelled_alike_in_order_and_skip_the_rest():
    from svlora.timestamps import timing_errors, timing_summary

    reference = [{"word": "Take", "start": 0.10, "end": 0.40}, {"word": "tramadol", "start": 0.50, "end": 1.20},
                 {"word": "daily", "start": 1.30, "end": 1.70}]
    hypothesis = [{"word": "take", "start": 0.12, "end": 0.36}, {"word": "tramadoll", "start": 0.5, "end": 1.1},
                  {"word": "daily,", "start": 1.48, "end": 1.74}]
    record = timing_errors(reference, hypothesis, "en")
    assert record == {"reference_words": 3, "matched": 2, "start_errors": [0.02, 0.18],
                      "end_errors": [-0.04, 0.04]}
    summary = timing_summary([record, None, timing_errors(reference[:1], [], "en")])
    assert summary == {"clips": 2, "reference_words": 4, "matched_words": 2, "matched_share": 0.5,
                       "start_mean_ms": 100.0, "start_median_ms": 100.0, "end_mean_ms": 40.0,
                       "end_median_ms": 40.0, "within_100ms": 0.5}
    assert timing_summary([None]) is None


def test_bad_reference_word_times_name_the_place_and_the_word():
    import pytest

    from svlora.timestamps import checked_word_timings

    cases = {"words must be a list": "nope",
             r"words\[0\] must be an object with word, start and end": [{"word": "a", "start": 0}],
             r"words\[1\] \('b'\) starts at 0.1 s, before the word before it": [
                 {"word": "a", "start": 0.5, "end": 0.6}, {"word": "b", "start": 0.1, "end": 0.2}],
             r"words\[0\] \('a'\): needs 0 <= start <= end <= the clip's 1.0 s; got 0.2-1.5": [
                 {"word": "a", "start": 0.2, "end": 1.5}],
             r"words\[0\]: word must be a non-empty string": [{"word": " ", "start": 0, "end": 0.1}],
             r"words\[0\] \('a'\): start and end must be numbers": [{"word": "a", "start": "0", "end": 0.1}]}
    for message, words in cases.items():
        with pytest.raises(ValueError, match=f"^clips.jsonl:3: {message}"):
            checked_word_timings(words, 1.0, "clips.jsonl:3")


def test_prepare_carries_the_generators_word_times_and_refuses_bad_ones(trained_dir, tmp_path):
    import json
    import subprocess
    import sys

    truth = {}
    for line in (trained_dir / "demo/clinic/word_times.jsonl").read_text().splitlines():
        entry = json.loads(line)
        truth[str((trained_dir / "demo/clinic" / entry["audio"]).resolve())] = entry["words"]
    rows = [json.loads(line) for line in (trained_dir / "clinic/test.jsonl").read_text().splitlines()]
    assert rows and all(row["words"] == truth[row["source"]] for row in rows)
    assert all(" ".join(w["word"] for w in row["words"]) == row["target"] for row in rows)

    lines = (trained_dir / "demo/clinic/word_times.jsonl").read_text().splitlines()
    broken = json.loads(lines[4])
    broken["words"][0]["end"] = broken["words"][0]["start"] - 0.1
    bad = tmp_path / "word_times.jsonl"
    bad.write_text("\n".join(lines[:4] + [json.dumps(broken)] + lines[5:]) + "\n")
    for name in ("metadata.csv", "labels.yaml"):
        (tmp_path / name).write_text((trained_dir / "demo/clinic" / name).read_text())
    (tmp_path / "metadata.csv").write_text((trained_dir / "demo/clinic/metadata.csv").read_text()
                                           .replace("clinic_spk", str(trained_dir / "demo/clinic") + "/clinic_spk"))
    result = subprocess.run([sys.executable, "-m", "svlora.cli", "prepare", str(tmp_path / "metadata.csv"),
                             "--format", "csv", "--out", str(tmp_path / "out"), "--labels",
                             str(tmp_path / "labels.yaml"), "--word-times", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{bad}:5: words[0] ({broken['words'][0]['word']!r}): needs 0 <= start <= end" in result.stderr
    assert not (tmp_path / "out/train.jsonl").exists()


def test_the_quickstarts_timing_error_is_reported_and_a_recount_agrees(quickstart_dir):
    """The report's adapter timing against a recount made here: the adapter's transcribe
    --timestamps words on the test clips whose words all spell the reference's, paired one to one."""
    import json

    import numpy as np

    from svlora.adapters import load_model

    report = json.loads((quickstart_dir / "report/report.json").read_text())
    timing = report["timing"]["adapter"]
    assert timing["start_median_ms"] < 100 and timing["end_median_ms"] < 100
    assert timing["matched_share"] > 0.8 and report["timing"]["adapter+rules"] == timing
    rows = [json.loads(line) for line in (quickstart_dir / "clinic/test.jsonl").read_text().splitlines()]
    runtime = load_model(str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter"))
    starts, ends = [], []
    for row, result in zip(rows, runtime.transcribe([r["source"] for r in rows], timestamps=True)):
        heard, said = result["words"], row["words"]
        assert all(said[0]["start"] - 0.1 <= w["start"] <= w["end"] <= said[-1]["end"] + 0.1 for w in heard)
        if [w["word"] for w in heard] == [w["word"] for w in said]:
            starts += [abs(h["start"] - r["start"]) for h, r in zip(heard, said)]
            ends += [abs(h["end"] - r["end"]) for h, r in zip(heard, said)]
    assert len(starts) > 0.8 * timing["matched_words"]
    assert abs(np.median(starts) * 1000 - timing["start_median_ms"]) <= 10
    assert abs(np.median(ends) * 1000 - timing["end_median_ms"]) <= 10
