"""CTC prefix beam search over the top-K tokens of each frame (Hannun et al. 2014, as in WeNet
and icefall), optionally biased towards hotwords by a ContextGraph."""

from __future__ import annotations

import math

import numpy as np

from svlora.context_graph import ContextGraph

NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def ctc_prefix_beam_search(top_ids: np.ndarray, top_log_probs: np.ndarray, blank_log_probs: np.ndarray,
                           beam: int, graph: ContextGraph | None = None, blank_id: int = 0,
                           blank_skip_log_prob: float | None = math.log(0.999)) -> list[int]:
    """The most probable label sequence (token ids, blanks and repeats collapsed).

    `top_ids`/`top_log_probs` [T, K] are each frame's K best tokens and their log-softmax values,
    `blank_log_probs` [T] the blank's log-probability in every frame. The blank is always a
    candidate, scored from `blank_log_probs` (a blank among the top K is skipped there); other
    tokens outside the top K are pruned. With `graph`, hypotheses are ranked by acoustic score
    plus context score, and a partial phrase match is given back at the end. Frames whose blank
    log-probability exceeds `blank_skip_log_prob` are processed with the blank as their only
    candidate, which is exact for that candidate set and cheap.
    """
    if beam < 1:
        raise ValueError(f"beam={beam}: keep at least one hypothesis")
    top_ids = np.asarray(top_ids)
    top_log_probs = np.asarray(top_log_probs)
    blank_log_probs = np.asarray(blank_log_probs)
    if top_ids.ndim != 2 or top_log_probs.shape != top_ids.shape or blank_log_probs.shape != top_ids.shape[:1]:
        raise ValueError(f"top_ids {top_ids.shape}, top_log_probs {top_log_probs.shape} and "
                         f"blank_log_probs {blank_log_probs.shape}: expected [T, K], [T, K] and [T]")
    # Python floats and ints: arithmetic on numpy scalars is several times slower.
    frames = zip(top_ids.tolist(), top_log_probs.tolist(), blank_log_probs.tolist())
    skip = math.inf if blank_skip_log_prob is None else blank_skip_log_prob
    logaddexp = _logaddexp
    step = graph.step if graph is not None else None
    # Prefixes are ids in a trie, not token tuples: tuples re-hash their whole length on every
    # dict lookup. Equal prefixes get the same id, which is what merges them. A prefix's context
    # (state, score) depends on its tokens alone, so it is stored with its trie node.
    parents, last_tokens = [-1], [None]
    context_states, context_scores = [ContextGraph.ROOT], [0.0]
    trie: dict[tuple[int, int], int] = {}  # (parent prefix, token) -> prefix
    hyps: list[tuple[int, float, float]] = [(0, 0.0, NEG_INF)]  # (prefix, p_b, p_nb)

    for ids, log_probs, blank in frames:
        if blank > skip:
            # Blank as the only candidate: every prefix ends in blank, none merge, the order holds.
            hyps = [(prefix, logaddexp(p_b, p_nb) + blank, NEG_INF) for prefix, p_b, p_nb in hyps]
            continue
        next_b: dict[int, float] = {}
        next_nb: dict[int, float] = {}
        for prefix, p_b, p_nb in hyps:
            total = logaddexp(p_b, p_nb)
            mass = next_b.get(prefix)
            next_b[prefix] = total + blank if mass is None else logaddexp(mass, total + blank)
            last = last_tokens[prefix]
            for token, log_prob in zip(ids, log_probs):
                if token == blank_id:
                    continue
                if token == last:
                    # Without a blank between them a repeat collapses into the same prefix.
                    mass = next_nb.get(prefix)
                    next_nb[prefix] = p_nb + log_prob if mass is None else logaddexp(mass, p_nb + log_prob)
                    if p_b == NEG_INF:
                        continue
                    extension = p_b + log_prob
                else:
                    extension = total + log_prob
                longer = trie.get((prefix, token))
                if longer is None:
                    longer = trie[prefix, token] = len(parents)
                    parents.append(prefix)
                    last_tokens.append(token)
                    if step is not None:
                        bonus, state, _ = step(context_states[prefix], token)
                        context_states.append(state)
                        context_scores.append(context_scores[prefix] + bonus)
                mass = next_nb.get(longer)
                next_nb[longer] = extension if mass is None else logaddexp(mass, extension)
        hyps = _best(next_b, next_nb, context_scores if step is not None else None, beam)

    def final_score(hyp: tuple[int, float, float]) -> float:
        prefix, p_b, p_nb = hyp
        if graph is None:
            return logaddexp(p_b, p_nb)
        return logaddexp(p_b, p_nb) + context_scores[prefix] + graph.finish(context_states[prefix])

    prefix = max(hyps, key=final_score)[0]
    tokens = []
    while prefix > 0:
        tokens.append(last_tokens[prefix])
        prefix = parents[prefix]
    return tokens[::-1]


def _best(next_b: dict[int, float], next_nb: dict[int, float], context_scores: list[float] | None,
          beam: int) -> list[tuple[int, float, float]]:
    """The `beam` best hypotheses by logaddexp(p_b, p_nb) plus context score."""
    hyps = [(prefix, p_b, next_nb.get(prefix, NEG_INF)) for prefix, p_b in next_b.items()]
    hyps.extend((prefix, NEG_INF, p_nb) for prefix, p_nb in next_nb.items() if prefix not in next_b)
    if len(hyps) <= beam:
        return hyps
    if context_scores is None:
        def rank(hyp): return _logaddexp(hyp[1], hyp[2])
    else:
        def rank(hyp): return _logaddexp(hyp[1], hyp[2]) + context_scores[hyp[0]]
    hyps.sort(key=rank, reverse=True)
    return hyps[:beam]
