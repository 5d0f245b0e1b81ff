"""svlora.eval: the A/B harness, base vs base+adapter on the same test clips."""

from svlora.eval.ab import evaluate
from svlora.eval.records import EvalReport, ScoredClip, read_report
from svlora.eval.report import verdict

__all__ = ["EvalReport", "ScoredClip", "evaluate", "read_report", "verdict"]
