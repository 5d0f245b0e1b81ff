"""Word timestamps from SenseVoice's CTC output: the decoded text tokens are aligned to the CTC
posteriors of the speech frames (FunASR's own Viterbi aligner, `ctc_forced_align`, the one its
SenseVoiceSmall `output_timestamp` uses), pieces are merged into words (sentencepiece's word
marker; every character of zh/yue/ja is a word) and frames become seconds: one frame is 60 ms
after LFR, the four query frames are not audio."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import groupby

import torch

from svlora.features import FRAME_SECONDS
from svlora.model import import_automodel

WORD_MARK = "\u2581"  # sentencepiece's word-start marker


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float  # seconds in the file
    end: float

    def to_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


def token_spans(speech_log_probs: torch.Tensor, token_ids: list[int], blank_id: int = 0) -> list[tuple[int, int]]:
    """(first frame, frame after the last) of each token of `token_ids` in the best CTC
    alignment over `speech_log_probs` [T, V] (the frames after the query frames)."""
    if not token_ids or speech_log_probs.size(0) < len(token_ids):
        return []
    import_automodel()
    from funasr.models.sense_voice.utils.ctc_alignment import ctc_forced_align

    frames = speech_log_probs.size(0)
    targets = torch.tensor([token_ids], dtype=torch.long)
    alignment = ctc_forced_align(speech_log_probs.float().cpu()[None], targets,
                                 torch.tensor([frames]), torch.tensor([len(token_ids)]), blank=blank_id)[0]
    # a token's emission is a run of its label (CTC puts a blank between a token and its repeat)
    spans, frame = [], 0
    for token, run in groupby(alignment.tolist()):
        length = len(list(run))
        if token != blank_id:
            spans.append((frame, frame + length))
        frame += length
    return spans


def is_character_word(character: str) -> bool:
    """A CJK character (or kana): a word of its own in zh/yue/ja text."""
    return unicodedata.east_asian_width(character) in ("W", "F") and character.isalnum()


def word_timings(pieces: list[str], spans: list[tuple[int, int]], offset_seconds: float = 0.0) -> list[WordTiming]:
    """Words from sentencepiece `pieces` and their frame spans: a piece starting with the word
    marker starts a word, a CJK character is a word; a word runs from its first piece's first
    frame to its last piece's last frame."""
    words: list[list] = []  # [text, start frame, end frame]
    for piece, (start, end) in zip(pieces, spans):
        text = piece.replace(WORD_MARK, " ")
        for character in text:
            if character == " ":
                words.append(["", None, None])
            elif is_character_word(character):
                words.append([character, start, end])
                words.append(["", None, None])
            else:
                if not words:
                    words.append(["", None, None])
                word = words[-1]
                word[0] += character
                word[1] = start if word[1] is None else word[1]
                word[2] = end
    return [WordTiming(text, offset_seconds + first * FRAME_SECONDS, offset_seconds + last * FRAME_SECONDS)
            for text, first, last in words if text]


TIMING_TOLERANCE_SECONDS = 0.1


def timing_errors(reference: list[dict], hypothesis: list[dict], language: str | None) -> dict:
    """How far the hypothesis' word times are from the reference's: words are matched in order
    where their normalised spellings agree (difflib's longest matching blocks over the two word
    sequences); each matched word gives its signed start and end error (hypothesis − reference,
    seconds). Unmatched words (misrecognised, missing, inserted) carry no timing error."""
    from difflib import SequenceMatcher

    from svlora.metrics import normalize_text

    def spelled(words: list[dict]) -> list[str]:
        return [normalize_text(w["word"], language) for w in words]

    ours, theirs = spelled(hypothesis), spelled(reference)
    matcher = SequenceMatcher(None, theirs, ours, autojunk=False)
    pairs = [(reference[block.a + k], hypothesis[block.b + k])
             for block in matcher.get_matching_blocks() for k in range(block.size) if theirs[block.a + k]]
    return {"reference_words": len(reference), "matched": len(pairs),
            "start_errors": [round(h["start"] - r["start"], 4) for r, h in pairs],
            "end_errors": [round(h["end"] - r["end"], 4) for r, h in pairs]}


def timing_summary(records: list[dict]) -> dict | None:
    """Pooled over clips' timing_errors records: mean and median absolute start and end error
    (milliseconds), the share of matched words whose start and end both lie within 100 ms,
    and how many reference words were matched; None without any reference timings."""
    import numpy as np

    records = [r for r in records if r is not None]
    if not records:
        return None
    starts = np.abs([e for r in records for e in r["start_errors"]])
    ends = np.abs([e for r in records for e in r["end_errors"]])
    total = sum(r["reference_words"] for r in records)
    summary = {"clips": len(records), "reference_words": total, "matched_words": int(starts.size),
               "matched_share": round(starts.size / total, 4) if total else None}
    if not starts.size:
        return summary
    within = (starts <= TIMING_TOLERANCE_SECONDS + 1e-9) & (ends <= TIMING_TOLERANCE_SECONDS + 1e-9)
    return {**summary, "start_mean_ms": round(float(starts.mean()) * 1000, 1),
            "start_median_ms": round(float(np.median(starts)) * 1000, 1),
            "end_mean_ms": round(float(ends.mean()) * 1000, 1),
            "end_median_ms": round(float(np.median(ends)) * 1000, 1),
            "within_100ms": round(float(within.mean()), 4)}


def checked_word_timings(words, seconds: float | None, where: str) -> list[dict]:
    """A manifest's or a word-times file's reference words [{word, start, end}] (seconds of the
    clip): each a non-empty word with 0 <= start <= end (<= the clip's length, with a frame's
    slack), starts in order; ValueError naming `where` and the word."""
    if not isinstance(words, list):
        raise ValueError(f"{where}: words must be a list of {{word, start, end}}")
    checked, previous = [], 0.0
    for index, word in enumerate(words):
        place = f"{where}: words[{index}]"
        if not isinstance(word, dict) or set(word) < {"word", "start", "end"}:
            raise ValueError(f"{place} must be an object with word, start and end")
        text, start, end = word["word"], word["start"], word["end"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{place}: word must be a non-empty string")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
            raise ValueError(f"{place} ({text!r}): start and end must be numbers (seconds)")
        if not 0 <= start <= end or (seconds is not None and end > seconds + FRAME_SECONDS):
            raise ValueError(f"{place} ({text!r}): needs 0 <= start <= end <= the clip's "
                             f"{seconds if seconds is not None else '?'} s; got {start}-{end}")
        if start < previous:
            raise ValueError(f"{place} ({text!r}) starts at {start} s, before the word before it "
                             f"({previous} s): words must be in order")
        previous = start
        checked.append({"word": text, "start": float(start), "end": float(end)})
    return checked
