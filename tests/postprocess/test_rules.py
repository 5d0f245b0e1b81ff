"""Rules files: schema errors that name the rule and field, the soft-particle rule on hand-made
outputs, offsets, and `rules fit` recovering a bias injected into synthetic scores."""

import math

import numpy as np
import pytest

from svlora.errors import RecipeError
from svlora.postprocess import apply_rules, fit_offsets, load_rules, mine_confusions
from svlora.recipes.rules import RULES_DIR, rules_path


def write(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, message", [
    ("rules:\n  - name: a\n    when: {emotion: [SADD]}\n    then: {emotion: NEUTRAL}\n",
     r"rules\[0\] \(a\): when.emotion: 'SADD' is not one of"),
    ("rules:\n  - name: a\n    when: {regex: '(['}\n    then: {emotion: NEUTRAL}\n",
     r"rules\[0\] \(a\): when.regex: .* is not an RE2 regular expression \(missing \]"),
    ("rules:\n  - name: a\n    when: {regex: '(\\w+) \\1'}\n    then: {emotion: NEUTRAL}\n",
     r"rules\[0\] \(a\): when.regex: .*invalid escape sequence.*backreferences and lookaround"),
    ("rules:\n  - name: a\n    when: {regex: '好(?=吧)'}\n    then: {emotion: NEUTRAL}\n",
     r"when.regex: .*invalid perl operator.*linear time"),
    ("rules:\n  - name: a\n    when: {}\n    then: {}\n", r"rules\[0\] \(a\): then: the rule does nothing"),
    ("rules:\n  - name: a\n    when: {emotion_prob_below: 1.5}\n    then: {emotion: SAD}\n",
     r"when.emotion_prob_below: 1.5 is not a probability"),
    ("rules:\n  - name: a\n    when: {colour: red}\n    then: {emotion: SAD}\n",
     r"unknown key\(s\) rules\[0\].when.colour"),
    ("rules:\n  - when: {}\n    then: {emotion: SAD}\n", r"rules\[0\] \(unnamed\): name: every rule needs a name"),
    ("emotion_offsets: {CALM: 1}\n", r"emotion_offsets: 'CALM' is not an emotion"),
    ("rules:\n  - name: a\n    when: {}\n    then: {emotion: bored}\n", r"then.emotion: 'bored'"),
])
def test_schema_errors_name_the_rule_and_field(tmp_path, body, message):
    with pytest.raises(RecipeError, match=message):
        load_rules(write(tmp_path, body))


def test_shipped_examples_load():
    names = sorted(p.stem for p in RULES_DIR.glob("*.yaml"))
    assert names == ["soft_particles", "trading_floor", "unsure_emotion"]
    for name in names:
        assert load_rules(rules_path(name)).rules


def test_soft_particle_rule_on_hand_made_outputs():
    rules = load_rules(rules_path("soft_particles"))
    cases = {
        "<|zh|><|SAD|><|Speech|><|woitn|>那我们明天再去吧。": "<|NEUTRAL|>",   # particle, no negation
        "<|zh|><|SAD|><|Speech|><|woitn|>我真的不想去了吧": "<|SAD|>",          # a negative word
        "<|zh|><|SAD|><|Speech|><|woitn|>我们回家": "<|SAD|>",                  # no particle
        "<|zh|><|HAPPY|><|Speech|><|woitn|>好啊": "<|HAPPY|>",                  # not SAD
        "<|en|><|SAD|><|Speech|><|woitn|>fine then 吧": "<|SAD|>",              # not zh/yue
        "<|yue|><|SAD|><|Speech|><|woitn|>係咁啦呀": "<|NEUTRAL|>",
    }
    for raw, emotion in cases.items():
        applied = apply_rules(rules, raw)
        assert applied["raw"].split("|>")[1] + "|>" == emotion, raw
        assert applied["raw"].endswith(raw.split("<|woitn|>")[1])  # the words are untouched
    assert apply_rules(rules, "<|zh|><|SAD|><|Speech|><|woitn|>嗯嗯")["fired"] == [
        "a bare backchannel carries no emotion"]


def test_actions_replace_words_set_event_and_clear(tmp_path):
    rules = load_rules(write(tmp_path, """
rules:
  - name: jargon
    when: {}
    then: {replace: {平舱: 平仓}, event: Laughter}
  - name: unsure
    when: {emotion_prob_below: 0.6, min_seconds: 1.0}
    then: {emotion: clear}
"""))
    probs = {"<|HAPPY|>": 0.55, "<|SAD|>": 0.45}
    out = apply_rules(rules, "<|zh|><|HAPPY|><|Speech|><|woitn|>快平舱", probs, seconds=2.0)
    assert out["raw"] == "<|zh|><|EMO_UNKNOWN|><|Laughter|><|woitn|>快平仓"
    assert out["fired"] == ["jargon", "unsure"]
    short = apply_rules(rules, "<|zh|><|HAPPY|><|Speech|><|woitn|>快平舱", probs, seconds=0.5)
    assert "<|HAPPY|>" in short["raw"]  # too short for the second rule


def test_offsets_shift_the_decision(tmp_path):
    rules = load_rules(write(tmp_path, "emotion_offsets: {SAD: -1.0}\n"))
    probs = {"<|SAD|>": 0.6, "<|NEUTRAL|>": 0.4}
    out = apply_rules(rules, "<|zh|><|SAD|><|Speech|><|woitn|>好", probs)
    expected_sad = 0.6 * math.exp(-1) / (0.6 * math.exp(-1) + 0.4)
    assert out["emotion_probs"]["<|SAD|>"] == pytest.approx(expected_sad)
    assert "<|NEUTRAL|>" in out["raw"]


def synthetic_scores(n=600, bias=2.0, seed=0):
    """True classes with informative but noisy scores, then a bias of +`bias` log-units on SAD
    (the base model's habit of reading hesitation as sadness)."""
    rng = np.random.default_rng(seed)
    tags = ["<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>"]
    labels = rng.integers(0, 4, n)
    logits = rng.normal(0, 1.0, (n, 4))
    logits[np.arange(n), labels] += 2.0
    logits[:, 1] += bias
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [dict(zip(tags, p)) for p in probs], [tags[i] for i in labels]


def test_fit_recovers_an_injected_bias():
    distributions, references = synthetic_scores(bias=2.0)
    offsets = fit_offsets(distributions, references)
    # relative to the other emotions, SAD is pulled down by about the injected 2 log-units
    others = np.mean([offsets.get(t, 0.0) for t in ("HAPPY", "ANGRY", "NEUTRAL")])
    assert -2.75 <= offsets.get("SAD", 0.0) - others <= -1.25
    unbiased, _ = synthetic_scores(bias=0.0)
    fair = fit_offsets(unbiased, references)
    assert abs(fair.get("SAD", 0.0)) <= 0.75


def test_miner_lists_what_the_confusion_over_represents():
    outputs = (["<|zh|><|SAD|><|Speech|><|woitn|>好吧"] * 4 + ["<|zh|><|NEUTRAL|><|Speech|><|woitn|>好的"] * 8
               + ["<|zh|><|SAD|><|Speech|><|woitn|>太难过了"] * 4)
    references = ["<|NEUTRAL|>"] * 12 + ["<|SAD|>"] * 4
    mined = mine_confusions(outputs, references, ["zh"] * 16)
    assert list(mined) == ["SAD→NEUTRAL"]
    assert mined["SAD→NEUTRAL"]["clips"] == 4
    assert mined["SAD→NEUTRAL"]["endings"][0] == ["吧", 4, 4]


CATASTROPHIC = "rules:\n  - name: nested\n    when: {regex: '(a+)+$'}\n    then: {emotion: NEUTRAL}\n"


def test_a_catastrophic_regex_matches_in_linear_time(tmp_path):
    """(a+)+$ on 'aaa…ab' backtracks for ever in Python's `re` (which holds the GIL, so a thread
    could not even time it out): run in a subprocess, it must answer long before the limit."""
    import subprocess
    import sys

    path = write(tmp_path, CATASTROPHIC)
    script = (
        "import sys\nfrom svlora.postprocess import apply_rules, load_rules\n"
        f"rules = load_rules({str(path)!r})\n"
        "head = '<|en|><|SAD|><|Speech|><|woitn|>'\n"
        "print(apply_rules(rules, head + 'a' * 20000 + 'b')['fired'],"
        " apply_rules(rules, head + 'a' * 20000)['fired'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] ['nested']"


def test_rules_check_rejects_a_backreference_in_one_line(tmp_path, capsys):
    from svlora.cli import main

    path = write(tmp_path, "rules:\n  - name: repeated word\n    when: {regex: '(\\w+) \\1'}\n"
                           "    then: {emotion: NEUTRAL}\n")
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("svlora rules: error:")
    assert f"{path}: rules[0] (repeated word): when.regex:" in err[0] and "backreferences" in err[0]
    assert main(["rules", "check", str(write(tmp_path, CATASTROPHIC))]) == 0  # linear in RE2: valid


def test_ascii_only_shorthand_classes_are_refused_with_the_unicode_spelling(tmp_path, capsys):
    """RE2's \\w is ASCII: a rule written for Python's re (\\w matches 好) would silently stop
    firing on Chinese text, so validation refuses it and names the Unicode class to use."""
    import re2

    from svlora.cli import main

    assert re2.search(r"\w", "好吧") is None  # the behaviour this guards against
    path = write(tmp_path, "rules:\n  - name: any word\n    when: {regex: '^\\w+$'}\n"
                           "    then: {emotion: NEUTRAL}\n")
    assert main(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rules[0] (any word): when.regex:" in err[0]
    assert "\\w" in err[0] and "\\p{L}" in err[0]
    spelled_out = write(tmp_path, "rules:\n  - name: any word\n    when: {regex: '^[\\p{L}\\p{N}_]+$'}\n"
                                  "    then: {emotion: NEUTRAL}\n")
    assert main(["rules", "check", str(spelled_out)]) == 0
    rules = load_rules(spelled_out)
    assert apply_rules(rules, "<|zh|><|SAD|><|Speech|><|woitn|>好吧")["fired"] == ["any word"]


def test_replace_respects_word_edges_in_spaced_scripts_only():
    from svlora.postprocess.rules import replace_words

    assert replace_words("kne hurts, knee fine", "kne", "knee") == "knee hurts, knee fine"
    assert replace_words("我平舱了", "平舱", "平仓") == "我平仓了"


def test_term_mining_proposes_safe_replacements_and_the_terms_most_missed():
    from svlora.postprocess.fit import mine_terms
    from svlora.terms import parse_terms

    references = ["take heparin now", "heparin again", "more heparin", "the knee", "knee hurts",
                  "kne is a word"]
    heard = ["take heprin now", "heprin again", "more hepar in", "the kne", "kne hurts",
             "kne is a word"]
    mined = mine_terms(heard, references, ["en"] * 6, parse_terms("heparin\nknee\n", "t"))
    # 'heprin' is heard twice for heparin and said by nobody: a replacement; 'kne' is a word
    # one reference really says, so replacing it would break that transcript
    assert mined["replace"] == [["heprin", "heparin", 2]]
    assert mined["terms"] == [["heparin", 3, 3], ["knee", 2, 2]]
    words = mine_terms(heard, references, ["en"] * 6)  # no terms list: every reference word
    assert ["heprin", "heparin", 2] in words["replace"] and words["terms"][0] == ["heparin", 3, 3]
