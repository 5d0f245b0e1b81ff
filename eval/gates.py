"""`--gate "emotion_ua>=+0.02,cer<=+0.005,general_cer<=+0.01"`: thresholds on each arm's change
against base; a missed threshold fails the run (exit code 2) so teams can gate CI on it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from svlora.errors import SvloraError
from svlora.eval.terms import TERM_METRICS

GATE_PATTERN = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=)\s*([+-]?\d*\.?\d+(?:e-?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str      # a delta metric (cer, wer, error_rate, emotion_ua, ...) or general_<metric>
    operator: str    # >= or <=
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:+g}"


def parse_gates(spec: str | None, has_adapters: bool = True, has_general: bool = True,
                has_terms: bool = False) -> list[Gate]:
    """The gates of `spec`, every metric name and value checked now (before any decoding): a
    gate the run cannot evaluate is an error, never a vacuous pass."""
    if spec is None:
        return []
    if not spec.strip():
        raise SvloraError("--gate is empty: give thresholds such as 'emotion_ua>=+0.02,cer<=+0.005'")
    gates = []
    for part in spec.split(","):
        match = GATE_PATTERN.match(part)
        if not match:
            raise SvloraError(f"--gate {part!r}: expected METRIC>=+DELTA or METRIC<=+DELTA, e.g. "
                              "emotion_ua>=+0.02 or cer<=+0.005")
        metric = match.group(1)
        if metric.removeprefix("general_") not in GATE_METRICS:
            raise SvloraError(f"--gate {part!r}: unknown metric {metric!r}; use one of "
                              f"{', '.join(GATE_METRICS)} (general_ prefix: on --general)")
        if metric.startswith("general_") and not has_general:
            raise SvloraError(f"--gate {part!r} needs --general MANIFEST")
        if metric.removeprefix("general_") in TERM_METRICS and not has_terms:
            raise SvloraError(f"--gate {part!r} needs --terms TERMS.txt")
        gates.append(Gate(metric, match.group(2), float(match.group(3))))
    if not has_adapters:
        raise SvloraError("--gate compares adapters with the base, but no --adapter was given")
    return gates


GATE_METRICS = ("error_rate", "cer", "wer", "empty_rate", "emotion_accuracy", "emotion_ua",
                "emotion_macro_f1", *TERM_METRICS)  # the term metrics need --terms
# A gate on the headline error rate holds only if every text metric meets it: an English
# adapter that empties its outputs can look fine in WER and not in CER.
TEXT_GATE_METRICS = {"error_rate": ("error_rate", "cer", "wer")}


def gate_value(gate_metric: str, delta: dict) -> tuple[float | None, str]:
    """The delta a gate tests, and which metric gave it (the worst of the text metrics for
    error_rate)."""
    names = [m for m in TEXT_GATE_METRICS.get(gate_metric, (gate_metric,)) if delta.get(m) is not None]
    if not names:
        return None, gate_metric
    worst = max(names, key=lambda m: delta[m])  # every gated text metric is lower-is-better
    return delta[worst], worst


def check_gates(gates: list[Gate], deltas: dict[str, dict], retention: dict | None) -> dict:
    """{arm: [{gate, value, metric, passed}]} for every non-base arm."""
    results = {}
    for arm, delta in deltas.items():
        checks = []
        for gate in gates:
            if gate.metric.startswith("general_"):
                if retention is None:
                    raise SvloraError(f"gate {gate} needs --general MANIFEST")
                value, metric = gate_value(gate.metric.removeprefix("general_"),
                                           retention["delta"][arm])
            else:
                value, metric = gate_value(gate.metric, delta)
            if value is None and metric.removeprefix("general_") not in TERM_METRICS:
                raise SvloraError(f"gate {gate}: no such metric for arm {arm} (use "
                                  f"{', '.join(GATE_METRICS)})")
            # a term metric without a value (no term occurs; no hit and no false alarm) fails:
            # a gate the run cannot evaluate never passes
            passed = value is not None and (value >= gate.threshold if gate.operator == ">="
                                            else value <= gate.threshold)
            checks.append({"gate": str(gate), "gated": gate.metric, "operator": gate.operator,
                           "threshold": gate.threshold, "value": value, "metric": metric,
                           "passed": bool(passed)})
        results[arm] = checks
    return results


def failure_line(arm: str, check: dict) -> str:
    """A failed gate in one line: the metric as the user wrote it, its change, the threshold,
    and which text metric gave the change when that is another one (an error_rate gate)."""
    measured = check["metric"]
    if check["value"] is None:
        return (f"gate failed: {arm}: {check['gated']} has no value (no term of --terms occurs in "
                "the references, or the arm has no hit and no false alarm) (--gate "
                f"{check['gate']})")
    via = "" if measured == check["gated"].removeprefix("general_") else f" (its worst: {measured})"
    side = "below" if check["operator"] == ">=" else "above"
    return (f"gate failed: {arm}: {check['gated']} changed by {check['value']:+.4f}{via}, {side} "
            f"the threshold {check['threshold']:+g} (--gate {check['gate']})")
