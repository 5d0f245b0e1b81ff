"""Metric primitives shared by validation, the A/B report and post-processing fits: text
normalisation, CER, accuracy, unweighted average recall.

Normalisation (documented in the README): rich tags stripped, Unicode NFKC (full-width to
half-width), lower case, punctuation removed, whitespace collapsed; for zh/yue/ja all
whitespace is removed so CER counts characters only.
"""

from __future__ import annotations

import unicodedata
import warnings

import jiwer
import numpy as np

from svlora.labels import strip_rich_tags

NO_SPACE_LANGUAGES = {"zh", "yue", "ja"}


def normalize_text(text: str, language: str | None = None) -> str:
    text = unicodedata.normalize("NFKC", strip_rich_tags(text)).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    if language in NO_SPACE_LANGUAGES:
        return "".join(text.split())
    return " ".join(text.split())


def edit_counts(reference: str, hypothesis: str, unit: str = "char") -> dict:
    """Reference length and substitutions, deletions, insertions in characters or words
    (jiwer alignment) between two normalised strings."""
    if unit == "word":
        reference_units, hypothesis_units = reference.split(), hypothesis.split()
    else:
        reference_units, hypothesis_units = list(reference), list(hypothesis)
    if not reference_units:
        return {"ref": 0, "sub": 0, "del": 0, "ins": len(hypothesis_units)}
    if not hypothesis_units:
        return {"ref": len(reference_units), "sub": 0, "del": len(reference_units), "ins": 0}
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    output = process(reference, hypothesis)
    return {"ref": len(reference_units), "sub": output.substitutions,
            "del": output.deletions, "ins": output.insertions}


WORD_LANGUAGES = {"en"}  # scored in words as well as characters


def text_edits(reference: str, hypothesis: str, language: str | None) -> dict:
    """Edits of one clip, the single definition both validation and the A/B report use:
    `chars` (spaces not counted, every language) and `words` (en only, else None), each
    {ref, sub, del, ins}, on normalised text; `empty` when the hypothesis has no text."""
    reference, hypothesis = normalize_text(reference, language), normalize_text(hypothesis, language)
    chars = edit_counts(reference.replace(" ", ""), hypothesis.replace(" ", ""), "char")
    words = edit_counts(reference, hypothesis, "word") if language in WORD_LANGUAGES else None
    return {"chars": chars, "words": words, "empty": not hypothesis and bool(reference)}


def total_edits(counts: dict) -> int:
    return counts["sub"] + counts["del"] + counts["ins"]


def character_errors(reference: str, hypothesis: str) -> int:
    """Edit distance in characters between two normalised strings."""
    return total_edits(edit_counts(reference, hypothesis, "char"))


def corpus_cer(references: list[str], hypotheses: list[str], languages: list[str | None]) -> float:
    """CER as `svlora eval` reports it: total character edits over total reference characters,
    raw texts normalised per language, spaces not counted."""
    edits = [text_edits(r, h, lang)["chars"] for r, h, lang in zip(references, hypotheses, languages)]
    total = sum(e["ref"] for e in edits)
    return sum(total_edits(e) for e in edits) / total if total else 0.0


def accuracy(references: list[str], predictions: list[str | None]) -> float:
    return sum(r == p for r, p in zip(references, predictions)) / len(references) if references else 0.0


def unweighted_average_recall(references, predictions, indices=None, unlabelled=None):
    """Unweighted average recall (UA, sklearn's balanced accuracy): the mean over reference
    classes of the share of each class's clips predicted as that class. Clips whose reference
    is `unlabelled` belong to no class. With `indices` ([..., n] positions, e.g. bootstrap
    resamples) it is computed over each row of picks at once, a class a row did not draw
    leaving that row's mean; NaN where no class is present. A float without `indices`."""
    references, predictions = np.asarray(references), np.asarray(predictions)
    classes = [c for c in np.unique(references) if unlabelled is None or c != unlabelled]
    picks = np.arange(len(references)) if indices is None else np.asarray(indices)
    if not classes:
        recall = np.full(picks.shape[:-1], np.nan)
    else:
        picked_reference, picked_prediction = references[picks], predictions[picks]
        correct = picked_reference == picked_prediction
        in_class = np.stack([picked_reference == c for c in classes])    # [classes, ..., n]
        count, hits = in_class.sum(axis=-1), (in_class & correct).sum(axis=-1)
        recalls = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
        with warnings.catch_warnings():  # a row that drew no labelled clip: NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            recall = np.nanmean(recalls, axis=0)
    return float(recall) if indices is None else recall
