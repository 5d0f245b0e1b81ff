"""SenseVoice's label vocabulary: rich tags and their token ids in SenseVoiceSmall's tokenizer.

Ids are those of `chn_jpn_yue_eng_ko_spectok.bpe.model` (25055 pieces); FunASR's
`funasr/models/sense_voice/model.py` hard-codes the same ids (lid_int_dict,
textnorm_int_dict, emo_dict), which tests check against.
"""

from __future__ import annotations

import re

VOCAB_SIZE = 25055

LANGUAGE_TAGS: dict[str, int] = {
    "<|zh|>": 24884,
    "<|en|>": 24885,
    "<|yue|>": 24888,
    "<|ja|>": 24892,
    "<|ko|>": 24896,
    "<|nospeech|>": 24992,
}
EMOTION_TAGS: dict[str, int] = {
    "<|HAPPY|>": 25001,
    "<|SAD|>": 25002,
    "<|ANGRY|>": 25003,
    "<|NEUTRAL|>": 25004,
    "<|FEARFUL|>": 25005,
    "<|DISGUSTED|>": 25006,
    "<|SURPRISED|>": 25007,
    "<|EMO_UNKNOWN|>": 25009,
}
EVENT_TAGS: dict[str, int] = {
    "<|Speech|>": 24993,
    "<|BGM|>": 24995,
    "<|Laughter|>": 24997,
    "<|Applause|>": 24999,
    "<|Cry|>": 25010,
    "<|Sneeze|>": 25011,
    "<|Breath|>": 25012,
    "<|Cough|>": 25013,
    "<|Sing|>": 25014,
    "<|Speech_Noise|>": 25015,
    "<|Event_UNK|>": 25019,
}
ITN_TAGS: dict[str, int] = {"<|withitn|>": 25016, "<|woitn|>": 25017}

# The whole special-token block of the real tokenizer, in id order from 24884.
_WHISPER_STYLE_LANGS = (
    "zh en zh/en en/zh yue minnan wuyu dialect ja de es ru ko fr pt tr pl ca nl ar sv it id hi fi "
    "vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk "
    "br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht "
    "ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
).split()
SPECIAL_TOKENS_FROM_24884: tuple[str, ...] = (
    *(f"<|{lang}|>" for lang in _WHISPER_STYLE_LANGS),
    "<|ASR|>", "<|AED|>", "<|SER|>", "<|nospeech|>",
    "<|Speech|>", "<|/Speech|>", "<|BGM|>", "<|/BGM|>", "<|Laughter|>", "<|/Laughter|>",
    "<|Applause|>", "<|/Applause|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|FEARFUL|>", "<|DISGUSTED|>",
    "<|SURPRISED|>", "<|OTHER|>", "<|EMO_UNKNOWN|>",
    "<|Cry|>", "<|Sneeze|>", "<|Breath|>", "<|Cough|>", "<|Sing|>", "<|Speech_Noise|>",
    "<|withitn|>", "<|woitn|>", "<|GBG|>", "<|Event_UNK|>",
    *(f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, 36)),
)
FIRST_SPECIAL_ID = 24884

# Common spellings of emotions in corpora, mapped to SenseVoice tags (case-insensitive).
EMOTION_ALIASES: dict[str, str] = {
    "happy": "<|HAPPY|>", "happiness": "<|HAPPY|>", "joy": "<|HAPPY|>",
    "sad": "<|SAD|>", "sadness": "<|SAD|>",
    "angry": "<|ANGRY|>", "anger": "<|ANGRY|>",
    "neutral": "<|NEUTRAL|>",
    "fearful": "<|FEARFUL|>", "fear": "<|FEARFUL|>",
    "disgusted": "<|DISGUSTED|>", "disgust": "<|DISGUSTED|>",
    "surprised": "<|SURPRISED|>", "surprise": "<|SURPRISED|>",
    "unknown": "<|EMO_UNKNOWN|>", "emo_unknown": "<|EMO_UNKNOWN|>",
}
LANGUAGES = ("zh", "en", "yue", "ja", "ko")  # what a manifest row may say it speaks
DECODE_LANGUAGES = ("auto", *LANGUAGES)      # the language query a request may ask for
QUERY_LANGUAGES = (*DECODE_LANGUAGES, "nospeech")  # every language query SenseVoice has

RICH_TAG_PATTERN = re.compile(r"<\|[^|<>]*\|>")


def tag_name(tag: str) -> str:
    """'<|HAPPY|>' as 'HAPPY'; anything else (already a name, '<2s') as it is."""
    return tag[2:-2] if tag.startswith("<|") and tag.endswith("|>") else tag


def tag_of(value: str, vocabulary: dict[str, int]) -> str | None:
    """The tag in `vocabulary` that `value` names ('<|X|>' or 'X', any case), or None."""
    bare = value.strip()
    if bare.startswith("<|") and bare.endswith("|>"):
        bare = bare[2:-2]
    for tag in vocabulary:
        if tag[2:-2].lower() == bare.lower():
            return tag
    return None


def emotion_tag(label: str, label_map: dict[str, str] | None = None,
                emotions: dict[str, int] = EMOTION_TAGS) -> str | None:
    """The emotion class (of `emotions`, SenseVoice's by default) a corpus label names, via the
    user's map first, then common aliases."""
    key = label.strip().lower()
    if label_map:
        lowered = {k.strip().lower(): v for k, v in label_map.items()}
        if key in lowered:
            return tag_of(lowered[key], emotions)
    alias = EMOTION_ALIASES.get(key)
    return alias if alias in emotions else tag_of(label, emotions)


def strip_rich_tags(text: str) -> str:
    """Text with every <|...|> tag removed."""
    return RICH_TAG_PATTERN.sub("", text)


def leading_tags(text: str) -> list[str]:
    """The run of rich tags at the start of a decoded SenseVoice output."""
    tags = []
    position = 0
    while (match := RICH_TAG_PATTERN.match(text, position)) is not None:
        tags.append(match.group(0))
        position = match.end()
    return tags


SENSEVOICE_TAG_SETS = {"language": LANGUAGE_TAGS, "emotion": EMOTION_TAGS, "event": EVENT_TAGS,
                       "itn": ITN_TAGS}


def split_output(text: str, tag_sets: dict[str, dict[str, int]] | None = None) -> dict[str, str | None]:
    """Split a decoded output '<|en|><|HAPPY|><|Speech|><|woitn|>words' into its parts;
    `tag_sets` ({kind: tags}, a LabelSchema's) say which tag is which (SenseVoice's by default)."""
    tags = leading_tags(text)
    found = {"language": None, "emotion": None, "event": None, "itn": None}
    for tag in tags:
        for field, vocabulary in (tag_sets or SENSEVOICE_TAG_SETS).items():
            if tag in vocabulary and found[field] is None:
                found[field] = tag
    return {**found, "text": strip_rich_tags(text).strip()}
