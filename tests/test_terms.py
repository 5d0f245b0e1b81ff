"""Terms files and the per-clip term protocol (svlora.terms), worked out by hand."""

from __future__ import annotations

import random

import pytest

from svlora.metrics import text_edits
from svlora.terms import TermScorer, TermsError, parse_terms, read_terms


def test_terms_file_comments_aliases_and_warnings_name_their_lines():
    terms = parse_terms("# drugs\nheparin\tHeparine|heparin sodium\n\ntramadol\n\nTramadol\n", "t.txt")
    assert [t.text for t in terms.terms] == ["heparin", "tramadol"]
    assert terms.terms[0].aliases == ("Heparine", "heparin sodium")
    assert terms.terms[1].line == 4
    assert terms.warnings[0] == "t.txt: 2 empty line(s) skipped (line 3, 5)"
    assert "t.txt:6: 'Tramadol' is already a spelling on line 4; ignored" in terms.warnings


@pytest.mark.parametrize("text, message", [
    ("heparin\n<|HAPPY|>\n", "t.txt:2: <|HAPPY|> is a rich tag"),
    ("heparin\t|hep\n", "t.txt:1: an empty term or alias"),
    ("heparin\n...\n", "t.txt:2: '...' is only punctuation"),
    ("a\tb\tc\n", "t.txt:1: more than one TAB"),
    ("heparin\ntramadol\t\n", "t.txt:2: a TAB with no alias after it"),
    ("heparin\fx\n\n<|SAD|>\n", "t.txt:3: <|SAD|> is a rich tag"),  # a form feed is no line break
    ("\n# only a comment\n", "t.txt: no terms"),
])
def test_bad_terms_are_errors_naming_the_line(text, message):
    with pytest.raises(TermsError, match=message.replace("|", r"\|").replace(".", r"\.")):
        parse_terms(text, "t.txt")


def test_a_terms_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_bytes("heparin\ntramadol\nsertralin\xe9\n".encode("latin-1"))
    with pytest.raises(TermsError, match=rf"{path}:3: not UTF-8"):
        read_terms(path)


def test_search_settings_and_paths_are_bounded():
    from svlora.hotwords import check_search_settings

    for score, beam, message in ((2.0, 100_000, "--beam 100000: use 1 to 64"),
                                 (float("nan"), 8, "--hotword-score nan: use 0 to 20"),
                                 (1e308, 8, "--hotword-score 1e\\+308: use 0 to 20")):
        with pytest.raises(TermsError, match=message):
            check_search_settings(score, beam)
    with pytest.raises(TermsError, match="the terms file path is empty"):
        read_terms("")


def test_an_undefined_term_metric_fails_its_gate_with_the_reason():
    from svlora.eval.gates import check_gates, failure_line, parse_gates

    gates = parse_gates("term_recall>=+0.1", has_terms=True)
    [check] = check_gates(gates, {"hw": {"error_rate": 0.0}}, None)["hw"]
    assert check["value"] is None and not check["passed"]
    assert "term_recall has no value (no term of --terms occurs" in failure_line("hw", check)


def scorer(text: str) -> TermScorer:
    return TermScorer(parse_terms(text, "t.txt"))


def test_hits_misses_false_alarms_and_biased_edits_by_hand():
    record = scorer("heparin\ntramadol\n").score("take heparin and tramadol now",
                                                 "take heprin and tramadol tramadol now", "en")
    # heparin was misheard; the second tramadol is an insertion: a false alarm, an unbiased edit
    assert record["occurrences"] == [{"term": "heparin", "heard": "heprin", "hit": False},
                                     {"term": "tramadol", "heard": "tramadol", "hit": True}]
    assert record["false_alarms"] == ["tramadol"]
    assert record["biased"] == {"ref": 2, "errors": 1}
    assert record["unbiased"] == {"ref": 3, "errors": 1}


def test_insertions_inside_a_multiword_term_are_biased_and_break_the_hit():
    record = scorer("heart rate\n").score("heart rate high", "heart uh rate high", "en")
    assert record["occurrences"] == [{"term": "heart rate", "heard": "heart uh rate", "hit": False}]
    assert record["biased"] == {"ref": 2, "errors": 1} and record["unbiased"] == {"ref": 1, "errors": 0}


def test_an_alias_counts_as_the_term_and_a_deletion_is_heard_as_nothing():
    terms = scorer("heparin\theparine\n")
    assert terms.score("heparin now", "heparine now", "en")["occurrences"][0]["hit"]
    missed = terms.score("now heparin", "now", "en")["occurrences"][0]
    assert missed == {"term": "heparin", "heard": "(nothing)", "hit": False}
    # a miss is heard with the insertions at its edges (what a replace rule must match)
    split = scorer("amiodarone\n").score("nurse amiodarone", "nurse am iodarone", "en")
    assert split["occurrences"] == [{"term": "amiodarone", "heard": "am iodarone", "hit": False}]


def test_chinese_terms_are_scored_in_characters():
    record = scorer("阿莫西林\n").score("我吃阿莫西林了", "我吃阿莫西临了", "zh")
    assert record["occurrences"] == [{"term": "阿莫西林", "heard": "阿莫西临", "hit": False}]
    assert record["biased"] == {"ref": 4, "errors": 1} and record["unbiased"] == {"ref": 3, "errors": 0}


def test_biased_and_unbiased_edits_add_up_to_the_error_rates_edits():
    """B + U edits equal the headline edits text_edits counts, on random strings."""
    words = ["knee", "pain", "heparin", "heart", "rate", "dose"]
    terms = scorer("heparin\nheart rate\nknee\n")
    generator = random.Random(0)
    for _ in range(200):
        reference = " ".join(generator.choices(words, k=generator.randint(0, 6)))
        hypothesis = " ".join(generator.choices(words + ["hep", "rat"], k=generator.randint(0, 6)))
        record = terms.score(reference, hypothesis, "en")
        edits = text_edits(reference, hypothesis, "en")["words"]
        assert record["biased"]["errors"] + record["unbiased"]["errors"] == \
            edits["sub"] + edits["del"] + edits["ins"], (reference, hypothesis)
        assert record["biased"]["ref"] + record["unbiased"]["ref"] == edits["ref"]
