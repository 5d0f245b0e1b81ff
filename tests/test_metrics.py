import pytest

from svlora.metrics import accuracy, character_errors, corpus_cer, normalize_text, text_edits


def test_normalization_strips_tags_case_punctuation_and_width():
    assert normalize_text("<|en|><|HAPPY|>Hello,  World!", "en") == "hello world"
    assert normalize_text("<|zh|>你好，世界！ ＡＢ", "zh") == "你好世界ab"


def test_cer_counts_character_edits_over_reference_characters():
    assert character_errors("abcd", "abxd") == 1
    assert character_errors("abcd", "abd") == 1
    assert character_errors("", "ab") == 2
    # 1 substitution in 4 chars + 2 deletions in 2 chars = 3 edits / 6 chars
    assert corpus_cer(["abcd", "ef"], ["abxd", ""], ["zh", "zh"]) == 0.5
    assert accuracy(["a", "b", "c", "d"], ["a", "b", None, "x"]) == 0.5


def test_validation_cer_is_the_reports_cer():
    """Training's val_cer and eval's cer: one function, spaces never counted, per language."""
    from svlora.eval.scoring import arm_metrics, bootstrap_indices, score_clip
    from svlora.manifest import ManifestRow

    references = ["The cat sat on the mat.", "你好，世界", "a b c"]
    hypotheses = ["the cat sat on them at", "你好世", "abc"]
    languages = ["en", "zh", "en"]
    rows = [ManifestRow(key=str(i), source="x.wav", source_len=100, target=r, target_len=1,
                        text_language=f"<|{lang}|>", emo_target="<|SAD|>",
                        event_target="<|Speech|>", with_or_wo_itn="<|woitn|>")
            for i, (r, lang) in enumerate(zip(references, languages))]
    clips = [score_clip(row, f"<|{lang}|><|SAD|><|Speech|><|woitn|>{h}")
             for row, h, lang in zip(rows, hypotheses, languages)]
    report_cer = arm_metrics(rows, clips, bootstrap_indices(3, 10))["cer"]
    # en: "thecatsatonthemat" vs "thecatsatonthemat" = 0 edits / 17; zh: 1 / 4; "abc": 0 / 3
    assert corpus_cer(references, hypotheses, languages) == report_cer == 1 / 24
    assert text_edits("a b", "", "en")["empty"] and not text_edits("", "", "en")["empty"]


def test_unweighted_average_recall_by_hand_and_over_resamples():
    import numpy as np

    from svlora.metrics import unweighted_average_recall

    references = ["A", "A", "A", "B", "B", "C", ""]
    predictions = ["A", "A", "B", "B", "C", "A", "B"]
    # recall A 2/3, B 1/2, C 0; the unlabelled clip ("") is in no class
    assert unweighted_average_recall(references, predictions, unlabelled="") == pytest.approx(7 / 18)
    # without `unlabelled`, "" is a class of its own with recall 0
    assert unweighted_average_recall(references, predictions) == pytest.approx(7 / 24)
    # per resample: [A A A] → 2/3; [B B C] → (1 + 0) / 2 (A not drawn); [""] → no class
    rows = unweighted_average_recall(references, predictions, np.array([[0, 1, 2], [3, 3, 5], [6, 6, 6]]),
                                     unlabelled="")
    assert rows[:2].tolist() == pytest.approx([2 / 3, 0.5]) and np.isnan(rows[2])


def test_unweighted_average_recall_is_sklearns_balanced_accuracy():
    metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    from svlora.metrics import unweighted_average_recall

    rng = np.random.default_rng(3)
    references, predictions = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    assert unweighted_average_recall(references, predictions) == pytest.approx(
        metrics.balanced_accuracy_score(references, predictions))
