"""Write a small randomly initialised model directory in SenseVoiceSmall's exact layout.

The directory holds what the hub's `iic/SenseVoiceSmall` holds (config.yaml, model.pt,
am.mvn, chn_jpn_yue_eng_ko_spectok.bpe.model, configuration.json) so FunASR's
`AutoModel(model=dir)` loads it unchanged. Sizes are small; the tokenizer keeps the full
25055-piece id space with every SenseVoice special token at its real id.
"""

from __future__ import annotations

import io

import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from svlora.io import atomic_path, write_json_atomic, write_text_atomic
from svlora.labels import FIRST_SPECIAL_ID, SPECIAL_TOKENS_FROM_24884, VOCAB_SIZE
from svlora.model import import_automodel

BPE_MODEL_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
FEATURE_DIM = 560  # 80 mel bins x LFR m=7, as SenseVoiceSmall
FULL_SIZE_ENCODER = dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50,
                         tp_blocks=20)


@dataclass
class TinyModelSpec:
    output_size: int = 64
    attention_heads: int = 4
    linear_units: int = 128
    num_blocks: int = 3
    tp_blocks: int = 1
    kernel_size: int = 11
    characters: str = string.ascii_lowercase + "'"


def sensevoice_config(encoder_sizes: dict, kernel_size: int = 11) -> dict:
    """config.yaml contents in SenseVoiceSmall's schema with the given encoder sizes."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            **encoder_sizes,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": kernel_size,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
        "dataset": "SenseVoiceCTCDataset",
        "dataset_conf": {"index_ds": "IndexDSJsonl", "batch_sampler": "EspnetStyleBatchSampler",
                         "batch_type": "token", "batch_size": 14000, "max_token_length": 2000,
                         "min_token_length": 60, "max_target_length": 200, "shuffle": True,
                         "num_workers": 4, "sos": 1, "eos": 2, "IndexDSJsonl": "IndexDSJsonl"},
        "train_conf": {"accum_grad": 1, "grad_clip": 5, "max_epoch": 20, "keep_nbest_models": 10,
                       "log_interval": 100},
        "optim": "adamw",
        "optim_conf": {"lr": 0.00002},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 25000},
        "specaug": "SpecAugLFR",
        "specaug_conf": {"apply_time_warp": False, "time_warp_window": 5, "time_warp_mode": "bicubic",
                         "apply_freq_mask": True, "freq_mask_width_range": [0, 30], "lfr_rate": 6,
                         "num_freq_mask": 1, "apply_time_mask": True,
                         "time_mask_width_range": [0, 12], "num_time_mask": 1},
    }


CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    "pipeline": {"type": "funasr-pipeline"},
    "model_name_in_hub": {"ms": "", "hf": ""},
    "file_path_metas": {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"bpemodel": BPE_MODEL_NAME},
        "frontend_conf": {"cmvn_file": "am.mvn"},
    },
}


def build_sentencepiece_model(characters: str) -> bytes:
    """A char-level sentencepiece model padded to SenseVoice's id space.

    Pieces 0..2 are <unk>, <s>, </s>; then the characters; unused fillers up to 24883;
    then the special tokens at their real ids as user-defined symbols. No dummy prefix, so
    encode('<|en|>') is exactly [24885], as FunASR's SenseVoiceCTCDataset needs.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(characters)] * 4), model_writer=buffer,
        model_type="char", vocab_size=len(set(characters)) + 4, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        add_dummy_prefix=False, minloglevel=2)
    proto = pb.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    piece_type = pb.ModelProto.SentencePiece
    for index in range(len(proto.pieces), FIRST_SPECIAL_ID):
        filler = proto.pieces.add()
        filler.piece, filler.score, filler.type = f"<unused_{index}>", 0.0, piece_type.UNUSED
    for token in SPECIAL_TOKENS_FROM_24884:
        special = proto.pieces.add()
        special.piece, special.score, special.type = token, 0.0, piece_type.USER_DEFINED
    assert len(proto.pieces) == VOCAB_SIZE, len(proto.pieces)
    return proto.SerializeToString()


def cmvn_text(means: np.ndarray, stds: np.ndarray) -> str:
    """am.mvn in Kaldi nnet text form: AddShift(-mean) then Rescale(1/std), as FunASR reads it."""
    def vector(values: np.ndarray) -> str:
        return " ".join(f"{v:.6f}" for v in values)
    dim = len(means)
    return (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {vector(-means)} ]\n<Rescale> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {vector(1.0 / stds)} ]\n</Nnet>\n")


def reference_cmvn(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Global CMVN statistics of LFR fbank features on a fixed mix of tones and noise.

    Standard deviations are floored at 1 (log-mel units, as on real speech) so the Rescale
    factors stay at or below 1 like SenseVoiceSmall's am.mvn; steady tones alone would give
    factors up to ~20 and amplify float rounding in the features.
    """
    import_automodel()  # FunASR's package import, its notices filtered
    from funasr.frontends.wav_frontend import WavFrontend

    rng = np.random.default_rng(seed)
    seconds = np.arange(16000 * 4) / 16000
    signal = 0.05 * rng.standard_normal(seconds.size)
    for frequency in (220, 440, 880, 1760, 3000):
        signal += 0.1 * np.sin(2 * np.pi * frequency * seconds) * (rng.random() + 0.5)
    frontend = WavFrontend(fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10,
                           lfr_m=7, lfr_n=6, dither=0.0)
    waveform = torch.tensor(signal, dtype=torch.float32)[None]
    features, _ = frontend(waveform, [waveform.shape[1]])
    features = features[0].numpy()
    return features.mean(axis=0), np.maximum(features.std(axis=0), 1.0)


def build_model(config: dict, seed: int) -> torch.nn.Module:
    """FunASR's own SenseVoiceSmall class, randomly initialised from `config`."""
    import_automodel()
    from funasr.models.sense_voice.model import SenseVoiceSmall

    torch.manual_seed(seed)
    return SenseVoiceSmall(input_size=FEATURE_DIM, vocab_size=VOCAB_SIZE,
                           encoder=config["encoder"], encoder_conf=config["encoder_conf"],
                           **config["model_conf"])


def make_tiny_model(out_dir: str | Path, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny SenseVoiceSmall-layout model directory and return its path."""
    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {k: v for k, v in asdict(spec).items() if k not in ("kernel_size", "characters")}
    config = sensevoice_config(sizes, kernel_size=spec.kernel_size)
    model = build_model(config, seed)
    with atomic_path(out / "model.pt") as temporary:
        torch.save(model.state_dict(), temporary)
    means, stds = reference_cmvn(seed)
    write_text_atomic(out / "am.mvn", cmvn_text(means, stds))
    with atomic_path(out / BPE_MODEL_NAME) as temporary:
        temporary.write_bytes(build_sentencepiece_model(spec.characters))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json_atomic(out / "configuration.json", CONFIGURATION_JSON)
    return out


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def saved_parameter_count(model_dir: str | Path) -> int:
    """Parameters in a model dir's model.pt (tensors only; read with weights_only=True)."""
    state = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True)
    return sum(tensor.numel() for tensor in state.values())


def full_size_spec() -> TinyModelSpec:
    """SenseVoiceSmall's real encoder sizes (~234M parameters), for benchmarks."""
    return TinyModelSpec(**FULL_SIZE_ENCODER)


def full_size_config() -> dict:
    """SenseVoiceSmall's real architecture (for memory and speed benchmarks)."""
    return sensevoice_config(dict(FULL_SIZE_ENCODER))


__all__ = ["TinyModelSpec", "make_tiny_model", "full_size_spec", "build_model", "full_size_config",
           "sensevoice_config", "parameter_count", "saved_parameter_count", "BPE_MODEL_NAME"]
