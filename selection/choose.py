"""Which unlabelled clips to label first: k-means clusters of their pooled encoder embeddings
(diversity), the budget shared over the clusters in proportion to their sizes, and within a
cluster the clips whose emotion the model is least sure of (smallest top1 - top2 margin)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Default: one cluster per clip of budget (each cluster's least certain clip), at most 50 (k-means
# time). Fewer, larger clusters (budget / 5) lost to random picks at 25-100 labels in
# benchmarks/selection_bench.py: a cluster's smallest margins crowd into one or two classes.
MAX_DEFAULT_CLUSTERS = 50


@dataclass
class Selection:
    """The chosen clips and how they were chosen (indices into the pool's clips)."""

    order: list[int]     # the chosen clips, rank 1 first
    clusters: list[int]  # every pool clip's cluster; cluster 0 is the largest
    quotas: list[int]    # clips chosen from each cluster


def emotion_margin(probabilities: dict[str, float]) -> float:
    """Top-1 minus top-2 probability: 0 when the model cannot tell two emotions apart."""
    top = sorted(probabilities.values(), reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else 1.0


def default_clusters(budget: int) -> int:
    return max(1, min(budget, MAX_DEFAULT_CLUSTERS))


def standardized(embeddings: np.ndarray) -> np.ndarray:
    """Each dimension to zero mean and unit spread, so no single dimension decides distances."""
    x = np.asarray(embeddings, np.float64)
    spread = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(spread > 1e-8, spread, 1.0)


def kmeans_clusters(embeddings: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Cluster of each row (scikit-learn's k-means; it comes with FunASR via librosa and
    umap-learn), renumbered by size (0 the largest; ties by first member) so the ids read the
    same for the same seed."""
    from sklearn.cluster import KMeans

    x = standardized(embeddings)
    clusters = max(1, min(clusters, len(np.unique(x, axis=0))))
    labels = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit_predict(x)
    first = {c: int(np.argmax(labels == c)) for c in np.unique(labels)}
    ordered = sorted(first, key=lambda c: (-int(np.sum(labels == c)), first[c]))
    renumber = {old: new for new, old in enumerate(ordered)}
    return np.array([renumber[c] for c in labels])


def cluster_quotas(sizes: list[int], budget: int) -> list[int]:
    """The budget shared in proportion to the cluster sizes (largest remainders get the
    leftover clips; ties to the larger, then lower-numbered cluster). Never more than a
    cluster holds: a proportional share is at most its size."""
    total = sum(sizes)
    budget = min(budget, total)
    exact = [budget * size / total for size in sizes]
    quotas = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda c: (-(exact[c] - quotas[c]), -sizes[c], c))
    for cluster in by_remainder[:budget - sum(quotas)]:
        quotas[cluster] += 1
    return quotas


def ranked_picks(labels: np.ndarray, margins: np.ndarray, quotas: list[int]) -> list[int]:
    """Each cluster's `quota` smallest-margin clips, interleaved by a weighted round-robin
    (a cluster's j-th pick sits at (j + 0.5) / quota): any prefix of the list is spread over
    the clusters like the whole, so a labeller who stops early still covers them."""
    keyed = []
    for cluster, quota in enumerate(quotas):
        members = np.flatnonzero(labels == cluster)
        chosen = members[np.argsort(margins[members], kind="stable")][:quota]
        keyed += [((j + 0.5) / quota, float(margins[i]), int(i)) for j, i in enumerate(chosen)]
    return [index for *_, index in sorted(keyed)]


def select_clips(embeddings: np.ndarray, margins: np.ndarray, budget: int,
                 clusters: int | None = None, seed: int = 0) -> Selection:
    """Choose `budget` clips (all of them when the pool is smaller) to label first: clusters
    of the embeddings ([clips, dims]), proportional quotas, smallest emotion margin first
    within each cluster. Deterministic for a seed."""
    margins = np.asarray(margins, np.float64)
    if len(margins) == 0:
        return Selection([], [], [])
    clusters = min(clusters or default_clusters(budget), len(margins))
    labels = kmeans_clusters(embeddings, clusters, seed)
    sizes = np.bincount(labels).tolist()
    quotas = cluster_quotas(sizes, budget)
    return Selection(ranked_picks(labels, margins, quotas), labels.tolist(), quotas)
