"""ContextGraph against the classic Aho-Corasick example, and CTC prefix beam search against
exhaustive enumeration, greedy decoding and hand-built hotword cases."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from svlora.beam_search import ctc_prefix_beam_search
from svlora.context_graph import ContextGraph

BLANK = 0
CLASSIC = ["he", "she", "his", "hers"]


def state_of(graph: ContextGraph, path: str) -> int:
    state = ContextGraph.ROOT
    for symbol in path:
        state = graph._children[state][symbol]
    return state


def top_k(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The decoder's inputs from full log-posteriors [T, V]."""
    ids = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(log_probs, ids, axis=1), log_probs[:, BLANK]


def posteriors(rows: list[dict[int, float]], vocab: int = 6) -> np.ndarray:
    """Log-posteriors [T, vocab] from each frame's probabilities; the rest share what is left."""
    frames = []
    for row in rows:
        rest = (1.0 - sum(row.values())) / (vocab - len(row))
        frames.append([math.log(row.get(token, rest)) for token in range(vocab)])
    return np.array(frames)


def decode(log_probs: np.ndarray, beam: int = 8, k: int | None = None, **options) -> list[int]:
    return ctc_prefix_beam_search(*top_k(log_probs, k or log_probs.shape[1]), beam=beam, **options)


def collapse(path) -> tuple[int, ...]:
    return tuple(token for i, token in enumerate(path) if token != BLANK and (i == 0 or path[i - 1] != token))


# ContextGraph

def test_classic_fail_links():
    graph = ContextGraph(CLASSIC, score=1.0)
    expected = {"h": "", "he": "", "s": "", "sh": "h", "she": "he", "hi": "", "his": "s", "her": "",
                "hers": "s"}
    assert graph.states == 1 + len(expected)
    for path, target in expected.items():
        assert graph._fail[state_of(graph, path)] == state_of(graph, target), path
    assert graph._output[state_of(graph, "she")] == state_of(graph, "he")
    assert graph._output[state_of(graph, "hers")] == -1


def test_stepping_through_ushers_finds_she_he_hers():
    s = 0.5
    graph = ContextGraph(CLASSIC, score=s)
    state, scores, matches = ContextGraph.ROOT, [], []
    for position, symbol in enumerate("ushers"):
        score, state, matched = graph.step(state, symbol)
        scores.append(score)
        if matched != -1:
            matches.append((position, CLASSIC[matched]))
    assert matches == [(3, "she"), (5, "hers")]
    # At "e" (position 3): the token, then the output bonus of she (3s) and, via its output link,
    # of he (2s). At "r": she fails over to her, both depth 3, so nothing changes hands.
    assert scores == [0.0, s, s, s + 3 * s + 2 * s, 0.0, s + 4 * s]
    assert graph.finish(state) == -4 * s


def test_full_phrase_and_give_back_scores():
    s = 1.5
    graph = ContextGraph(CLASSIC, score=s)
    state, total = ContextGraph.ROOT, 0.0
    for symbol in "his":
        score, state, matched = graph.step(state, symbol)
        total += score
    assert matched == CLASSIC.index("his")
    assert total == 3 * s + 3 * s  # len * score, plus the output bonus of his
    assert total + graph.finish(state) == 3 * s

    state, total = ContextGraph.ROOT, 0.0
    for symbol in "hi":
        score, state, _ = graph.step(state, symbol)
        total += score
    assert total == 2 * s and graph.finish(state) == -2 * s
    score, state, matched = graph.step(state, "x")
    assert (total + score, state, matched) == (0.0, ContextGraph.ROOT, -1)


def test_output_link_found_beyond_a_non_end_fail_target():
    # cab fails to ab (no phrase ends there), whose output link is the phrase b.
    s = 1.0
    graph = ContextGraph(["b", "abz", "cabz"], score=s)
    state = ContextGraph.ROOT
    for symbol in "ca":
        state = graph.step(state, symbol)[1]
    score, state, matched = graph.step(state, "b")
    assert (score, matched) == (s + s, 0)


def test_phrases_validated_and_deduplicated():
    graph = ContextGraph([[5, 6], [7], [5, 6]], score=1.0)
    assert len(graph) == 2 and graph.states == 4
    assert graph.step(graph.step(ContextGraph.ROOT, 5)[1], 6)[2] == 0
    assert graph.step(ContextGraph.ROOT, 7)[2] == 1
    with pytest.raises(ValueError, match="phrase 1 is empty"):
        ContextGraph([[1], []], score=1.0)


# Beam search without a graph

def exhaustive_ranking(log_probs: np.ndarray) -> list[tuple[tuple[int, ...], float]]:
    """Every label sequence with its total probability over all frame paths, best first."""
    frames, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(vocab), repeat=frames):
        totals[collapse(path)] += math.exp(sum(log_probs[t, token] for t, token in enumerate(path)))
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)


def test_matches_exhaustive_search_on_small_cases():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(80):
        frames, vocab = int(rng.integers(1, 6)), int(rng.integers(2, 5))
        logits = rng.normal(size=(frames, vocab)) * 1.5
        log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        (best, p_best), (_, p_second) = exhaustive_ranking(log_probs)[:2]
        if p_best < p_second * 1.01:  # too close to call: rounding could decide it
            continue
        # 400 hypotheses exceed the distinct prefixes of 5 frames over 3 labels (364): nothing is pruned.
        assert decode(log_probs, beam=400, blank_skip_log_prob=None) == list(best), (frames, vocab)
        checked += 1
    assert checked >= 50


def test_peaky_posteriors_decode_as_greedy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        frames, vocab = 40, 10
        path = rng.choice(vocab, size=frames, p=[0.5] + [0.5 / (vocab - 1)] * (vocab - 1))
        log_probs = np.full((frames, vocab), math.log(0.03 / (vocab - 1)))
        log_probs[np.arange(frames), path] = math.log(0.97)
        assert decode(log_probs, beam=8, k=4) == list(collapse(list(path)))


def test_repeats_collapse_unless_separated_by_blank():
    separated = posteriors([{1: 0.9}, {BLANK: 0.9}, {1: 0.9}])
    assert decode(separated, blank_skip_log_prob=None) == [1, 1]
    assert decode(posteriors([{1: 0.9}, {1: 0.9}]), blank_skip_log_prob=None) == [1]
    # A skipped blank frame still separates the repeat: dropping it would give [1].
    skipped = posteriors([{1: 0.9}, {BLANK: 0.9999}, {1: 0.9}])
    assert decode(skipped, blank_skip_log_prob=math.log(0.999)) == [1, 1]


def test_no_frames_decode_to_nothing():
    empty = np.zeros((0, 4))
    assert ctc_prefix_beam_search(empty.astype(int), empty, np.zeros(0), beam=4) == []


# Beam search with a graph

NEAR_MISS = posteriors([{1: 0.9}, {BLANK: 0.9}, {3: 0.5, 2: 0.4}, {BLANK: 0.9}, {4: 0.9}])


def test_hotword_wins_a_near_miss_only_with_a_bonus():
    phrase = [[1, 2, 4]]
    assert decode(NEAR_MISS) == [1, 3, 4]
    assert decode(NEAR_MISS, graph=ContextGraph(phrase, score=0.0)) == [1, 3, 4]
    assert decode(NEAR_MISS, graph=ContextGraph(phrase, score=1.0)) == [1, 2, 4]
    # With one hypothesis the phrase survives the middle frame only if pruning counts its bonus.
    assert decode(NEAR_MISS, beam=1, graph=ContextGraph(phrase, score=1.0)) == [1, 2, 4]


class NoGiveBackAtEnd(ContextGraph):
    def finish(self, state: int) -> float:
        return 0.0


def test_partial_match_is_given_back_at_the_end():
    # [1, 2] starts the phrase 1 2 3 4 (too long to finish in three frames) and holds a bonus of
    # 4 at the end; [1, 5] is acoustically better (0.55 against 0.4) and has given its bonus back.
    partial = posteriors([{1: 0.95}, {BLANK: 0.9}, {5: 0.55, 2: 0.4}])
    phrase = [[1, 2, 3, 4]]
    assert decode(partial, graph=NoGiveBackAtEnd(phrase, score=2.0)) == [1, 2]
    assert decode(partial, graph=ContextGraph(phrase, score=2.0)) == [1, 5]


# Blank skipping

def blank_heavy(rng: np.random.Generator, frames: int = 40, vocab: int = 8) -> np.ndarray:
    logits = rng.normal(size=(frames, vocab)) * 2
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    for t in np.flatnonzero(rng.random(frames) < 0.6):
        log_probs[t] = math.log(1e-4 / (vocab - 1))
        log_probs[t, BLANK] = math.log(1 - 1e-4)
    return log_probs


@pytest.mark.parametrize("score", [None, 1.0])
def test_blank_skipping_keeps_the_result(score):
    rng = np.random.default_rng(2)
    for _ in range(30):
        log_probs = blank_heavy(rng)
        graph = None if score is None else ContextGraph([[1, 2], [3, 4, 5], [6, 1]], score)
        exact = decode(log_probs, beam=4, k=4, graph=graph, blank_skip_log_prob=None)
        assert decode(log_probs, beam=4, k=4, graph=graph) == exact


def test_blank_skipping_is_exact_for_a_blank_only_frame():
    # With the blank as a frame's only candidate, processing it in full is what skipping does.
    rng = np.random.default_rng(3)
    graph = ContextGraph([[1, 2], [2, 2, 3]], score=1.0)
    for _ in range(30):
        log_probs = blank_heavy(rng, vocab=4)
        ids, top_log_probs, blanks = top_k(log_probs, 3)
        skipped = blanks > math.log(0.999)
        ids[skipped] = BLANK
        for candidate_graph in (None, graph):
            inputs = (ids, top_log_probs, blanks)
            assert (ctc_prefix_beam_search(*inputs, beam=3, graph=candidate_graph)
                    == ctc_prefix_beam_search(*inputs, beam=3, graph=candidate_graph,
                                              blank_skip_log_prob=None))
