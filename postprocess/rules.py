"""Rules files: ordered rules with conditions on a clip's decoded emotion, event, language,
their probabilities, its duration and transcript, and actions that set or clear the emotion,
set the event or replace words; plus per-emotion score offsets (a prior correction, usually
fitted by `svlora rules fit`). Loaded from YAML into typed dataclasses, every value checked
with errors that name the rule and the field."""

from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import re2

from svlora.config import load_config
from svlora.errors import RecipeError
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema

RULES_VERSION = 1
CLEAR = "clear"  # action emotion: clear → <|EMO_UNKNOWN|>
EMO_UNKNOWN = "<|EMO_UNKNOWN|>"


@dataclass
class Condition:
    emotion: list[str] = field(default_factory=list)    # predicted emotion is one of (SAD, ...)
    event: list[str] = field(default_factory=list)      # predicted event is one of
    language: list[str] = field(default_factory=list)   # predicted language is one of (zh, ...)
    emotion_prob_below: float | None = None  # probability of the predicted emotion
    emotion_prob_above: float | None = None
    min_seconds: float | None = None         # clip duration
    max_seconds: float | None = None
    ends_with: list[str] = field(default_factory=list)      # transcript (punctuation stripped)
    contains_any: list[str] = field(default_factory=list)
    contains_none: list[str] = field(default_factory=list)  # e.g. negative words before a particle
    regex: str | None = None  # searched in the transcript by RE2 (linear time: no backreferences)


@dataclass
class Action:
    emotion: str | None = None   # an emotion (NEUTRAL, ...) or "clear" (→ EMO_UNKNOWN)
    event: str | None = None     # an event (Speech, Laughter, ...)
    replace: dict[str, str] = field(default_factory=dict)  # words in the text: domain terms


@dataclass
class Rule:
    name: str = ""
    when: Condition = field(default_factory=Condition)
    then: Action = field(default_factory=Action)


@dataclass
class RuleSet:
    version: int = RULES_VERSION
    # added to the log-probability of each emotion before the rules run (prior correction)
    emotion_offsets: dict[str, float] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    # evidence from `rules fit` (over-represented endings and words per confusion); not applied
    miner: dict = field(default_factory=dict)
    # the classes its names are read in (not a YAML key: load_rules sets the run's schema)
    labels: ClassVar[LabelSchema] = DEFAULT_SCHEMA

    def validate(self, where: str) -> None:
        if self.version != RULES_VERSION:
            raise RecipeError(f"{where}: version {self.version}; this svlora reads version {RULES_VERSION}")
        emotions = self.labels.emotion
        for name, offset in self.emotion_offsets.items():
            if as_tag(name, emotions) is None:
                raise RecipeError(f"{where}: emotion_offsets: {name!r} is not an emotion; use "
                                  f"{', '.join(t.strip('<|>') for t in emotions)}")
            if not isinstance(offset, (int, float)) or not math.isfinite(offset):
                raise RecipeError(f"{where}: emotion_offsets.{name}: {offset!r} is not a number")
        for index, rule in enumerate(self.rules):
            validate_rule(rule, f"{where}: rules[{index}] ({rule.name or 'unnamed'})", self.labels)


def as_tag(value: str, vocabulary: dict[str, int]) -> str | None:
    """'SAD', 'sad' or '<|SAD|>' → '<|SAD|>' when it is in `vocabulary`."""
    bare = value.strip().strip("<|>")
    return next((tag for tag in vocabulary if tag.strip("<|>").lower() == bare.lower()), None)


def validate_rule(rule: Rule, where: str, labels: LabelSchema = DEFAULT_SCHEMA) -> None:
    if not rule.name:
        raise RecipeError(f"{where}: name: every rule needs a name (it is reported when it fires)")
    for field_name in ("emotion", "event", "language"):
        vocabulary = labels.tags(field_name)
        for value in getattr(rule.when, field_name):
            if as_tag(value, vocabulary) is None:
                raise RecipeError(f"{where}: when.{field_name}: {value!r} is not one of "
                                  f"{', '.join(t.strip('<|>') for t in vocabulary)}")
    for name in ("emotion_prob_below", "emotion_prob_above"):
        value = getattr(rule.when, name)
        if value is not None and not 0 <= value <= 1:
            raise RecipeError(f"{where}: when.{name}: {value} is not a probability in [0, 1]")
    if rule.when.regex is not None:
        try:
            compiled_regex(rule.when.regex)
        except (re2.error, TypeError) as error:
            reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
            raise RecipeError(
                f"{where}: when.regex: {rule.when.regex!r} is not an RE2 regular expression "
                f"({reason}); rules match in linear time, so backreferences and lookaround are "
                "not supported: rewrite it without them (contains_any, contains_none and ends_with "
                "cover most uses)") from None
        shorthand = ascii_only_shorthand(rule.when.regex)
        if shorthand:
            raise RecipeError(
                f"{where}: when.regex: {rule.when.regex!r} uses {shorthand}, which RE2 matches in "
                "ASCII only (Python's re matches any script), so it would never match Chinese or "
                "Japanese text; write the class out: \\p{L} letters, \\p{N} digits, "
                "[\\p{L}\\p{N}_] word characters, [\\t\\n\\p{Z}] spaces")
    action = rule.then
    if action.emotion is not None and action.emotion != CLEAR and as_tag(action.emotion, labels.emotion) is None:
        raise RecipeError(f"{where}: then.emotion: {action.emotion!r} is not an emotion or 'clear' "
                          f"({', '.join(t.strip('<|>') for t in labels.emotion)})")
    if action.emotion == CLEAR and EMO_UNKNOWN not in labels.emotion:
        raise RecipeError(f"{where}: then.emotion: 'clear' sets EMO_UNKNOWN, which the label schema "
                          "leaves out; set one of its emotions instead")
    if action.event is not None and as_tag(action.event, labels.event) is None:
        raise RecipeError(f"{where}: then.event: {action.event!r} is not an event")
    if action.emotion is None and action.event is None and not action.replace:
        raise RecipeError(f"{where}: then: the rule does nothing (set emotion, event or replace)")


@functools.lru_cache(maxsize=256)
def ascii_only_shorthand(pattern: str) -> str | None:
    """The first of \\w \\W \\d \\D \\s \\S \\b \\B in `pattern` (RE2 gives them ASCII meanings), or None."""
    index = 0
    while index < len(pattern) - 1:
        if pattern[index] == "\\":
            if pattern[index + 1] in "wWdDsSbB":
                return pattern[index:index + 2]
            index += 2
        else:
            index += 1
    return None


def compiled_regex(pattern: str):
    """`pattern` compiled by RE2, whose matching time is linear in the text: a rules file can
    never stall the server with catastrophic backtracking, as Python's `re` can on (a+)+$."""
    options = re2.Options()
    options.log_errors = False  # the RecipeError says it once; RE2 would also print to stderr
    return re2.compile(pattern, options=options)


def load_rules(path: str | Path, labels: LabelSchema = DEFAULT_SCHEMA) -> RuleSet:
    """A rules file, every value checked against `labels` (the run's label schema: a rule may
    test and set its own classes); errors name the file, the rule and the field."""
    rules = load_config(RuleSet, path, kind="rules file")
    if not labels.is_default:
        rules.labels = labels  # an instance attribute: this file's rules read these classes
    rules.validate(str(path))
    return rules


def bare_text(text: str) -> str:
    """The transcript without trailing punctuation and spaces (for ends_with)."""
    text = text.strip()
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text


def matches(condition: Condition, parts: dict, probability: float | None, seconds: float | None,
            labels: LabelSchema = DEFAULT_SCHEMA) -> bool:
    def among(values: list[str], tag: str | None, vocabulary) -> bool:
        return not values or (tag is not None and tag in {as_tag(v, vocabulary) for v in values})

    text = parts["text"]
    checks = (
        among(condition.emotion, parts["emotion"], labels.emotion),
        among(condition.event, parts["event"], labels.event),
        among(condition.language, parts["language"], labels.language),
        condition.emotion_prob_below is None or (probability is not None and probability < condition.emotion_prob_below),
        condition.emotion_prob_above is None or (probability is not None and probability > condition.emotion_prob_above),
        condition.min_seconds is None or (seconds is not None and seconds >= condition.min_seconds),
        condition.max_seconds is None or (seconds is not None and seconds <= condition.max_seconds),
        not condition.ends_with or any(bare_text(text).endswith(w) for w in condition.ends_with),
        not condition.contains_any or any(w in text for w in condition.contains_any),
        not any(w in text for w in condition.contains_none),
        condition.regex is None or compiled_regex(condition.regex).search(text) is not None,
    )
    return all(checks)


def offset_probabilities(probabilities: dict[str, float], offsets: dict[str, float],
                         emotions: dict[str, int] = DEFAULT_SCHEMA.emotion) -> dict[str, float]:
    """p_i · exp(offset_i), renormalised: a per-class prior correction."""
    tags = {as_tag(k, emotions): v for k, v in offsets.items()}
    scaled = {tag: p * math.exp(tags.get(tag, 0.0)) for tag, p in probabilities.items()}
    total = sum(scaled.values()) or 1.0
    return {tag: value / total for tag, value in scaled.items()}


def join_output(parts: dict) -> str:
    return "".join(parts[k] or "" for k in ("language", "emotion", "event", "itn")) + parts["text"]


def replace_words(text: str, old: str, new: str) -> str:
    """`old` replaced by `new` where it stands as a whole: an edge of `old` that is a letter or
    digit of a space-delimited script must not touch another (so 'kne' → 'knee' leaves 'knee'
    alone); Chinese/Japanese edges match anywhere, those scripts have no spaces."""
    import re

    def bounded(character: str) -> bool:
        return character.isalnum() and unicodedata.east_asian_width(character) not in ("W", "F")

    pattern = (("(?<!\\w)" if bounded(old[0]) else "") + re.escape(old)
               + ("(?!\\w)" if bounded(old[-1]) else ""))
    return re.sub(pattern, lambda _: new, text) if old else text


def apply_rules(rules: RuleSet, raw: str, emotion_probs: dict[str, float] | None = None,
                seconds: float | None = None) -> dict:
    """One clip after the rules: {raw, emotion_probs, fired: [rule names]}. Offsets act first
    (they need the decoder's emotion distribution), then every matching rule in order, each
    seeing what the previous ones did."""
    labels = rules.labels
    parts = labels.split(raw)
    probabilities = dict(emotion_probs) if emotion_probs else None
    if rules.emotion_offsets and probabilities:
        probabilities = offset_probabilities(probabilities, rules.emotion_offsets, labels.emotion)
        parts["emotion"] = max(probabilities, key=probabilities.get)
    fired = []
    for rule in rules.rules:
        probability = probabilities.get(parts["emotion"]) if probabilities and parts["emotion"] else None
        if not matches(rule.when, parts, probability, seconds, labels):
            continue
        fired.append(rule.name)
        action = rule.then
        if action.emotion is not None:
            parts["emotion"] = EMO_UNKNOWN if action.emotion == CLEAR else as_tag(action.emotion, labels.emotion)
        if action.event is not None:
            parts["event"] = as_tag(action.event, labels.event)
        for old, new in action.replace.items():
            parts["text"] = replace_words(parts["text"], old, new)
    return {"raw": join_output(parts), "emotion_probs": probabilities, "fired": fired}
