"""The selection function on synthetic embeddings whose clusters are known: the budget, unique
picks, each cluster's proportional share, smallest margins first, determinism."""

import numpy as np
import pytest

from svlora.selection import emotion_margin, select_clips
from svlora.selection.choose import cluster_quotas, default_clusters

SIZES = (60, 30, 10)  # three well-separated blobs; a budget of 20 gets 12, 6 and 2


@pytest.fixture(scope="module")
def pool():
    """(embeddings, margins, true cluster per clip), the clips of the blobs interleaved."""
    rng = np.random.default_rng(1)
    truth = np.concatenate([np.full(size, c) for c, size in enumerate(SIZES)])
    rng.shuffle(truth)
    centres = np.array([[0.0] * 8, [12.0] * 8, [-12.0, 12.0] * 4])
    embeddings = centres[truth] + rng.normal(size=(len(truth), 8))
    margins = rng.uniform(0, 1, len(truth))
    return embeddings, margins, truth


def test_budget_respected_unique_and_each_cluster_gets_its_share(pool):
    embeddings, margins, truth = pool
    selection = select_clips(embeddings, margins, budget=20, clusters=3, seed=0)
    assert len(selection.order) == 20 and len(set(selection.order)) == 20
    chosen_per_blob = np.bincount(truth[selection.order], minlength=3).tolist()
    assert chosen_per_blob == [12, 6, 2]
    assert selection.quotas == [12, 6, 2]  # cluster 0 is the largest
    found = np.array(selection.clusters)
    for blob in range(3):  # the k-means clusters are the blobs
        assert len(set(found[truth == blob])) == 1


def test_smallest_margins_chosen_first_within_a_cluster(pool):
    embeddings, margins, truth = pool
    selection = select_clips(embeddings, margins, budget=20, clusters=3, seed=0)
    for blob, quota in zip(range(3), (12, 6, 2)):
        members = np.flatnonzero(truth == blob)
        lowest = set(members[np.argsort(margins[members])][:quota].tolist())
        picked = [i for i in selection.order if truth[i] == blob]
        assert set(picked) == lowest
        assert [margins[i] for i in picked] == sorted(margins[i] for i in picked)  # by rank


def test_every_prefix_of_the_list_is_spread_like_the_whole(pool):
    embeddings, margins, truth = pool
    order = select_clips(embeddings, margins, budget=20, clusters=3, seed=0).order
    assert np.bincount(truth[order[:10]], minlength=3).tolist() == [6, 3, 1]
    assert set(truth[order[:5]].tolist()) >= {0, 1}  # not the largest cluster's clips first


def test_deterministic_for_a_seed(pool):
    embeddings, margins, _ = pool
    first = select_clips(embeddings, margins, budget=15, seed=3)
    again = select_clips(embeddings.copy(), margins.copy(), budget=15, seed=3)
    assert first == again


def test_a_budget_past_the_pool_takes_every_clip_once(pool):
    embeddings, margins, _ = pool
    selection = select_clips(embeddings[:7], margins[:7], budget=50, seed=0)
    assert sorted(selection.order) == list(range(7))


def test_quotas_proportional_capped_and_summing_to_the_budget():
    assert cluster_quotas([5, 3, 2], 5) == [3, 1, 1]   # 2.5, 1.5, 1.0: the tie to the larger
    assert cluster_quotas([1, 1, 98], 10) == [0, 0, 10]
    assert cluster_quotas([4, 2], 100) == [4, 2]        # never more than a cluster holds
    assert sum(cluster_quotas([7, 6, 5, 1], 9)) == 9


def test_margin_and_default_clusters():
    assert emotion_margin({"<|HAPPY|>": 0.5, "<|SAD|>": 0.3, "<|ANGRY|>": 0.2}) == pytest.approx(0.2)
    assert emotion_margin({"<|HAPPY|>": 0.4, "<|SAD|>": 0.4}) == 0.0
    assert [default_clusters(b) for b in (1, 25, 50, 1000)] == [1, 25, 50, 50]
