"""The bootstrap and McNemar against known answers; the gate parser."""

import numpy as np
import pytest

from svlora.errors import SvloraError
from svlora.eval.gates import check_gates, parse_gates
from svlora.eval.stats import (bootstrap_interval, mcnemar_exact, mean_metric, paired_bootstrap,
                               ratio_metric, resample_indices)


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation():
    n, p = 2000, 0.3
    values = np.zeros(n)
    values[: int(n * p)] = 1
    low, high = bootstrap_interval(mean_metric(values), resample_indices(n, 4000, seed=1))
    half_width = 1.96 * np.sqrt(p * (1 - p) / n)  # ≈ 0.0201
    assert low == pytest.approx(p - half_width, abs=0.003)
    assert high == pytest.approx(p + half_width, abs=0.003)


def test_bootstrap_of_a_constant_is_a_point_and_seeded():
    indices = resample_indices(50, 300, seed=7)
    assert bootstrap_interval(mean_metric(np.full(50, 0.25)), indices) == [0.25, 0.25]
    assert np.array_equal(indices, resample_indices(50, 300, seed=7))


def test_ratio_metric_pools_edits_over_reference_length():
    metric = ratio_metric([1, 0, 3], [4, 2, 4])
    assert metric(np.array([[0, 1, 2], [2, 2, 2]])).tolist() == [0.4, 0.75]


def test_paired_bootstrap_detects_a_consistent_improvement():
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.6
    other = base | (rng.random(400) < 0.3)  # only ever fixes clips
    result = paired_bootstrap(mean_metric(base), mean_metric(other), resample_indices(400, 1000, 0))
    assert result["ci95"][0] > 0 and result["p_value"] < 0.01
    same = paired_bootstrap(mean_metric(base), mean_metric(base), resample_indices(400, 200, 0))
    assert same["ci95"] == [0.0, 0.0] and same["p_value"] == 1.0


def test_mcnemar_exact_on_a_textbook_table():
    # discordant pairs b = 10 (only A right), c = 2 (only B right):
    # p = 2 · Σ_{k≤2} C(12, k) / 2^12 = 2 · 79 / 4096 = 0.03857
    a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 8)
    b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 8)
    result = mcnemar_exact(a, b)
    assert result["only_base_correct"] == 10 and result["only_other_correct"] == 2
    assert result["p_value"] == pytest.approx(79 / 2048)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_gates_parse_and_decide():
    gates = parse_gates("emotion_ua>=+0.02, cer<=+0.005,general_cer<=0.01")
    assert [str(g) for g in gates] == ["emotion_ua>=+0.02", "cer<=+0.005", "general_cer<=+0.01"]
    deltas = {"a": {"emotion_ua": 0.05, "cer": 0.001}, "b": {"emotion_ua": 0.01, "cer": -0.02}}
    retention = {"delta": {"a": {"cer": 0.02}, "b": {"cer": 0.0}}}
    results = check_gates(gates, deltas, retention)
    assert [c["passed"] for c in results["a"]] == [True, True, False]
    assert [c["passed"] for c in results["b"]] == [False, True, True]
    with pytest.raises(SvloraError, match="expected METRIC>=\\+DELTA"):
        parse_gates("ua > 2")
    with pytest.raises(SvloraError, match="needs --general"):
        check_gates(parse_gates("general_cer<=0.01"), deltas, None)
