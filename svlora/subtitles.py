"""Subtitles (SRT, WebVTT) from a transcription's word timestamps: one cue per segment, cut
into lines of at most `max_seconds` (7 s, the common broadcast ceiling) at word boundaries, each
cue timed by its own first and last word. Hand-written (40 lines): the `srt` and `webvtt-py`
packages format cues but neither splits by word times."""

from __future__ import annotations

from dataclasses import dataclass

from svlora.timestamps import is_character_word

MAX_LINE_SECONDS = 7.0
FORMATS = ("srt", "vtt")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def joined_words(words: list[str]) -> str:
    """Words as text: spaced, except around CJK characters and before bare punctuation."""
    text = ""
    for word in words:
        glued = (not text or is_character_word(word[0]) and is_character_word(text[-1])
                 or not any(c.isalnum() for c in word))
        text += word if glued else " " + word
    return text


def segment_cues(segment: dict, max_seconds: float = MAX_LINE_SECONDS) -> list[Cue]:
    """A segment's cues: its words in runs no longer than `max_seconds` (a single longer word is
    a cue of its own, cut at `max_seconds`); a segment without words is one cue of its span."""
    words = segment.get("words")
    if not words:
        end = min(segment["end"], segment["start"] + max_seconds)
        return [Cue(segment["start"], end, segment["text"])] if segment["text"] else []
    cues, run = [], []
    for word in words:
        if run and word["end"] - run[0]["start"] > max_seconds:
            cues.append(run)
            run = []
        run.append(word)
    cues.append(run)
    return [Cue(r[0]["start"], min(r[-1]["end"], r[0]["start"] + max_seconds),
                joined_words([w["word"] for w in r])) for r in cues]


def clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def render(segments: list[dict], kind: str, max_seconds: float = MAX_LINE_SECONDS) -> str:
    """`kind` "srt" or "vtt" text of the segments' cues, numbered from 1."""
    separator = "," if kind == "srt" else "."
    cues = [cue for segment in segments for cue in segment_cues(segment, max_seconds)]
    blocks = []
    for number, cue in enumerate(cues, start=1):
        span = f"{clock(cue.start, separator)} --> {clock(cue.end, separator)}"
        blocks.append(f"{number}\n{span}\n{cue.text}\n" if kind == "srt" else f"{span}\n{cue.text}\n")
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(blocks)
