"""svlora.selection: which unlabelled clips to label first — diverse (k-means clusters of the
model's pooled embeddings) and uncertain (the smallest emotion margins within each cluster)."""

from svlora.selection.choose import Selection, emotion_margin, select_clips
from svlora.selection.pool import Pool, PoolError, list_pool
from svlora.selection.run import SelectOptions, SelectReport, run_selection
from svlora.selection.score import ClipScores, score_clips

__all__ = ["ClipScores", "Pool", "PoolError", "SelectOptions", "SelectReport", "Selection",
           "emotion_margin", "list_pool", "run_selection", "score_clips", "select_clips"]
