"""Pure scoring of decoded outputs against a manifest: per-clip errors (characters for every
language, words for space-delimited ones), emotion/language/event correctness; per-arm metrics
with bootstrap intervals; paired deltas. No I/O, no model.

Units: `cer` counts characters in every language; `wer` counts words on clips in space-
delimited languages (en); `error_rate` is the language-aware headline: CER units for zh, yue,
ja and ko clips and WER units for en clips, pooled as edits over reference units.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from svlora.eval.stats import (DEFAULT_RESAMPLES, bootstrap_interval, macro_f1_metric,
                               mcnemar_exact, mean_metric, paired_bootstrap, ratio_metric,
                               resample_indices, unweighted_recall_metric)
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema
from svlora.manifest import ManifestRow
from svlora.eval.records import ScoredClip
from svlora.eval.terms import TERM_METRICS, term_metric_functions
from svlora.terms import TermScorer
from svlora.metrics import text_edits
from svlora.timestamps import timing_errors

NO_EMOTION = "(none)"  # column for outputs that carry no emotion tag
HEADLINE = ("error_rate", "cer", "wer", "empty_rate", "emotion_accuracy", "emotion_ua",
            "emotion_macro_f1")
TEXT_METRICS = ("error_rate", "cer", "wer", "empty_rate")  # judged together: see report.verdict
LOWER_IS_BETTER = set(TEXT_METRICS) | {"biased_error_rate", "unbiased_error_rate"}


def score_clip(row: ManifestRow, raw_output: str, emotion_probs: dict | None = None,
               schema: LabelSchema = DEFAULT_SCHEMA, head_probs: dict | None = None,
               terms: TermScorer | None = None, word_times: list[dict] | None = None) -> ScoredClip:
    """One clip's prediction: tags parsed by `schema`, normalised texts and edit counts; with
    the decoder's emotion distribution, the probability of the decoded emotion (its
    confidence); with a cascade's `head_probs` ({head: {label: p}}), each head's argmax;
    with `terms`, the clip's term record (svlora.eval.terms.score_terms); with the decoder's
    `word_times` and reference word times in the row, their timing errors (svlora.timestamps)."""
    parts = schema.split(raw_output)
    language = row.text_language.strip("<|>")
    edits = text_edits(row.target, parts["text"], language)
    chars, words = edits["chars"], edits["words"]
    headline = words if words is not None else chars
    return ScoredClip(
        raw=raw_output, text=parts["text"], emotion=parts["emotion"] or NO_EMOTION,
        language=parts["language"], event=parts["event"], chars=chars, words=words,
        empty=edits["empty"], errors=headline["sub"] + headline["del"] + headline["ins"],
        units=headline["ref"], unit="word" if words is not None else "char",
        emotion_correct=parts["emotion"] == row.emo_target if row.has_emotion else None,
        emotion_probs=emotion_probs,
        emotion_confidence=(emotion_probs or {}).get(parts["emotion"]) if emotion_probs else None,
        language_correct=parts["language"] == row.text_language,
        event_correct=parts["event"] == row.event_target,
        heads={name: max(p, key=p.get) for name, p in head_probs.items()} if head_probs else None,
        terms=terms.score(row.target, parts["text"], language) if terms else None,
        timing=timing_errors(row.words, word_times, language)
        if row.words is not None and word_times is not None else None)


def emotion_order(labels, order=DEFAULT_SCHEMA.emotion) -> list[str]:
    """Labels in the schema's order (`order`: its emotion classes, or a head's labels), then
    anything else (e.g. NO_EMOTION)."""
    labels = set(labels)
    known = [tag for tag in order if tag in labels]
    return known + sorted(labels - set(known))


def confusion_matrix(references: list[str], predictions: list[str],
                     order=DEFAULT_SCHEMA.emotion) -> dict:
    """Counts[reference][prediction]; rows are the reference classes present."""
    rows = emotion_order(references, order)
    columns = emotion_order(set(references) | set(predictions), order)
    pairs = Counter(zip(references, predictions))
    return {"rows": rows, "columns": columns,
            "counts": [[pairs[(r, c)] for c in columns] for r in rows]}


def per_class(references: list[str], predictions: list[str], order=DEFAULT_SCHEMA.emotion) -> dict:
    """Precision, recall and F1 of each reference class (a class an arm never predicts has
    recall 0)."""
    result = {}
    for tag in emotion_order(references, order):
        true_positive = sum(r == tag and p == tag for r, p in zip(references, predictions))
        predicted = sum(p == tag for p in predictions)
        actual = sum(r == tag for r in references)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[tag] = {"n": actual, "precision": precision, "recall": recall, "f1": f1}
    return result


def event_f1(rows: list[ManifestRow], clips: list[ScoredClip]) -> float:
    """Macro-F1 over the reference events present."""
    scores = per_class([r.event_target for r in rows], [c.event or "(none)" for c in clips])
    return float(np.mean([s["f1"] for s in scores.values()]))


class ArmArrays:
    """Per-clip arrays of one arm, and the metric functions the bootstrap resamples."""

    def __init__(self, rows: list[ManifestRow], clips: list[ScoredClip]):
        self.labelled = np.array([r.has_emotion for r in rows], dtype=bool)
        self.references = np.array([r.emo_target or "" for r in rows])  # "": no class
        self.predictions = np.array([c.emotion for c in clips])
        self.correct = np.array([bool(c.emotion_correct) for c in clips], dtype=bool)
        char_edits = [c.chars["sub"] + c.chars["del"] + c.chars["ins"] for c in clips]
        word_edits = [sum(c.words[k] for k in ("sub", "del", "ins")) if c.words else 0
                      for c in clips]
        self.metrics = {
            "error_rate": ratio_metric([c.errors for c in clips], [c.units for c in clips]),
            "cer": ratio_metric(char_edits, [c.chars["ref"] for c in clips]),
            "wer": ratio_metric(word_edits, [c.words["ref"] if c.words else 0 for c in clips]),
            "empty_rate": mean_metric(np.array([c.empty for c in clips], dtype=float)),
            "emotion_accuracy": ratio_metric(self.correct & self.labelled, self.labelled),
            "emotion_ua": unweighted_recall_metric(self.references, self.predictions),
            "emotion_macro_f1": macro_f1_metric(self.references, self.predictions),
        }
        if clips and all(c.terms is not None for c in clips):
            self.metrics.update(term_metric_functions([c.terms for c in clips]))

    @property
    def scored(self) -> tuple[str, ...]:
        """The headline metrics and, when terms were scored, the term metrics."""
        return HEADLINE + tuple(m for m in TERM_METRICS if m in self.metrics)

    def value(self, name: str) -> float | None:
        value = float(self.metrics[name](np.arange(len(self.correct))[None])[0])
        return None if np.isnan(value) else value


CALIBRATION_BINS = 10


def calibration(clips: list[ScoredClip]) -> dict | None:
    """Expected calibration error of the decoded emotion's probability over the labelled clips
    that carry one (equal-width bins), with each bin for the reliability diagram."""
    pairs = [(c.emotion_confidence, bool(c.emotion_correct)) for c in clips
             if c.emotion_confidence is not None and c.emotion_correct is not None]
    if not pairs:
        return None
    confidence = np.array([p for p, _ in pairs])
    correct = np.array([k for _, k in pairs], dtype=float)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    bins, ece = [], 0.0
    for b in range(CALIBRATION_BINS):
        members = which == b
        if members.any():
            gap = abs(confidence[members].mean() - correct[members].mean())
            ece += members.mean() * gap
            bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(members.sum()),
                         "confidence": float(confidence[members].mean()),
                         "accuracy": float(correct[members].mean())})
    return {"ece": float(ece), "n": len(pairs), "bins": bins}


def sdi(clips: list[ScoredClip], unit: str) -> dict | None:
    counted = [getattr(c, unit) for c in clips if getattr(c, unit)]
    if not counted:
        return None
    return {k: sum(c[k] for c in counted) for k in ("sub", "del", "ins", "ref")}


def head_metrics(rows: list[ManifestRow], clips: list[ScoredClip], head: str,
                 labels: tuple[str, ...], indices: np.ndarray) -> dict | None:
    """Accuracy, UA and macro-F1 (with bootstrap 95% intervals), per-class scores and the
    confusion of one extra head over the clips labelled for it; None for an arm that does
    not predict it."""
    if not any(c.heads and head in c.heads for c in clips):
        return None
    labelled = np.array([r.head(head) is not None for r in rows], dtype=bool)
    references = np.array([r.head(head) or "" for r in rows])
    predictions = np.array([(c.heads or {}).get(head, NO_EMOTION) for c in clips])
    metrics = {"accuracy": ratio_metric((references == predictions) & labelled, labelled),
               "ua": unweighted_recall_metric(references, predictions),
               "macro_f1": macro_f1_metric(references, predictions)}
    everything = np.arange(len(rows))[None]
    values = {name: float(metric(everything)[0]) for name, metric in metrics.items()}
    kept = [i for i in range(len(rows)) if labelled[i]]
    return {"n": int(labelled.sum()), **values,
            "ci95": {name: bootstrap_interval(metric, indices) for name, metric in metrics.items()},
            "per_class": per_class([references[i] for i in kept], [predictions[i] for i in kept], labels),
            "confusion": confusion_matrix([references[i] for i in kept],
                                          [predictions[i] for i in kept], labels)}


def arm_metrics(rows: list[ManifestRow], clips: list[ScoredClip], indices: np.ndarray,
                schema: LabelSchema = DEFAULT_SCHEMA) -> dict:
    """Every metric of one arm, with bootstrap 95% intervals for the headline ones; classes
    in the schema's order, and its extra heads where the arm predicts them."""
    arrays = ArmArrays(rows, clips)
    references = [r.emo_target for r in rows if r.has_emotion]
    predictions = [c.emotion for r, c in zip(rows, clips) if r.has_emotion]
    classes = per_class(references, predictions, schema.emotion)
    result = {"n": len(clips)}
    for name in arrays.scored:
        result[name] = arrays.value(name)
    result.update({
        "ci95": {name: bootstrap_interval(arrays.metrics[name], indices) for name in arrays.scored
                 if result[name] is not None},
        "char_edits": sdi(clips, "chars"), "word_edits": sdi(clips, "words"),
        "language_accuracy": float(np.mean([c.language_correct for c in clips])),
        "event_f1": event_f1(rows, clips),
        "per_class": classes,
        "per_emotion_accuracy": {tag: {"n": s["n"], "accuracy": s["recall"]} for tag, s in classes.items()},
        "confusion": confusion_matrix(references, predictions, schema.emotion),
        "calibration": calibration(clips),
        "heads": {name: metrics for name, labels in schema.heads.items()
                  if (metrics := head_metrics(rows, clips, name, labels, indices)) is not None},
    })
    return result


def metric_delta(rows: list[ManifestRow], base_clips: list[ScoredClip], other_clips: list[ScoredClip],
                 indices: np.ndarray, schema: LabelSchema = DEFAULT_SCHEMA) -> dict:
    """other − base for every headline metric, with paired-bootstrap 95% intervals and
    p-values, and the exact McNemar test on emotion correctness."""
    base, other = ArmArrays(rows, base_clips), ArmArrays(rows, other_clips)
    delta = {"n": len(rows), "ci95": {}, "p_value": {}}
    for name in base.scored:
        a, b = base.value(name), other.value(name)
        if a is None or b is None:
            continue
        paired = paired_bootstrap(base.metrics[name], other.metrics[name], indices)
        delta[name] = b - a
        delta["ci95"][name], delta["p_value"][name] = paired["ci95"], paired["p_value"]
    labelled = base.labelled
    delta["emotion_mcnemar"] = mcnemar_exact(base.correct[labelled], other.correct[labelled])
    base_classes = per_class(list(base.references[labelled]), list(base.predictions[labelled]),
                             schema.emotion)
    other_classes = per_class(list(other.references[labelled]), list(other.predictions[labelled]),
                              schema.emotion)
    delta["per_emotion_accuracy"] = {tag: other_classes[tag]["recall"] - s["recall"]
                                     for tag, s in base_classes.items()}
    return delta


def bootstrap_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    return resample_indices(n, resamples, seed)
