"""svlora.eval: the A/B harness, base vs base+adapter on the same test clips."""

from svlora.eval.evaluate import evaluate

__all__ = ["evaluate"]
