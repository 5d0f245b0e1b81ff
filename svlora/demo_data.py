"""Generate the bundled demo corpora: a synthetic tone language with emotions, two domains.

Every letter is a tone (plus a harmonic) on a geometric frequency ladder; speakers shift
pitch slightly; emotions change tempo, loudness, timbre and roughness. The "general"
domain trains the tiny base model. The "clinic" domain is the user's domain: a different
recording channel (half a ladder step higher), other words, and other emotion habits
(its neutral speech is quiet and slow, which general-domain habits read as sad), plus a class
SenseVoice lacks (HESITANT: long pauses between letters) and a `role` per speaker (nurses
have a brighter voice than patients), both declared in the clinic's labels.yaml, and drug-like
domain terms the general domain never says (its terms.txt).
Everything is generated from a seed, so the demo needs no download and no licence.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
LETTERS = "adehiklmnoprstuy"
LADDER_LOW_HZ, LADDER_RATIO = 300.0, 1.16

GENERAL_WORDS = ("the rain is on today stay home kid ride dark road ten year hot tea lake "
                 "any time old story hello")
CLINIC_WORDS = "pain dose nurse rest meds sleep heart pulse tired spine knee sore hurt dry"
# The clinic's domain terms: drug-like words the general corpus never contains (its terms.txt;
# `svlora eval --terms`, `--hotwords`)
CLINIC_TERMS = ("tramadol", "sertraline", "amiodarone", "atenolol", "methadone")


@dataclass(frozen=True)
class EmotionStyle:
    tempo: float        # letter duration multiplier
    loudness: float     # peak amplitude
    brightness: float   # amplitude of the 3rd harmonic (a "smiling" timbre)
    roughness: float    # added noise relative to loudness
    pitch: float = 1.0  # extra pitch multiplier
    gap: float = 1.0    # pause between letters multiplier (hesitation)


GENERAL_STYLES = {
    "neutral": EmotionStyle(tempo=1.0, loudness=0.30, brightness=0.0, roughness=0.0),
    "happy": EmotionStyle(tempo=0.9, loudness=0.35, brightness=0.8, roughness=0.0),
    "sad": EmotionStyle(tempo=1.25, loudness=0.08, brightness=0.0, roughness=0.0, pitch=0.93),
    "angry": EmotionStyle(tempo=0.9, loudness=0.6, brightness=0.0, roughness=0.3),
}
# Clinic habits: neutral patients speak quietly and slowly (general habits read that as sad);
# sad is quieter still; angry is hoarse rather than loud.
CLINIC_STYLES = {
    "neutral": EmotionStyle(tempo=1.25, loudness=0.08, brightness=0.0, roughness=0.0, pitch=0.93),
    "happy": EmotionStyle(tempo=0.9, loudness=0.3, brightness=0.8, roughness=0.0),
    "sad": EmotionStyle(tempo=1.25, loudness=0.03, brightness=0.0, roughness=0.05, pitch=0.93),
    "angry": EmotionStyle(tempo=1.0, loudness=0.25, brightness=0.0, roughness=0.6),
    "hesitant": EmotionStyle(tempo=1.1, loudness=0.15, brightness=0.0, roughness=0.0, gap=6.0),
}
# The clinic's own label schema (`svlora prepare --labels`): a class SenseVoice lacks and a head.
CLINIC_LABELS = {"emotion": ["NEUTRAL", "HAPPY", "SAD", "ANGRY", "HESITANT"],
                 "heads": {"role": ["nurse", "patient"]}}
NURSES = {0, 3, 5, 8}  # speaker indices; the others are patients


@dataclass(frozen=True)
class DomainSpec:
    name: str
    words: tuple[str, ...]
    styles: dict
    channel_shift: float  # multiplies every frequency: the recording channel
    speakers: int
    clips_per_speaker: int
    labels: dict | None = None  # its labels.yaml (prepare --labels); a `role` head: nurse/patient
    terms: tuple[str, ...] = ()  # domain terms among its words, listed in its terms.txt


GENERAL = DomainSpec("general", tuple(GENERAL_WORDS.split()), GENERAL_STYLES, 1.0, 8, 50)
CLINIC = DomainSpec("clinic", tuple(CLINIC_WORDS.split()) + CLINIC_TERMS, CLINIC_STYLES,
                    LADDER_RATIO ** 0.5, 10, 30, labels=CLINIC_LABELS, terms=CLINIC_TERMS)


def letter_frequency(letter: str) -> float:
    return LADDER_LOW_HZ * LADDER_RATIO ** LETTERS.index(letter)


def synthesize(text: str, style: EmotionStyle, speaker_pitch: float, harmonic: float,
               channel_shift: float, rng: np.random.Generator) -> np.ndarray:
    """Waveform (float32, 16 kHz) of `text` spoken in the tone language."""
    return synthesize_timed(text, style, speaker_pitch, harmonic, channel_shift, rng)[0]


def synthesize_timed(text: str, style: EmotionStyle, speaker_pitch: float, harmonic: float,
                     channel_shift: float, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """The waveform and each word's true span: [{word, start, end}] in seconds, from its first
    letter's onset to its last letter's end (the pause after it excluded)."""
    letter_seconds, gap_seconds, space_seconds = 0.11 * style.tempo, 0.03 * style.gap, 0.12 * style.tempo
    pieces = [np.zeros(int(0.1 * SAMPLE_RATE))]
    words: list[dict] = []
    for position, character in enumerate(text):
        samples = sum(map(len, pieces))
        if character == " ":
            pieces.append(np.zeros(int(space_seconds * SAMPLE_RATE)))
            continue
        if position == 0 or text[position - 1] == " ":
            words.append({"word": "", "start": round(samples / SAMPLE_RATE, 4)})
        words[-1]["word"] += character
        times = np.arange(int(letter_seconds * SAMPLE_RATE)) / SAMPLE_RATE
        frequency = letter_frequency(character) * speaker_pitch * channel_shift * style.pitch
        phase = 2 * np.pi * frequency * times
        tone = np.sin(phase) + harmonic * np.sin(2 * phase) + style.brightness * np.sin(3 * phase)
        envelope = np.minimum(1, np.minimum(times, times[-1] - times) / 0.01)
        tone = tone * envelope + style.roughness * rng.standard_normal(times.size) * envelope
        pieces.append(style.loudness * tone / (1 + harmonic + style.brightness))
        words[-1]["end"] = round(sum(map(len, pieces)) / SAMPLE_RATE, 4)
        pieces.append(np.zeros(int(gap_seconds * SAMPLE_RATE)))
    pieces.append(np.zeros(int(0.1 * SAMPLE_RATE)))
    waveform = np.concatenate(pieces) + 0.003 * rng.standard_normal(sum(map(len, pieces)))
    return waveform.astype(np.float32), words


def generate_domain(spec: DomainSpec, out_dir: str | Path, seed: int) -> Path:
    """Write `out_dir/<speaker>/<clip>.wav` and `out_dir/metadata.csv`; return the CSV path."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    emotions = sorted(spec.styles)
    has_roles = "role" in (spec.labels or {}).get("heads", {})
    rows, timings = [], []
    for speaker_index in range(spec.speakers):
        speaker = f"{spec.name}_spk{speaker_index:02d}"
        speaker_pitch = 1 + rng.uniform(-0.03, 0.03)
        harmonic = rng.uniform(0.2, 0.6)
        role = None
        if has_roles:  # a nurse's voice is brighter (a stronger 2nd harmonic)
            role = "nurse" if speaker_index in NURSES else "patient"
            harmonic = harmonic + 0.5 if role == "nurse" else harmonic - 0.15
        (out / speaker).mkdir(parents=True, exist_ok=True)
        for clip_index in range(spec.clips_per_speaker):
            emotion = emotions[clip_index % len(emotions)]
            text = " ".join(rng.choice(spec.words, size=rng.integers(1, 4)))
            waveform, words = synthesize_timed(text, spec.styles[emotion], speaker_pitch, harmonic,
                                               spec.channel_shift, rng)
            relative = f"{speaker}/{speaker}_{clip_index:03d}.wav"
            sf.write(out / relative, waveform, SAMPLE_RATE, subtype="PCM_16")
            timings.append({"audio": relative, "words": words})
            rows.append({"audio": relative, "text": text, "emotion": emotion, "language": "en",
                         "speaker": speaker, **({"role": role} if role else {})})
    csv_path = out / "metadata.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if spec.labels:
        import yaml

        (out / "labels.yaml").write_text(yaml.safe_dump(spec.labels, sort_keys=False),
                                         encoding="utf-8")
    with open(out / "word_times.jsonl", "w", encoding="utf-8") as handle:  # the timing truth
        handle.writelines(json.dumps(row) + "\n" for row in timings)
    if spec.terms:
        (out / "terms.txt").write_text("".join(f"{term}\n" for term in spec.terms), encoding="utf-8")
    return csv_path


def generate_demo_corpora(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Both demo domains under `out_dir`; returns {domain name: metadata.csv path}."""
    out = Path(out_dir)
    return {spec.name: generate_domain(spec, out / spec.name, seed + offset)
            for offset, spec in enumerate((GENERAL, CLINIC))}
