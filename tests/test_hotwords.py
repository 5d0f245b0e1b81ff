"""Hotword decoding on the tiny model: terms spelt in the model's own tokens (unknown characters
are an error naming the line), and the rich tags decoded exactly as without hotwords."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svlora.decoding import decode_features
from svlora.hotwords import build_hotwords, load_hotwords, term_phrases
from svlora.model import load_base_model
from svlora.terms import TermsError, parse_terms


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return load_base_model(str(tiny_model_dir))


def test_terms_are_spelt_in_the_models_tokens(base):
    phrases = term_phrases(parse_terms("Knee\theart rate\n", "t.txt"), base.tokenizer)
    # the tiny model writes lower case only: 'Knee' is spelt as it can write it
    assert [base.tokenizer.decode(p) for p in phrases] == ["knee", "heart rate"]


def test_a_character_the_model_cannot_write_is_an_error_naming_the_line(base, tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("knee\nheparin 5mg\n", encoding="utf-8")
    with pytest.raises(TermsError, match=rf"{path}:2: 'heparin 5mg' has characters the model's "
                                         r"vocabulary lacks \('5'"):
        load_hotwords(str(path), base.tokenizer)


def test_hotwords_change_the_text_search_never_the_tags(base):
    """On the random-init model (its text is noise, its tag frames too): with a large bonus the
    text may change, the tags and every tag distribution may not."""
    generator = np.random.default_rng(0)
    features = [base.features((0.1 * generator.standard_normal(16000 * s)).astype(np.float32))
                for s in (1, 2, 3)]
    plain = decode_features(base, features)
    biased = decode_features(base, features, hotwords=build_hotwords(
        base.tokenizer, parse_terms("knee\nheart\n", "t"), score=8.0, beam=4))
    for a, b in zip(plain, biased):
        split_a, split_b = base.labels.split(a.raw), base.labels.split(b.raw)
        assert {k: split_a[k] for k in ("language", "emotion", "event", "itn")} == \
            {k: split_b[k] for k in ("language", "emotion", "event", "itn")}
        assert (a.emotion_probs, a.event_probs, a.language_probs) == \
            (b.emotion_probs, b.event_probs, b.language_probs)
    with torch.inference_mode():  # a per-clip list: only the clips given hotwords are searched
        mixed = decode_features(base, features, hotwords=[None, build_hotwords(
            base.tokenizer, parse_terms("knee\n", "t"), score=8.0, beam=4), None])
    assert mixed[0].raw == plain[0].raw and mixed[2].raw == plain[2].raw
