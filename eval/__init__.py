"""svlora.eval: the A/B harness, base vs base+adapter on the same test clips."""

from svlora.eval.evaluate import evaluate
from svlora.eval.report import verdict

__all__ = ["evaluate", "verdict"]
