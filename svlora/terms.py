"""Domain terms: the terms file, and how one clip's terms are scored.

Terms files: one term per line, optionally `term<TAB>alias|alias` (other accepted spellings),
UTF-8. Lines starting with `#` are comments; empty lines are skipped (one warning lists them);
a duplicate spelling is ignored with a warning naming both lines; a rich tag (`<|HAPPY|>`),
an empty alias or a term that normalises to nothing is an error naming the line. Eval scores
them (`--terms`), decoding biases towards them (`--hotwords`), `rules fit` mines them.

Scoring one clip (score_terms), the protocol the README states:
- units: normalised text (as the error rate), words for en clips, characters otherwise;
- occurrences: leftmost-longest, non-overlapping matches of any spelling (term or alias);
- alignment: the Levenshtein alignment of reference and hypothesis units (jiwer);
- a reference occurrence is a hit when the hypothesis units aligned to it (with insertions
  strictly inside it) spell the same term (any of its spellings); a miss records what was heard
  there, insertions at its edges included (the per-term table and `rules fit` use it);
- a hypothesis occurrence that overlaps no hit's aligned span is a false alarm;
- recall = hits / reference occurrences, precision = hits / (hits + false alarms);
- biased edits: substitutions and deletions of reference units inside an occurrence and
  insertions strictly inside one; every other edit is unbiased. B-rate = biased edits / units
  inside occurrences, U-rate = unbiased edits / the other units; B + U edits = all edits.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import jiwer

from svlora.errors import SvloraError
from svlora.metrics import WORD_LANGUAGES, normalize_text

DELETED = "(nothing)"  # what was heard where a whole occurrence was deleted
RICH_TAG = re.compile(r"<\|[^|]*\|>")


class TermsError(SvloraError):
    """A terms file that cannot be used as it is (the message names the file and line)."""


@dataclass(frozen=True)
class Term:
    text: str                      # as the user wrote it
    aliases: tuple[str, ...] = ()  # other spellings that count as the term
    line: int = 0

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.text, *self.aliases)


@dataclass(frozen=True)
class TermList:
    terms: tuple[Term, ...]
    source: str                    # the file (or "request") the terms came from
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.terms)

    @property
    def sha256(self) -> str:
        """Of the terms and aliases (not comments or blank lines): what changes the outputs."""
        text = "\n".join("\t".join(t.spellings) for t in self.terms)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spelling_key(spelling: str) -> str:
    """What makes two spellings the same term: normalised text without spaces."""
    return normalize_text(spelling).replace(" ", "")


def parse_terms(text: str, where: str) -> TermList:
    """A TermList from a terms file's text; `where` names it in messages."""
    terms, warnings, empty, seen = [], [], [], {}
    # "\n" only (CRLF too): str.splitlines would also split at form feeds and U+2028, shifting
    # every later line number
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()  # what follows the final newline
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            empty.append(number)
            continue
        if line.lstrip().startswith("#"):
            continue
        term, _, alias_field = line.partition("\t")
        if "\t" in alias_field:
            raise TermsError(f"{where}:{number}: more than one TAB; write term<TAB>alias|alias")
        if "\t" in line and not alias_field.strip():
            raise TermsError(f"{where}:{number}: a TAB with no alias after it; remove the TAB or "
                             "write term<TAB>alias|alias")
        aliases = [a.strip() for a in alias_field.split("|")] if alias_field.strip() else []
        spellings = [term.strip(), *aliases]
        for spelling in spellings:
            check_spelling(spelling, where, number)
        kept = []
        for spelling in spellings:
            key = spelling_key(spelling)
            if key in seen:
                warnings.append(f"{where}:{number}: {spelling!r} is already a spelling on line "
                                f"{seen[key]}; ignored")
            else:
                seen[key] = number
                kept.append(spelling)
        if kept:
            terms.append(Term(kept[0], tuple(kept[1:]), number))
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        warnings.insert(0, f"{where}: {len(empty)} empty line(s) skipped (line {shown})")
    if not terms:
        raise TermsError(f"{where}: no terms; write one term per line (term<TAB>alias|alias "
                         "for other accepted spellings)")
    return TermList(tuple(terms), where, tuple(warnings))


def check_spelling(spelling: str, where: str, number: int) -> None:
    if not spelling:
        raise TermsError(f"{where}:{number}: an empty term or alias; remove the stray TAB or '|'")
    if RICH_TAG.search(spelling):
        raise TermsError(f"{where}:{number}: {RICH_TAG.search(spelling).group()} is a rich tag, "
                         "not a word of the text; list words only (tags are decoded as they are)")
    if not spelling_key(spelling):
        raise TermsError(f"{where}:{number}: {spelling!r} is only punctuation or spaces, which "
                         "scoring removes; write the term's letters")


def read_terms(path: str | Path) -> TermList:
    """A terms file (UTF-8); TermsError names the file and line of anything wrong; its
    warnings (skipped lines, duplicates) go to the "svlora" logger too."""
    if not str(path).strip():
        raise TermsError("the terms file path is empty; give a file with one term per line")
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise TermsError(f"{path}: cannot read the terms file ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise TermsError(f"{path}:{line}: not UTF-8 (byte {error.start}); save the file as "
                         "UTF-8") from None
    terms = parse_terms(text, str(path))
    for warning in terms.warnings:
        logging.getLogger("svlora").warning(warning)
    return terms


def text_units(text: str, language: str | None) -> list[str]:
    """Normalised scoring units: words for space-delimited languages (en), else characters
    (spaces removed), as the headline error rate counts them."""
    normalised = normalize_text(text, language)
    if language in WORD_LANGUAGES:
        return normalised.split()
    return list(normalised.replace(" ", ""))


def joined_units(units: list[str] | tuple[str, ...], language: str | None) -> str:
    return " ".join(units) if language in WORD_LANGUAGES else "".join(units)


@dataclass(frozen=True)
class TermIndex:
    """The terms' spellings as unit tuples, by first unit, longest first (per language)."""

    names: tuple[str, ...]                                   # canonical spelling per term
    by_first: dict[str, list[tuple[tuple[str, ...], int]]]  # first unit -> [(units, term)]

    @classmethod
    def build(cls, terms: TermList, language: str | None) -> "TermIndex":
        by_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for number, term in enumerate(terms.terms):
            for spelling in term.spellings:
                units = tuple(text_units(spelling, language))
                if units:
                    by_first.setdefault(units[0], []).append((units, number))
        for candidates in by_first.values():
            candidates.sort(key=lambda c: -len(c[0]))
        return cls(tuple(t.text for t in terms.terms), by_first)

    def occurrences(self, units: list[str]) -> list[tuple[int, int, int]]:
        """(start, end, term) of the leftmost-longest non-overlapping matches in `units`."""
        found, position = [], 0
        while position < len(units):
            match = next(((len(c), term) for c, term in self.by_first.get(units[position], ())
                          if tuple(units[position:position + len(c)]) == c), None)
            if match:
                found.append((position, position + match[0], match[1]))
                position += match[0]
            else:
                position += 1
        return found

    def spells(self, units: list[str], term: int) -> bool:
        """Whether `units` are exactly one of `term`'s spellings."""
        candidates = self.by_first.get(units[0], ()) if units else ()
        return any(t == term and tuple(units) == c for c, t in candidates)


class TermScorer:
    """Term indexes per language over one TermList (built on first use)."""

    def __init__(self, terms: TermList):
        self.terms = terms
        self.indexes: dict[str | None, TermIndex] = {}

    def index(self, language: str | None) -> TermIndex:
        if language not in self.indexes:
            self.indexes[language] = TermIndex.build(self.terms, language)
        return self.indexes[language]

    def score(self, reference: str, hypothesis: str, language: str | None) -> dict:
        return score_terms(text_units(reference, language), text_units(hypothesis, language),
                           self.index(language), language)


def alignment(reference: list[str], hypothesis: list[str]) -> tuple[list[int | None], list[list[int]], list[str]]:
    """Per reference unit, the hypothesis unit aligned to it (None: deleted) and its op
    ('equal', 'substitute', 'delete'); per gap before reference unit i (i = 0..len), the
    hypothesis units inserted there."""
    aligned: list[int | None] = [None] * len(reference)
    ops = ["delete"] * len(reference)
    inserted: list[list[int]] = [[] for _ in range(len(reference) + 1)]
    if not reference:
        inserted[0] = list(range(len(hypothesis)))
        return aligned, inserted, ops
    if not hypothesis:
        return aligned, inserted, ops
    chunks = jiwer.process_words(" ".join(reference), " ".join(hypothesis)).alignments[0]
    for chunk in chunks:
        if chunk.type == "insert":
            inserted[chunk.ref_start_idx] += list(range(chunk.hyp_start_idx, chunk.hyp_end_idx))
        elif chunk.type in ("equal", "substitute"):
            for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                aligned[chunk.ref_start_idx + offset] = chunk.hyp_start_idx + offset
                ops[chunk.ref_start_idx + offset] = chunk.type
    return aligned, inserted, ops


def score_terms(reference: list[str], hypothesis: list[str], index: TermIndex,
                language: str | None) -> dict:
    """One clip's term record (predictions.jsonl's `terms`): occurrences [{term, heard, hit}],
    false_alarms [term], biased and unbiased {ref, errors}."""
    aligned, inserted, ops = alignment(reference, hypothesis)
    owner = [-1] * len(reference)  # the occurrence each reference unit belongs to
    occurrences, hit_spans = [], []
    for number, (start, end, term) in enumerate(index.occurrences(reference)):
        owner[start:end] = [number] * (end - start)
        heard_positions = sorted([aligned[p] for p in range(start, end) if aligned[p] is not None]
                                 + [h for gap in range(start + 1, end) for h in inserted[gap]])
        hit = index.spells([hypothesis[p] for p in heard_positions], term)
        if hit:
            hit_spans.append(set(heard_positions))
        # what a miss was heard as, insertions at its edges too ('am iodarone' for amiodarone)
        around = heard_positions if hit else sorted(heard_positions + inserted[start] + inserted[end])
        occurrences.append({"term": index.names[term], "hit": hit,
                            "heard": joined_units([hypothesis[p] for p in around], language) or DELETED})
    false_alarms = [index.names[term] for start, end, term in index.occurrences(hypothesis)
                    if not any(set(range(start, end)) & span for span in hit_spans)]
    biased = {"ref": sum(o >= 0 for o in owner), "errors": 0}
    unbiased = {"ref": len(reference) - biased["ref"], "errors": 0}
    for position, op in enumerate(ops):
        if op != "equal":
            (biased if owner[position] >= 0 else unbiased)["errors"] += 1
    for gap, units in enumerate(inserted):
        strictly_inside = 0 < gap < len(reference) and owner[gap - 1] == owner[gap] >= 0
        (biased if strictly_inside else unbiased)["errors"] += len(units)
    return {"occurrences": occurrences, "false_alarms": false_alarms,
            "biased": biased, "unbiased": unbiased}


__all__ = ["Term", "TermList", "TermsError", "parse_terms", "read_terms", "text_units",
           "joined_units", "spelling_key", "TermIndex", "TermScorer", "score_terms", "DELETED"]
