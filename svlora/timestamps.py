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
