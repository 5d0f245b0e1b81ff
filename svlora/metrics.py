"""Metric primitives shared by validation and the A/B report: text normalisation, CER, accuracy.

Normalisation (documented in the README): rich tags stripped, Unicode NFKC (full-width to
half-width), lower case, punctuation removed, whitespace collapsed; for zh/yue/ja all
whitespace is removed so CER counts characters only.
"""

from __future__ import annotations

import unicodedata

import jiwer

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


def character_errors(reference: str, hypothesis: str) -> int:
    """Edit distance in characters between two normalised strings."""
    counts = edit_counts(reference, hypothesis, "char")
    return counts["sub"] + counts["del"] + counts["ins"]


def corpus_cer(references: list[str], hypotheses: list[str]) -> float:
    """Total character edits over total reference characters (strings already normalised)."""
    total = sum(len(r) for r in references)
    edits = sum(character_errors(r, h) for r, h in zip(references, hypotheses))
    return edits / total if total else 0.0


def accuracy(references: list[str], predictions: list[str | None]) -> float:
    return sum(r == p for r, p in zip(references, predictions)) / len(references) if references else 0.0
