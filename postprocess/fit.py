"""`svlora rules fit`: learn from labelled clips what hand-written rules cannot. Per-emotion
score offsets that maximise unweighted average recall (a prior correction, written as an
ordinary rules file), and a miner that lists the transcript endings and words most
over-represented in each confusion, so particle rules come from evidence."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema
from svlora.metrics import (NO_SPACE_LANGUAGES, WORD_LANGUAGES, normalize_text,
                            unweighted_average_recall)
from svlora.postprocess.rules import bare_text
from svlora.terms import DELETED, TermList, TermScorer, parse_terms, read_terms, text_units

OFFSET_GRID = np.round(np.arange(-4.0, 4.0001, 0.25), 2)


def fit_offsets(distributions: list[dict[str, float]], references: list[str],
                rounds: int = 4) -> dict[str, float]:
    """Per-emotion log-probability offsets maximising UA (accuracy breaks ties), by coordinate
    ascent over a grid; emotions never referenced keep 0. Offsets are relative: the most
    frequent reference emotion stays at 0."""
    tags = list(distributions[0])
    log_p = np.log(np.clip(np.array([[d[t] for t in tags] for d in distributions]), 1e-12, None))
    offsets = np.zeros(len(tags))
    common = Counter(references).most_common(1)[0][0]
    anchor = tags.index(common) if common in tags else 0
    free = [i for i, t in enumerate(tags) if t in set(references) and i != anchor]

    def score(candidate: np.ndarray) -> tuple[float, float]:
        predicted = [tags[i] for i in (log_p + candidate).argmax(axis=1)]
        return (unweighted_average_recall(references, predicted),
                float(np.mean([p == r for p, r in zip(predicted, references)])))

    best = score(offsets)
    for _ in range(rounds):
        improved = False
        for i in free:
            for value in OFFSET_GRID:
                candidate = offsets.copy()
                candidate[i] = value
                result = score(candidate)
                if result > best or (result == best and abs(value) < abs(offsets[i])):
                    improved = improved or result > best
                    best, offsets = result, candidate
        if not improved:
            break
    return {tag.strip("<|>"): float(offsets[i]) for i, tag in enumerate(tags) if offsets[i] != 0}


def units(text: str, language: str) -> list[str]:
    normalised = normalize_text(text, language)
    return list(normalised) if language in NO_SPACE_LANGUAGES else normalised.split()


def mine_confusions(outputs: list[str], references: list[str], languages: list[str],
                    top: int = 5, min_clips: int = 2, labels: LabelSchema = DEFAULT_SCHEMA) -> dict:
    """{'PRED→LABEL': {clips, endings: [[ending, in confusion, overall]], words: [...]}} for
    every confusion with at least `min_clips` clips: the transcript endings and words whose
    share among the confused clips most exceeds their share overall."""
    parts = [labels.split(o) for o in outputs]
    endings = [(units(bare_text(p["text"]), lang) or [""])[-1] for p, lang in zip(parts, languages)]
    words = [set(units(p["text"], lang)) for p, lang in zip(parts, languages)]
    overall_endings, overall_words = Counter(endings), Counter(w for ws in words for w in ws)
    result = {}
    pairs = Counter((p["emotion"], r) for p, r in zip(parts, references) if p["emotion"] != r)
    for (predicted, reference), count in pairs.most_common():
        if count < min_clips or predicted is None:
            continue
        members = [i for i, (p, r) in enumerate(zip(parts, references))
                   if p["emotion"] == predicted and r == reference]

        def ranked(values: Counter, overall: Counter) -> list:
            lift = {v: (n / len(members)) / (overall[v] / len(outputs)) for v, n in values.items() if v}
            best = sorted(lift, key=lambda v: (-lift[v], -values[v]))[:top]
            return [[v, values[v], overall[v]] for v in best]

        result[f"{predicted.strip('<|>')}→{reference.strip('<|>')}"] = {
            "clips": count,
            "endings": ranked(Counter(endings[i] for i in members), overall_endings),
            "words": ranked(Counter(w for i in members for w in words[i]), overall_words)}
    return result


def misrecognitions(texts: list[str], references: list[str], languages: list[str],
                    terms: TermList | None) -> tuple[Counter, Counter, Counter]:
    """(Counter of (term, heard) misses, Counter of occurrences per term, Counter of misses
    per term) over the clips: with `terms`, their aligned occurrences (svlora.terms.score_terms);
    without, every reference word of a space-delimited language (a one-word term each)."""
    misses, occurring, missed = Counter(), Counter(), Counter()
    words_only = terms is None
    if words_only:
        words = sorted({w for r, lang in zip(references, languages) if lang in WORD_LANGUAGES
                        for w in text_units(r, lang)})
        terms = parse_terms("\n".join(words), "reference words") if words else None
    if terms is None:
        return misses, occurring, missed
    scorer = TermScorer(terms)
    for text, reference, language in zip(texts, references, languages):
        if words_only and language not in WORD_LANGUAGES:
            continue  # characters are no terms: mining zh/yue/ja needs a terms list
        record = scorer.score(reference, text, language)
        for occurrence in record["occurrences"]:
            occurring[occurrence["term"]] += 1
            if not occurrence["hit"]:
                missed[occurrence["term"]] += 1
                misses[(occurrence["term"], occurrence["heard"])] += 1
    return misses, occurring, missed


def mine_terms(texts: list[str], references: list[str], languages: list[str],
               terms: TermList | None = None, min_count: int = 2) -> dict:
    """Proposals from the commonest term misrecognitions: `replace` {heard: term} where a
    spelling heard at least `min_count` times, nearly always (2/3) for the same term, is never a
    reference's own text (replacing it cannot break a correct transcript), and `terms` (for
    --hotwords) [[term, missed, occurrences]] missed at least `min_count` times, most first."""
    misses, occurring, missed = misrecognitions(texts, references, languages, terms)
    heard_total = Counter()
    for (_, heard), count in misses.items():
        heard_total[heard] += count
    spoken = [normalize_text(r, lang) for r, lang in zip(references, languages)]
    replace = {}
    for (term, heard), count in misses.most_common():
        if heard in replace or heard == DELETED or count < min_count or \
                count < 2 * heard_total[heard] / 3 or said_anywhere(heard, spoken):
            continue
        replace[heard] = term
    proposed = [[term, missed[term], occurring[term]] for term, _ in missed.most_common()
                if missed[term] >= min_count]
    return {"replace": [[heard, term, misses[(term, heard)]] for heard, term in replace.items()],
            "terms": proposed}


def said_anywhere(heard: str, references: list[str]) -> bool:
    """Whether `heard` occurs in a normalised reference (as whole words where it has letters
    of a space-delimited script, as a substring otherwise): such a replacement would break a
    correct transcript."""
    import re

    pattern = re.compile(rf"(?<!\w){re.escape(heard)}(?!\w)")
    return any(pattern.search(r) or (not heard.isascii() and heard in r) for r in references)


def mined_rules(mined: dict) -> list[dict]:
    """The rules a mining proposes: one rule replacing each consistently misheard spelling."""
    if not mined["replace"]:
        return []
    return [{"name": "mined term spellings", "when": {},
             "then": {"replace": {heard: term for heard, term, _ in mined["replace"]}}}]


def fit_rules(outputs: list[str], distributions: list[dict[str, float]], references: list[str],
              languages: list[str], labels: LabelSchema = DEFAULT_SCHEMA,
              texts: list[str] | None = None, terms: TermList | None = None) -> dict:
    """A rules file's content: fitted emotion offsets, the mined term replacements (over every
    clip with a transcript `texts`), and the miner's evidence (only clips with an emotion label
    count for the emotion part)."""
    labelled = [i for i, r in enumerate(references) if r]
    offsets = fit_offsets([distributions[i] for i in labelled], [references[i] for i in labelled]) \
        if labelled else {}
    miner = mine_confusions([outputs[i] for i in labelled], [references[i] for i in labelled],
                            [languages[i] for i in labelled], labels=labels) if labelled else {}
    rules = []
    if texts is not None:
        hypotheses = [labels.split(o)["text"] for o in outputs]
        miner["terms"] = mine_terms(hypotheses, texts, languages, terms)
        rules = mined_rules(miner["terms"])
    return {"version": 1, "emotion_offsets": offsets, "rules": rules, "miner": miner}


def fit_rules_file(model: str, data: str, out: str, adapter: str | None = None,
                   device: str = "cpu", hub: str = "ms", allow_base_mismatch: bool = False,
                   ban_emo_unknown: bool = False, trust_remote_code: bool = False,
                   labels: str | None = None, terms: str | None = None,
                   terms_out: str | None = None) -> dict:
    """Decode `data` with the stage-1 model (base, or base + adapter), fit, and write `out` as
    a rules file a person can read and edit. Term misrecognitions are mined over `terms` (a
    terms file; default: every word of en clips); `terms_out` gets the proposed terms list
    (for --hotwords). Returns its content."""
    import yaml

    from svlora.adapter_format import attach_adapter
    from svlora.decoding import decode_features
    from svlora.errors import SvloraError
    from svlora.features import row_features
    from svlora.io import write_text_atomic
    from svlora.label_schema import load_schema, schema_beside
    from svlora.manifest import read_manifest
    from svlora.model import load_base_model, weights_sha256

    schema = load_schema(labels) if labels else schema_beside(data)
    rows = read_manifest(data, schema)
    term_list = read_terms(terms) if terms else None
    for path, flag in ((out, "--out"), (terms_out, "--terms-out")):
        if path and Path(path).is_dir():
            raise SvloraError(f"{flag} {path}: is a directory; give a file path")
    if not any(row.has_emotion for row in rows) and not any(row.target.strip() for row in rows):
        raise SvloraError(f"{data}: no clip has an emotion label or a transcript; rules fit needs "
                          "labelled clips")
    base = load_base_model(model, device=device, hub=hub, trust_remote_code=trust_remote_code)
    base.use_labels(schema)  # the offsets cover its classes (a new one included)
    if adapter:
        attach_adapter(base.model, adapter, weights_sha256(base.model_dir), allow_base_mismatch,
                       labels=schema)
    decoded = decode_features(base, row_features(base, rows, "features"),
                              itn=[row.itn_query for row in rows],
                              ban_emo_unknown=ban_emo_unknown)
    content = fit_rules([d.raw for d in decoded], [d.emotion_probs for d in decoded],
                        [row.emo_target or "" for row in rows],
                        [row.text_language.strip("<|>") for row in rows], schema,
                        texts=[row.target for row in rows], terms=term_list)
    header = (f"# Fitted by `svlora rules fit` on {data} ({len(rows)} clips), stage 1: {model}"
              f"{' + ' + adapter if adapter else ''}.\n# emotion_offsets are added to the "
              "log-probability of each emotion (prior correction); `miner` lists, per confusion "
              "(predicted→labelled),\n# the transcript endings and words most over-represented "
              "there as [value, clips in the confusion, clips overall]: evidence for hand rules.\n")
    header += ("# miner.terms: term misrecognitions, `replace` [[heard, term, times]] (the rule "
               "'mined term spellings' applies them)\n# and the terms most often missed [[term, "
               "missed, occurrences]] (a --hotwords list).\n")
    write_text_atomic(out, header + yaml.safe_dump(content, allow_unicode=True, sort_keys=False))
    proposed = content["miner"]["terms"]["terms"]
    if terms_out and proposed:  # an empty list would be no terms file at all
        write_text_atomic(terms_out, "".join(f"{term}\n" for term, _, _ in proposed))
    return content
