from funasr.models.sense_voice.model import SenseVoiceSmall

from svlora.labels import (EMOTION_TAGS, EVENT_TAGS, FIRST_SPECIAL_ID, ITN_TAGS, LANGUAGE_TAGS,
                           SPECIAL_TOKENS_FROM_24884, VOCAB_SIZE, emotion_tag, split_output,
                           strip_rich_tags, tag_of)
from svlora.tiny_model import build_model, sensevoice_config, TinyModelSpec


def funasr_model() -> SenseVoiceSmall:
    spec = TinyModelSpec()
    sizes = dict(output_size=spec.output_size, attention_heads=spec.attention_heads,
                 linear_units=spec.linear_units, num_blocks=1, tp_blocks=1)
    return build_model(sensevoice_config(sizes), seed=0)


def test_ids_agree_with_funasr_sensevoice_constants():
    model = funasr_model()
    assert model.vocab_size == VOCAB_SIZE
    # FunASR maps language token ids to its query-embedding rows; ours must be its keys.
    assert set(model.lid_int_dict) == set(LANGUAGE_TAGS.values())
    assert model.textnorm_int_dict == {ITN_TAGS["<|withitn|>"]: 14, ITN_TAGS["<|woitn|>"]: 15}
    for name, token_id in model.emo_dict.items():
        tag = "<|EMO_UNKNOWN|>" if name == "unk" else f"<|{name.upper()}|>"
        assert EMOTION_TAGS[tag] == token_id


def test_our_tag_names_are_the_ones_funasr_postprocesses():
    """FunASR's rich_transcription_postprocess table names every tag SenseVoiceSmall emits:
    each of our language, emotion, event and ITN tags must be one of them (spelling included),
    and each single tag there must sit in our special-token block."""
    from funasr.utils.postprocess_utils import emoji_dict

    funasr_tags = {tag for tag in emoji_dict if tag.count("<|") == 1}
    for vocabulary in (LANGUAGE_TAGS, EMOTION_TAGS, EVENT_TAGS, ITN_TAGS):
        assert set(vocabulary) <= funasr_tags, set(vocabulary) - funasr_tags
    assert funasr_tags - {"<|GBG|>"} <= set(SPECIAL_TOKENS_FROM_24884)
    assert FIRST_SPECIAL_ID + len(SPECIAL_TOKENS_FROM_24884) == VOCAB_SIZE


def test_emotion_labels_map_case_insensitively_and_through_a_label_map():
    assert emotion_tag("Angry") == "<|ANGRY|>"
    assert emotion_tag("surprise") == "<|SURPRISED|>"
    assert emotion_tag("<|sad|>") == "<|SAD|>"
    assert emotion_tag("calm") is None
    assert emotion_tag("Calm", {"calm": "neutral"}) == "<|NEUTRAL|>"
    assert tag_of("speech", {"<|Speech|>": 1}) == "<|Speech|>"


def test_split_output_reads_the_four_tags_and_the_text():
    parts = split_output("<|en|><|HAPPY|><|Speech|><|woitn|>hello there")
    assert parts == {"language": "<|en|>", "emotion": "<|HAPPY|>", "event": "<|Speech|>",
                     "itn": "<|woitn|>", "text": "hello there"}
    assert split_output("no tags")["emotion"] is None
    assert strip_rich_tags("<|zh|>你好<|NEUTRAL|>") == "你好"
