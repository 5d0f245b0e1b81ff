"""Uncertainty for the A/B report: seeded clip-level bootstrap intervals, paired bootstrap for
deltas, and the exact McNemar test for paired correctness. Pure numpy, no I/O."""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

from svlora.metrics import unweighted_average_recall

DEFAULT_RESAMPLES = 1000

# A metric reads arrays of per-clip values at resampled indices [B, n] and returns [B] values.
Metric = Callable[[np.ndarray], np.ndarray]


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] clip indices drawn with replacement (the same for every arm: paired)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_interval(metric: Metric, indices: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of a metric over clip-level resamples."""
    return interval(metric(indices), level)


def paired_bootstrap(metric_a: Metric, metric_b: Metric, indices: np.ndarray,
                     level: float = 0.95) -> dict:
    """Interval of b − a on the same resamples, and a two-sided p-value for b − a = 0."""
    deltas = metric_b(indices) - metric_a(indices)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return {"ci95": [float("nan"), float("nan")], "p_value": float("nan")}
    below, above = np.mean(deltas <= 0), np.mean(deltas >= 0)
    return {"ci95": interval(deltas, level), "p_value": float(min(1.0, 2 * min(below, above)))}


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired right/wrong outcomes of two classifiers."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return {"only_base_correct": 0, "only_other_correct": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"only_base_correct": only_a, "only_other_correct": only_b,
            "p_value": float(min(1.0, 2 * tail))}


def ratio_metric(numerator: np.ndarray, denominator: np.ndarray) -> Metric:
    """sum(numerator)/sum(denominator) over the resampled clips (e.g. edits / reference length)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)

    def metric(indices: np.ndarray) -> np.ndarray:
        top = numerator[indices].sum(axis=-1)
        bottom = denominator[indices].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)
    return metric


def mean_metric(values: np.ndarray) -> Metric:
    values = np.asarray(values, float)
    return lambda indices: values[indices].mean(axis=-1)


def quiet_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over classes; NaN (no warning) for a resample that drew no labelled clip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def no_classes_metric(indices: np.ndarray) -> np.ndarray:
    """NaN everywhere: a set with no labelled clip has no class metric."""
    return np.full(np.shape(indices)[:-1], np.nan)


def unweighted_recall_metric(references: np.ndarray, predictions: np.ndarray,
                             unlabelled: str = "") -> Metric:
    """UA (svlora.metrics.unweighted_average_recall) over resampled clips; clips whose
    reference is `unlabelled` belong to no class."""
    references, predictions = np.asarray(references), np.asarray(predictions)
    return lambda indices: unweighted_average_recall(references, predictions, indices, unlabelled)


def macro_f1_metric(references: np.ndarray, predictions: np.ndarray,
                    unlabelled: str = "") -> Metric:
    """Macro-F1 over the reference classes (predictions on unlabelled clips are not counted)."""
    references, predictions = np.asarray(references), np.asarray(predictions)
    predictions = np.where(references == unlabelled, unlabelled, predictions)
    classes = [c for c in np.unique(references) if c != unlabelled]
    if not classes:
        return no_classes_metric

    def metric(indices: np.ndarray) -> np.ndarray:
        picked_reference, picked_prediction = references[indices], predictions[indices]
        scores = []
        for label in classes:
            true_positive = ((picked_reference == label) & (picked_prediction == label)).sum(axis=-1)
            predicted = (picked_prediction == label).sum(axis=-1)
            actual = (picked_reference == label).sum(axis=-1)
            denominator = predicted + actual
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append(np.where(actual > 0, 2 * true_positive / np.maximum(denominator, 1),
                                       np.nan))
        return quiet_nanmean(np.stack(scores))
    return metric
