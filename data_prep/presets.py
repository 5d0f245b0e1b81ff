"""Public emotion corpora read from their documented layouts and file-name codes.

Each preset fills emotion, speaker, language and (where the corpus has them) transcripts.
Labels SenseVoice lacks (calm, boredom, ...) pass through as they are, so `prepare` rejects
them with advice to map them with --label-map.
"""

from __future__ import annotations

from pathlib import Path

from svlora.data_prep.readers import (InputRow, audio_files, read_transcripts, real_dir,
                                      single_text_file, subdirs)
from svlora.errors import ManifestError

# ESD (Zhou et al. 2021): <speaker>/<Emotion>/[train|evaluation|test/]<speaker>_<utt>.wav and
# <speaker>/<speaker>.txt (utt<TAB>text<TAB>emotion). Speakers 0001-0010 Mandarin, 0011-0020 English.
ESD_EMOTIONS = ("Angry", "Happy", "Neutral", "Sad", "Surprise")

# RAVDESS: Actor_NN/MM-VV-EE-II-SS-RR-AA.wav; modality, vocal channel (01 speech, 02 song),
# emotion, intensity, statement, repetition, actor.
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}

# CREMA-D: AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav
CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
                  "NEU": "neutral", "SAD": "sad"}
CREMA_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes"}

# EmoDB (Berlin): wav/<speaker 2 digits><text code 3><emotion letter><version>.wav, German.
EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
                  "T": "sad", "N": "neutral"}
EMODB_SENTENCES = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen."}

# CASIA (Institute of Automation, CAS): <speaker>/<emotion>/<id>.wav, Mandarin, no transcripts.
CASIA_EMOTIONS = ("angry", "fear", "happy", "neutral", "sad", "surprise")

# TESS (Toronto): <OAF|YAF>_<emotion>/<speaker>_<word>_<emotion>.wav; carrier "Say the word _".
TESS_EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
                 "neutral": "neutral", "ps": "surprised", "pleasant_surprise": "surprised",
                 "pleasant_surprised": "surprised", "sad": "sad"}


def _require(rows: list[InputRow], root: Path, preset: str, layout: str) -> list[InputRow]:
    if not rows:
        raise ManifestError(f"{root}: no clips found in the {preset} layout ({layout})")
    return rows


def read_esd(root: Path, encoding: str) -> list[InputRow]:
    """The ESD root (speaker folders) or one speaker's folder."""
    speaker_dirs = [root] if any(real_dir(root / e) for e in ESD_EMOTIONS) else \
        [p for p in subdirs(root) if p.name.isdigit()]
    rows = []
    for speaker_dir in speaker_dirs:
        texts = sorted(speaker_dir.glob("*.txt"))
        transcripts = read_transcripts(texts[0], encoding) if texts else {}
        speaker = speaker_dir.name if speaker_dir.name.isdigit() else \
            (texts[0].stem if texts else speaker_dir.name)
        language = "zh" if speaker.isdigit() and int(speaker) <= 10 else "en"
        for emotion in ESD_EMOTIONS:
            for clip in audio_files(speaker_dir / emotion) if real_dir(speaker_dir / emotion) else []:
                rows.append(InputRow(where=str(clip), audio=clip, text=transcripts.get(clip.stem),
                                     emotion=emotion, language=language, speaker=speaker))
    return _require(rows, root, "esd", "<speaker>/<Emotion>/<speaker>_<utt>.wav + <speaker>.txt")


def read_ravdess(root: Path, encoding: str) -> list[InputRow]:
    rows = []
    for clip in audio_files(root):
        codes = clip.stem.split("-")
        if len(codes) != 7 or codes[0] == "02":  # 02 = video only
            continue
        rows.append(InputRow(
            where=str(clip), audio=clip, text=RAVDESS_STATEMENTS.get(codes[4]),
            emotion=RAVDESS_EMOTIONS.get(codes[2], codes[2]), language="en",
            event="Sing" if codes[1] == "02" else "Speech", speaker=f"actor{codes[6]}"))
    return _require(rows, root, "ravdess", "Actor_NN/03-01-EE-II-SS-RR-AA.wav")


def read_crema_d(root: Path, encoding: str) -> list[InputRow]:
    rows = []
    for clip in audio_files(root):
        codes = clip.stem.split("_")
        if len(codes) != 4 or not codes[0].isdigit():
            continue
        rows.append(InputRow(where=str(clip), audio=clip, text=CREMA_SENTENCES.get(codes[1]),
                             emotion=CREMA_EMOTIONS.get(codes[2], codes[2]), language="en",
                             speaker=codes[0]))
    return _require(rows, root, "crema-d", "AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav")


def read_emodb(root: Path, encoding: str) -> list[InputRow]:
    rows = []
    for clip in audio_files(root):
        name = clip.stem
        if len(name) < 6 or not name[:2].isdigit() or name[5] not in EMODB_EMOTIONS:
            continue
        rows.append(InputRow(where=str(clip), audio=clip, text=EMODB_SENTENCES.get(name[2:5]),
                             emotion=EMODB_EMOTIONS[name[5]], language="de",
                             speaker=f"speaker{name[:2]}"))
    return _require(rows, root, "emodb", "wav/<speaker><text><emotion letter><version>.wav")


def read_casia(root: Path, encoding: str, transcripts_file: Path | None = None) -> list[InputRow]:
    """<speaker>/<emotion>/<id>.wav; transcripts from --transcripts or the sentence list in the
    root (public copies: one GB18030 .txt numbered `201. text`). Only the ids it lists have a
    transcript; the other clips are reported with that reason."""
    transcripts_file = transcripts_file or single_text_file(root)
    transcripts = read_transcripts(transcripts_file, encoding) if transcripts_file else {}
    if transcripts_file:
        reason = f"clip id not in the sentence list {transcripts_file.name}"
    else:
        texts = sorted(p.name for p in root.glob("*.txt"))
        reason = (f"{len(texts)} .txt files in {root} ({', '.join(texts[:3])}); pass the sentence "
                  "list with --transcripts" if texts else
                  "CASIA ships no transcript file here; pass the sentence list with --transcripts")
    rows = []
    for speaker_dir in subdirs(root):
        for emotion_dir in subdirs(speaker_dir):
            if emotion_dir.name.lower() not in CASIA_EMOTIONS:
                continue
            for clip in audio_files(emotion_dir):
                text = transcripts.get(clip.stem) or transcripts.get(clip.stem.lstrip("0"))
                rows.append(InputRow(where=str(clip), audio=clip, text=text,
                                     emotion=emotion_dir.name, language="zh",
                                     speaker=speaker_dir.name,
                                     no_text_reason=None if text else reason))
    return _require(rows, root, "casia", "<speaker>/<emotion>/<id>.wav")


def read_tess(root: Path, encoding: str) -> list[InputRow]:
    rows = []
    for clip in audio_files(root):
        parts = clip.stem.split("_")
        if len(parts) < 3:
            continue
        label = "_".join(parts[2:]).lower()
        rows.append(InputRow(where=str(clip), audio=clip, text=f"Say the word {parts[1]}",
                             emotion=TESS_EMOTIONS.get(label, label), language="en",
                             speaker=parts[0].upper()))
    return _require(rows, root, "tess", "<OAF|YAF>_<emotion>/<speaker>_<word>_<emotion>.wav")


PRESETS = {"esd": read_esd, "ravdess": read_ravdess, "crema-d": read_crema_d,
           "emodb": read_emodb, "casia": read_casia, "tess": read_tess}
