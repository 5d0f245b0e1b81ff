"""Domain-term metrics of an arm (`svlora eval --terms`) from the per-clip term records of
svlora.terms.score_terms (its docstring states the protocol): recall, precision and F1 of term
occurrences and biased / unbiased error rates (B-WER/U-WER in WeNet's sense), resampled by the
bootstrap like every other metric; and the per-term table. Pure functions, no I/O."""

from __future__ import annotations

from collections import Counter

import numpy as np

from svlora.eval.stats import Metric, ratio_metric
from svlora.terms import TermList

TERM_METRICS = ("term_recall", "term_precision", "term_f1", "biased_error_rate",
                "unbiased_error_rate")


def f1_metric(hits: np.ndarray, occurrences: np.ndarray, alarms: np.ndarray) -> Metric:
    """F1 of pooled recall and precision over the resampled clips."""
    def metric(indices: np.ndarray) -> np.ndarray:
        hit, occurring, alarm = (a[indices].sum(axis=-1) for a in (hits, occurrences, alarms))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(occurring + hit + alarm > 0,
                            2 * hit / np.maximum(occurring + hit + alarm, 1), np.nan)
    return metric


def term_metric_functions(records: list[dict]) -> dict[str, Metric]:
    """The bootstrap-resamplable term metrics of one arm's per-clip records."""
    hits = np.array([sum(o["hit"] for o in r["occurrences"]) for r in records], float)
    occurring = np.array([len(r["occurrences"]) for r in records], float)
    alarms = np.array([len(r["false_alarms"]) for r in records], float)
    return {"term_recall": ratio_metric(hits, occurring),
            "term_precision": ratio_metric(hits, hits + alarms),
            "term_f1": f1_metric(hits, occurring, alarms),  # 2PR/(P+R) = 2h/(occ + h + fa)
            "biased_error_rate": ratio_metric([r["biased"]["errors"] for r in records],
                                              [r["biased"]["ref"] for r in records]),
            "unbiased_error_rate": ratio_metric([r["unbiased"]["errors"] for r in records],
                                                [r["unbiased"]["ref"] for r in records])}


def per_term_table(terms: TermList, records_by_arm: dict[str, list[dict]], top: int = 3) -> list[dict]:
    """Per term (most frequent first): reference occurrences, recall per arm, and each arm's
    most common misrecognitions [[heard, count], ...]."""
    by_arm = {}  # arm -> term -> its occurrences (one pass over the records, not one per term)
    for arm, records in records_by_arm.items():
        by_arm[arm] = {}
        for record in records:
            for occurrence in record["occurrences"]:
                by_arm[arm].setdefault(occurrence["term"], []).append(occurrence)
    rows = []
    for term in terms.terms:
        row = {"term": term.text, "occurrences": 0, "recall": {}, "misrecognitions": {}}
        for arm, occurrences in by_arm.items():
            found = occurrences.get(term.text, [])
            row["occurrences"] = len(found)  # the references': the same for every arm
            row["recall"][arm] = sum(o["hit"] for o in found) / len(found) if found else None
            missed = Counter(o["heard"] for o in found if not o["hit"])
            row["misrecognitions"][arm] = [[heard, count] for heard, count in missed.most_common(top)]
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["occurrences"], r["term"]))
