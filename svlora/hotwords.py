"""Hotword biasing: the text frames of SenseVoice's CTC output decoded by a prefix beam search
with a context graph of the user's terms (svlora.context_graph), each term spelt in the model's
own sentencepiece tokens. The rich tags (the four query frames) are decoded greedily exactly
as without hotwords, so hotwords never change emotion, event or language."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from svlora.context_graph import ContextGraph

if TYPE_CHECKING:  # svlora.terms needs numpy: the CLI's --help reads the defaults below without it
    from svlora.terms import TermList

DEFAULT_BEAM = 8
DEFAULT_HOTWORD_SCORE = 2.0  # bonus per matched token, in log-probability units
MAX_BEAM = 64                # prefixes (and candidate tokens per frame): memory grows with both
MAX_HOTWORD_SCORE = 20.0     # per token; beyond it a term wins against any acoustic evidence
MAX_REQUEST_TERMS = 1000     # a request's own `hotwords` field (serve)
MAX_REQUEST_TERMS_CHARS = 64 * 1024


@dataclass(frozen=True)
class Hotwords:
    """How one clip's text is decoded: a beam of `beam` prefixes, and with `terms` a bonus of
    `score` per token of a term being matched (given back if the match does not complete)."""

    beam: int = DEFAULT_BEAM
    score: float = DEFAULT_HOTWORD_SCORE
    terms: TermList | None = None
    graph: ContextGraph | None = None

    def identity(self) -> dict:
        """What changes the outputs (for caches and run records)."""
        return {"beam": self.beam, "score": self.score if self.terms else None,
                "terms_sha256": self.terms.sha256 if self.terms else None,
                "terms": len(self.terms) if self.terms else 0}


def term_phrases(terms: TermList, tokenizer) -> list[list[int]]:
    """Every spelling of every term as the model's token ids, as written and lower-cased
    (SenseVoice writes English in lower case without ITN); a variant with characters the
    tokenizer does not know is left out, a spelling with no known variant is an error naming
    the line."""
    from svlora.terms import TermsError

    processor = tokenizer.sp if getattr(tokenizer, "sp", None) is not None else None
    unknown = processor.unk_id() if processor is not None else 0
    phrases = []
    for term in terms.terms:
        for spelling in term.spellings:
            variants = [list(tokenizer.encode(v)) for v in dict.fromkeys((spelling, spelling.lower()))]
            known = [ids for ids in variants if unknown not in ids]
            if not known:
                bad = [c for c in dict.fromkeys(spelling.lower()) if unknown in tokenizer.encode(c)]
                raise TermsError(f"{terms.source}:{term.line}: {spelling[:80]!r} has characters the "
                                 f"model's vocabulary lacks ({' '.join(map(repr, bad[:5]))}); "
                                 "spell it as the model writes it, or remove the line")
            phrases += known
    return phrases


def build_hotwords(tokenizer, terms: TermList | None, score: float = DEFAULT_HOTWORD_SCORE,
                   beam: int = DEFAULT_BEAM) -> Hotwords:
    """Hotwords for `terms` (None: a plain beam search) with the model's tokenizer."""
    check_search_settings(score, beam)
    graph = ContextGraph(term_phrases(terms, tokenizer), score) if terms else None
    return Hotwords(beam, score, terms, graph)


def check_search_settings(score: float, beam: int) -> None:
    """--hotword-score and --beam within their bounds (checked whether or not terms are given)."""
    from svlora.terms import TermsError

    if not 1 <= beam <= MAX_BEAM:
        raise TermsError(f"--beam {beam}: use 1 to {MAX_BEAM} (prefixes kept per frame)")
    if not (math.isfinite(score) and 0 <= score <= MAX_HOTWORD_SCORE):
        raise TermsError(f"--hotword-score {score:g}: use 0 to {MAX_HOTWORD_SCORE:g} (a bonus per "
                         f"matched token, log-probability units; default {DEFAULT_HOTWORD_SCORE:g})")


def load_hotwords(path: str, tokenizer, score: float = DEFAULT_HOTWORD_SCORE,
                  beam: int = DEFAULT_BEAM) -> Hotwords:
    """build_hotwords over a terms file (its warnings are on the returned .terms)."""
    from svlora.terms import read_terms

    return build_hotwords(tokenizer, read_terms(path), score, beam)


def request_terms(text: str):
    """A request's own terms (separated by commas or newlines) as a TermList, bounded."""
    from svlora.terms import TermsError, parse_terms

    if len(text) > MAX_REQUEST_TERMS_CHARS:
        raise TermsError(f"hotwords: {len(text):,} characters, more than {MAX_REQUEST_TERMS_CHARS:,}; "
                         "send fewer terms or start the server with --hotwords FILE")
    terms = parse_terms(text.replace(",", "\n"), "hotwords")  # commas and newlines both separate
    if len(terms) > MAX_REQUEST_TERMS:
        raise TermsError(f"hotwords: {len(terms)} terms, more than {MAX_REQUEST_TERMS}; send fewer "
                         "or start the server with --hotwords FILE")
    return terms
