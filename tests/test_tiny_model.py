import json

import numpy as np
import sentencepiece as spm
import soundfile as sf
import torch
import yaml

from svlora.adapters import load_model
from svlora.model import load_base_model, stdout_to_stderr
from svlora.tiny_model import BPE_MODEL_NAME, full_size_config, build_model, parameter_count


def test_layout_is_sensevoice_smalls(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert names == {"config.yaml", "model.pt", "am.mvn", BPE_MODEL_NAME, "configuration.json"}
    config = yaml.safe_load((tiny_model_dir / "config.yaml").read_text())
    assert config["model"] == "SenseVoiceSmall"
    assert config["encoder"] == "SenseVoiceEncoderSmall"
    assert json.loads((tiny_model_dir / "configuration.json").read_text())["framework"] == "pytorch"
    torch.load(tiny_model_dir / "model.pt", weights_only=True)  # a plain tensor state dict


def test_tokenizer_puts_funasrs_anchor_tokens_at_funasrs_ids(tiny_model_dir):
    """The ids FunASR's SenseVoiceSmall hard-codes (its language, text-norm and emotion tables),
    read from FunASR itself, not from the list the tokenizer was built from."""
    from tests.test_labels import funasr_model

    model = funasr_model()
    processor = spm.SentencePieceProcessor(model_file=str(tiny_model_dir / BPE_MODEL_NAME))
    assert processor.get_piece_size() == model.vocab_size
    languages = {code: model.lid_int_dict[token_id] for token_id, code in (
        (24884, "zh"), (24885, "en"), (24888, "yue"), (24892, "ja"), (24896, "ko"),
        (24992, "nospeech"))}
    assert languages == {k: v for k, v in model.lid_dict.items() if k != "auto"}
    for token_id in model.lid_int_dict:
        query = model.lid_int_dict[token_id]
        code = next(k for k, v in model.lid_dict.items() if v == query)
        assert processor.encode(f"<|{code}|>") == [token_id], code
    for token_id, query in model.textnorm_int_dict.items():
        name = next(k for k, v in model.textnorm_dict.items() if v == query)
        assert processor.encode(f"<|{name}|>") == [token_id], name
    for name, token_id in model.emo_dict.items():
        tag = "<|EMO_UNKNOWN|>" if name == "unk" else f"<|{name.upper()}|>"
        assert processor.encode(tag) == [token_id], tag
    assert processor.decode(processor.encode("hello world")) == "hello world"


def test_funasr_automodel_generates_on_the_tiny_dir_unchanged(tiny_model_dir, tmp_path):
    with stdout_to_stderr():
        from funasr import AutoModel
        # FunASR dithers features by default, and AutoModel restores its constructor-time
        # frontend before every generate: dither is only switched off through frontend_conf.
        model = AutoModel(model=str(tiny_model_dir), disable_update=True, device="cpu",
                          frontend_conf={"dither": 0.0})
    rng = np.random.default_rng(0)
    wavs = []
    for i, seconds in enumerate((0.5, 1.0, 2.3, 4.0)):
        wavs.append(tmp_path / f"noise{i}.wav")
        sf.write(wavs[-1], rng.normal(0, 0.1, int(16000 * seconds)).astype(np.float32), 16000)
    funasr_texts = [r["text"] for r in model.generate(input=[str(w) for w in wavs])]
    # svlora's decoding (its own frontend, batched greedy CTC) reads the same dir and agrees
    # token for token, even on random weights where near-ties are everywhere.
    ours = [r["raw"] for r in load_model(str(tiny_model_dir)).transcribe(wavs)]
    assert all(funasr_texts) and funasr_texts == ours


def test_load_base_model_builds_the_funasr_class(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    assert type(base.model).__name__ == "SenseVoiceSmall"
    ids = base.target_ids("hi", "<|en|>", "<|SAD|>", "<|Speech|>", "<|woitn|>")
    assert ids[:4] == [24885, 25002, 24993, 25017] and len(ids) == 6


def test_full_size_architecture_matches_sensevoice_small():
    config = full_size_config()
    model = build_model(config, seed=0)
    # SenseVoiceSmall has ~234M parameters; the same architecture randomly initialised.
    assert 230e6 < parameter_count(model) < 240e6
