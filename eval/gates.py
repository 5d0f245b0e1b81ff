"""`--gate "emotion_ua>=+0.02,cer<=+0.005,general_cer<=+0.01"`: thresholds on each arm's change
against base; a missed threshold fails the run (exit code 2) so teams can gate CI on it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from svlora.errors import SvloraError

GATE_PATTERN = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=)\s*([+-]?\d*\.?\d+(?:e-?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str      # a delta metric (cer, wer, error_rate, emotion_ua, ...) or general_<metric>
    operator: str    # >= or <=
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:+g}"


def parse_gates(spec: str | None) -> list[Gate]:
    if not spec:
        return []
    gates = []
    for part in spec.split(","):
        match = GATE_PATTERN.match(part)
        if not match:
            raise SvloraError(f"--gate {part!r}: expected METRIC>=+DELTA or METRIC<=+DELTA, e.g. "
                              "emotion_ua>=+0.02 or cer<=+0.005")
        gates.append(Gate(match.group(1), match.group(2), float(match.group(3))))
    return gates


def check_gates(gates: list[Gate], deltas: dict[str, dict], retention: dict | None) -> dict:
    """{arm: [{gate, value, passed}]} for every non-base arm."""
    results = {}
    for arm, delta in deltas.items():
        checks = []
        for gate in gates:
            if gate.metric.startswith("general_"):
                if retention is None:
                    raise SvloraError(f"gate {gate} needs --general MANIFEST")
                value = retention["delta"][arm].get(gate.metric.removeprefix("general_"))
            else:
                value = delta.get(gate.metric)
            if value is None:
                raise SvloraError(f"gate {gate}: no such metric for arm {arm} (use error_rate, "
                                  "cer, wer, emotion_accuracy, emotion_ua, emotion_macro_f1)")
            passed = value >= gate.threshold if gate.operator == ">=" else value <= gate.threshold
            checks.append({"gate": str(gate), "value": value, "passed": bool(passed)})
        results[arm] = checks
    return results
