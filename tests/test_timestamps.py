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
