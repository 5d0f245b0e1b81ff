"""Hotword (contextual) biasing: an Aho-Corasick automaton over token-id phrases that scores each
decoding step, after icefall's ContextGraph (icefall/context_graph.py, Apache-2.0; sherpa-onnx has
the same in C++). Written here because no maintained pip package offers a token-level automaton
with per-step scores and give-back: pyahocorasick only finds matches in strings, and pyctcdecode's
hotwords are word-level regexes that do not work for Chinese written without spaces."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence


class ContextGraph:
    """Aho-Corasick automaton over `phrases` (sequences of hashable symbols, e.g. sentencepiece
    token ids) that gives `score` (log-probability units) per matched symbol.

    States are integers (ROOT = 0). `step` follows icefall's forward_one_step in strict mode: a
    partial match that fails gives its bonus back, and completing a phrase adds its bonus again
    as output score, which the give-back of `finish` (or of the next failing step) cancels, so a
    matched phrase nets len(phrase) * score.
    """

    ROOT = 0

    def __init__(self, phrases: Sequence[Sequence[Hashable]], score: float):
        self.score = float(score)
        # Flat per-state lists (index = state) rather than node objects: step runs beam*K times
        # per frame.
        self._children: list[dict[Hashable, int]] = [{}]
        self._fail: list[int] = [self.ROOT]
        self._node_score: list[float] = [0.0]  # depth * score
        self._output_score: list[float] = [0.0]
        self._output: list[int] = [-1]  # nearest end state along fail links, -1 if none
        self._is_end: list[bool] = [False]
        self._phrase: list[int] = [-1]  # index into `phrases` of the phrase ending here
        self._matched: list[int] = [-1]  # the phrase reported on entering the state
        self._steps: dict[tuple[int, Hashable], tuple[float, int, int]] = {}
        self._phrase_count = 0
        for index, phrase in enumerate(phrases):
            if len(phrase) == 0:
                raise ValueError(f"phrase {index} is empty: every hotword needs at least one token")
            self._insert(phrase, index)
        self._link_failures()

    def __len__(self) -> int:
        return self._phrase_count

    @property
    def states(self) -> int:
        return len(self._children)

    def _insert(self, phrase: Sequence[Hashable], index: int) -> None:
        children, node_score = self._children, self._node_score
        state = self.ROOT
        for symbol in phrase:
            child = children[state].get(symbol)
            if child is None:
                child = len(children)
                children[state][symbol] = child
                children.append({})
                self._fail.append(self.ROOT)
                node_score.append(node_score[state] + self.score)
                self._output_score.append(0.0)
                self._output.append(-1)
                self._is_end.append(False)
                self._phrase.append(-1)
                self._matched.append(-1)
            state = child
        if not self._is_end[state]:  # a duplicate keeps its first index
            self._is_end[state] = True
            self._phrase[state] = index
            self._phrase_count += 1

    def _link_failures(self) -> None:
        """Fail links, output links and output scores, breadth first so that every fail target,
        being shallower, is finished before the states that point at it."""
        children, fail, output = self._children, self._fail, self._output
        is_end, phrase, node_score, output_score = (
            self._is_end, self._phrase, self._node_score, self._output_score)
        queue = deque(children[self.ROOT].values())  # depth 1 fails to the root, as initialised
        while queue:
            state = queue.popleft()
            target = fail[state]
            if is_end[target]:
                output[state] = target
            elif target != self.ROOT:
                output[state] = output[target]
            link = output[state]
            output_score[state] = ((node_score[state] if is_end[state] else 0.0)
                                   + (output_score[link] if link != -1 else 0.0))
            self._matched[state] = phrase[state] if is_end[state] else (
                phrase[link] if link != -1 else -1)
            for symbol, child in children[state].items():
                node = target
                while node != self.ROOT and symbol not in children[node]:
                    node = fail[node]
                fail[child] = children[node].get(symbol, self.ROOT)
                queue.append(child)

    def step(self, state: int, symbol: Hashable) -> tuple[float, int, int]:
        """(score, next state, index of the phrase matched on arrival or -1) for one symbol."""
        key = (state, symbol)
        known = self._steps.get(key)
        if known is not None:
            return known
        children = self._children
        new = children[state].get(symbol)
        if new is not None:
            score = self.score
        else:
            node = self._fail[state]
            while node != self.ROOT and symbol not in children[node]:
                node = self._fail[node]
            new = children[node].get(symbol, self.ROOT)
            score = self._node_score[new] - self._node_score[state]
        # The memo only ever gains identical entries, so sharing a graph between threads is safe.
        known = self._steps[key] = (score + self._output_score[new], new, self._matched[new])
        return known

    def finish(self, state: int) -> float:
        """Score at the end of a hypothesis: the bonus of a partial match in progress comes back."""
        return -self._node_score[state]
