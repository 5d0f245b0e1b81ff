from svlora.metrics import accuracy, character_errors, corpus_cer, normalize_text


def test_normalization_strips_tags_case_punctuation_and_width():
    assert normalize_text("<|en|><|HAPPY|>Hello,  World!", "en") == "hello world"
    assert normalize_text("<|zh|>你好，世界！ ＡＢ", "zh") == "你好世界ab"


def test_cer_counts_character_edits_over_reference_characters():
    assert character_errors("abcd", "abxd") == 1
    assert character_errors("abcd", "abd") == 1
    assert character_errors("", "ab") == 2
    # 1 substitution in 4 chars + 2 deletions in 2 chars = 3 edits / 6 chars
    assert corpus_cer(["abcd", "ef"], ["abxd", ""]) == 0.5
    assert accuracy(["a", "b", "c", "d"], ["a", "b", None, "x"]) == 0.5
