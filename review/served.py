"""What a capture says was served: the prediction (tags as plain names, their probabilities)
and the label schema it must be reviewed against."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from svlora.captures import Capture, CaptureError, allowed_labels, recorded_schema
from svlora.label_schema import DEFAULT_SCHEMA, KINDS, LabelSchema
from svlora.labels import tag_name


@dataclass
class Prediction:
    """A capture's answer: text, each kind's tag (plain name: 'HAPPY', 'Speech', 'en') and
    distribution ({'HAPPY': 0.7, ...}); heads a cascade predicted ({'role': 'nurse'})."""

    text: str
    tags: dict[str, str | None]
    probs: dict[str, dict[str, float]]
    heads: dict[str, str] = field(default_factory=dict)

    def top(self, kind: str) -> float | None:
        """The probability of the most likely class of `kind`, if the response has them."""
        return max(self.probs[kind].values()) if self.probs.get(kind) else None

    def margin(self, kind: str = "emotion") -> float | None:
        """Top-1 minus top-2 probability: small when the model hesitates between two."""
        values = sorted(self.probs.get(kind, {}).values(), reverse=True)
        if not values:
            return None
        return values[0] - (values[1] if len(values) > 1 else 0.0)

    def entropy(self, kind: str = "emotion") -> float | None:
        """Entropy of `kind`'s distribution over log(classes): 0 certain, 1 uniform."""
        values = [p for p in self.probs.get(kind, {}).values() if p > 0]
        classes = len(self.probs.get(kind, {}))
        if not values or classes < 2:
            return None
        return -sum(p * math.log(p) for p in values) / math.log(classes)

    def runner_up(self, kind: str = "emotion") -> str | None:
        ranked = sorted(self.probs.get(kind, {}).items(), key=lambda item: -item[1])
        return ranked[1][0] if len(ranked) > 1 else None


def plain(tag: str | None) -> str | None:
    """'<|HAPPY|>' or 'HAPPY' as 'HAPPY'; None (no such tag in the response) stays None."""
    return None if tag is None else tag_name(tag)


def prediction_of(capture: Capture) -> Prediction:
    response = capture.response or {}
    probs = {kind: {plain(tag): float(p) for tag, p in (response.get(f"{kind}_probs") or {}).items()}
             for kind in KINDS}
    heads = {name[:-len("_probs")]: response[name[:-len("_probs")]] for name in response
             if name.endswith("_probs") and name[:-len("_probs")] not in KINDS
             and isinstance(response.get(name[:-len("_probs")]), str)}
    return Prediction(text=str(response.get("text") or ""),
                      tags={kind: plain(response.get(kind)) for kind in KINDS},
                      probs=probs, heads=heads)


def served_schema(capture: Capture, fallback: LabelSchema = DEFAULT_SCHEMA) -> LabelSchema:
    """The label schema a capture is reviewed against: the one serve recorded in its hashes,
    else `fallback` (--labels, or SenseVoice's) for captures that record none. Either way every
    class the model answered with must be in it: a fallback that is not the served model's
    schema is an error, not a guess."""
    recorded = recorded_schema(capture)
    schema = recorded or fallback
    prediction, allowed_by_kind = prediction_of(capture), allowed_labels(schema)
    for kind in KINDS:
        allowed = set(allowed_by_kind[kind])
        served = {*prediction.probs.get(kind, {}), *([prediction.tags[kind]] if prediction.tags[kind] else [])}
        unknown = sorted(served - allowed - {"nospeech"})
        if unknown:
            fix = ("its record contradicts itself; remove it" if recorded else
                   "pass --labels with the labels.json of the model that served it")
            where = "its recorded schema" if recorded else "the label schema in use"
            raise CaptureError(f"capture {capture.id} ({capture.model}) was answered with {kind} "
                               f"{', '.join(unknown)}, which {where} lacks; {fix}")
    return schema
