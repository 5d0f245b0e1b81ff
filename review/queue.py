"""The review queue: unreviewed audio ordered by how much a label would teach — models that
disagree on the same audio first, then small emotion margins and unsure language or event —
and stratified over (model, predicted emotion) so one noisy source cannot fill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from svlora.captures import Capture, read_captures, read_feedback
from svlora.review.served import Prediction, prediction_of

# a language or event this sure or less is named in `why`
UNSURE_BELOW = 0.8
# weight of an unsure language / event against the emotion's (1 - margin)
SIDE_WEIGHT = 0.5


@dataclass
class Answer:
    """What one model said about the audio (for the disagreement column)."""

    capture_id: str
    model: str
    emotion: str | None
    text: str


@dataclass
class QueueItem:
    capture: Capture          # the capture a label is written to (the most uncertain answer)
    prediction: Prediction
    score: float              # higher: a label teaches more
    answers: list[Answer] = field(default_factory=list)  # every capture of this audio
    why: list[str] = field(default_factory=list)

    @property
    def disagreement(self) -> bool:
        models = {a.model for a in self.answers}
        return len(models) > 1 and (len({a.emotion for a in self.answers}) > 1
                                    or len({" ".join(a.text.split()) for a in self.answers}) > 1)

    @property
    def stratum(self) -> tuple[str, str]:
        return self.capture.model, self.prediction.tags["emotion"] or "-"

    def to_dict(self) -> dict:
        p = self.prediction
        return {"id": self.capture.id, "model": self.capture.model, "audio": self.capture.audio,
                "audio_sha256": self.capture.audio_sha256, "score": round(self.score, 4),
                "stratum": "/".join(self.stratum), "prediction": {"text": p.text, **p.tags, **p.heads},
                "emotion_margin": rounded(p.margin()), "emotion_entropy": rounded(p.entropy()),
                "language_confidence": rounded(p.top("language")),
                "event_confidence": rounded(p.top("event")),
                "disagreement": [vars(a) for a in self.answers] if self.disagreement else None,
                "why": self.why}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def uncertainty(prediction: Prediction) -> float:
    """(1 - emotion margin) + SIDE_WEIGHT × (1 - top probability) of language and of event;
    a kind without probabilities adds nothing."""
    margin, language, event = prediction.margin(), prediction.top("language"), prediction.top("event")
    return ((1 - margin if margin is not None else 0.0)
            + SIDE_WEIGHT * (1 - language if language is not None else 0.0)
            + SIDE_WEIGHT * (1 - event if event is not None else 0.0))


def reasons(item: QueueItem) -> list[str]:
    p = item.prediction
    why = []
    if item.disagreement:
        why.append("models disagree: " + "; ".join(
            f"{a.model} {a.emotion or '-'} {shorten(a.text, 24)!r}" for a in item.answers))
    margin = p.margin()
    if margin is not None:
        why.append(f"emotion margin {margin:.2f} ({p.tags['emotion']} vs {p.runner_up()})")
    else:
        why.append("no emotion probabilities")
    for kind in ("language", "event"):
        top = p.top(kind)
        if top is not None and top <= UNSURE_BELOW:
            why.append(f"{kind} {p.tags[kind]} {top:.2f}")
    return why


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def group_by_audio(captures: list[Capture]) -> dict[str, list[Capture]]:
    groups: dict[str, list[Capture]] = {}
    for capture in captures:
        groups.setdefault(capture.audio_sha256, []).append(capture)
    return groups


def queue_item(group: list[Capture]) -> QueueItem:
    """One audio's entry: the most uncertain of its captures, with every model's answer."""
    predictions = [(c, prediction_of(c)) for c in group]
    capture, prediction = max(predictions, key=lambda pair: (uncertainty(pair[1]), pair[0].id))
    answers = [Answer(c.id, c.model, p.tags["emotion"], p.text) for c, p in predictions]
    item = QueueItem(capture, prediction, uncertainty(prediction), answers)
    item.why = reasons(item)
    return item


def rank_key(item: QueueItem) -> tuple:
    entropy = item.prediction.entropy()
    return (-item.score, -(entropy or 0.0), item.capture.id)


def stratified(items: list[QueueItem]) -> list[QueueItem]:
    """Round-robin over strata (model, predicted emotion), strata in order of their best
    item: the k-th item of a stratum comes after every stratum's (k-1)-th."""
    strata: dict[tuple, list[QueueItem]] = {}
    for item in sorted(items, key=rank_key):
        strata.setdefault(item.stratum, []).append(item)
    rounds = max((len(members) for members in strata.values()), default=0)
    return [members[k] for k in range(rounds) for members in strata.values() if k < len(members)]


def order_queue(items: list[QueueItem]) -> list[QueueItem]:
    """Disagreements first, then the rest; each part stratified."""
    return (stratified([i for i in items if i.disagreement])
            + stratified([i for i in items if not i.disagreement]))


def reviewed_audio(captures: list[Capture], feedback_ids: set[str]) -> set[str]:
    """The audio hashes some capture of which has feedback (one label covers every model)."""
    return {c.audio_sha256 for c in captures if c.id in feedback_ids}


def queue_of(captures: list[Capture], reviewed_ids: set[str],
             include_reviewed: bool = False) -> list[QueueItem]:
    """One item per audio no capture of which is in `reviewed_ids` (every audio with
    `include_reviewed`), best first."""
    done = set() if include_reviewed else reviewed_audio(captures, reviewed_ids)
    groups = [group for sha, group in group_by_audio(captures).items() if sha not in done]
    return order_queue([queue_item(group) for group in groups])


def build_queue(folder: Path, include_reviewed: bool = False) -> list[QueueItem]:
    """The queue of a capture folder (see queue_of)."""
    return queue_of(read_captures(folder), {f.id for f in read_feedback(folder)}, include_reviewed)
