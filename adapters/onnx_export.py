"""ONNX export of a merged SenseVoiceSmall (+ adapter) in the two contracts other runtimes load:

- sherpa-onnx: inputs `x, x_length, language, text_norm` → `logits`, `tokens.txt`, and the
  metadata its loader reads (LFR window, CMVN as neg_mean/inv_stddev, vocab size, language and
  ITN ids), as its scripts/sense-voice/export-onnx.py writes them;
- FunASR ONNX (`funasr_onnx.SenseVoiceSmall`): inputs `speech, speech_lengths, language,
  textnorm` → `ctc_logits, encoder_out_lens` in `model.onnx` / `model_quant.onnx`, beside the
  config.yaml, am.mvn and sentencepiece model it reads.

`int8`: dynamic MatMul quantisation (QUInt8) as those projects ship it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import sentencepiece
import torch

from svlora.adapter_format import replace_dir
from svlora.io import sha256_file, staging_dir, write_json_atomic
from svlora.label_schema import SCHEMA_FILE, LabelSchema, write_schema
from svlora.tiny_model import BPE_MODEL_NAME

ONNX_KINDS = ("sherpa", "funasr")
OPSET = 14
FILES = {"sherpa": ("model.onnx", "model.int8.onnx"), "funasr": ("model.onnx", "model_quant.onnx")}


class QueriedEncoder(torch.nn.Module):
    """SenseVoiceSmall's inference graph: the [language, event, emotion, ITN] queries before
    the speech features, the encoder, and the CTC projection (logits)."""

    def __init__(self, sensevoice: torch.nn.Module, with_lengths: bool, banned: list[int] = ()):
        super().__init__()
        self.sensevoice = sensevoice
        self.with_lengths = with_lengths
        # the label schema's left-out SenseVoice tags, banned in the graph as svlora's decoding
        # bans them, so every runtime's greedy search emits only the schema's classes
        penalty = torch.zeros(sensevoice.ctc.ctc_lo.out_features)
        penalty[list(banned)] = -1e4
        self.register_buffer("penalty", penalty, persistent=False)

    def forward(self, x, x_length, language, text_norm):
        model = self.sensevoice
        language_query = model.embed(language.long()).unsqueeze(1)
        text_norm_query = model.embed(text_norm.long()).unsqueeze(1)
        event_emotion = model.embed(torch.tensor([[1, 2]], device=x.device)).repeat(x.size(0), 1, 1)
        speech = torch.cat((language_query, event_emotion, text_norm_query, x), dim=1)
        encoder_out, encoder_lengths = model.encoder(speech, x_length + 4)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        logits = model.ctc.ctc_lo(encoder_out) + self.penalty
        return (logits, encoder_lengths.int()) if self.with_lengths else logits


def cmvn_strings(am_mvn: Path) -> tuple[str, str]:
    """am.mvn's shift (negative mean) and scale (inverse stddev) rows, comma-joined."""
    rows = [line.split()[3:-1] for line in am_mvn.read_text().splitlines()
            if line.startswith("<LearnRateCoef>")]
    return ",".join(rows[0]), ",".join(rows[1])


def sherpa_metadata(sensevoice, model_dir: Path, vocab_size: int, frontend: dict,
                    labels: LabelSchema) -> dict:
    neg_mean, inv_stddev = cmvn_strings(model_dir / "am.mvn")
    lid, itn = sensevoice.lid_dict, sensevoice.textnorm_dict  # with the schema's new languages
    return {"lfr_window_size": frontend.get("lfr_m", 7), "lfr_window_shift": frontend.get("lfr_n", 6),
            "normalize_samples": 0, "neg_mean": neg_mean, "inv_stddev": inv_stddev,
            "model_type": "sense_voice_ctc", "version": "2", "model_author": "svlora",
            "maintainer": "svlora", "vocab_size": vocab_size, "comment": "svlora merged adapter",
            **{f"lang_{name}": lid[name] for name in ("auto", *labels.languages, "nospeech")},
            "with_itn": itn["withitn"], "without_itn": itn["woitn"]}


def add_metadata(path: Path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def trace(sensevoice, path: Path, kind: str, banned: list[int] = ()) -> None:
    names = {"sherpa": (["x", "x_length", "language", "text_norm"], ["logits"]),
             "funasr": (["speech", "speech_lengths", "language", "textnorm"],
                        ["ctc_logits", "encoder_out_lens"])}[kind]
    inputs, outputs = names
    dims = {inputs[0]: {0: "N", 1: "T"}, inputs[1]: {0: "N"}, inputs[2]: {0: "N"}, inputs[3]: {0: "N"},
            outputs[0]: {0: "N", 1: "T"}}
    if kind == "funasr":
        dims[outputs[1]] = {0: "N"}
    wrapper = QueriedEncoder(sensevoice, with_lengths=kind == "funasr", banned=banned).eval()
    example = (torch.randn(2, 40, 560), torch.tensor([30, 40], dtype=torch.int32),
               torch.tensor([0, 4], dtype=torch.int32), torch.tensor([14, 15], dtype=torch.int32))
    with torch.no_grad():
        torch.onnx.export(wrapper, example, str(path), opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dims, dynamo=False)


def quantize(source: Path, target: Path, kind: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = []
    if kind == "funasr":  # FunASR's own export leaves its output projections in float
        excluded = [n.name for n in onnx.load(str(source)).graph.node if "output" in n.name]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # FunASR's import sets INFO: one line per tensor otherwise
    try:
        quantize_dynamic(model_input=str(source), model_output=str(target), op_types_to_quantize=["MatMul"],
                         per_channel=kind == "funasr", reduce_range=False, weight_type=QuantType.QUInt8,
                         nodes_to_exclude=excluded)
    finally:
        root.setLevel(level)


def write_onnx_dir(runtime, out: Path, kind: str, int8: bool, provenance: dict) -> Path:
    """Export the runtime's (merged) model into `out`, atomically."""
    import yaml

    if kind not in ONNX_KINDS:
        raise ValueError(f"--onnx {kind!r}: use one of {', '.join(ONNX_KINDS)}")
    base = runtime.base
    model_dir = Path(base.model_dir)
    sensevoice = base.model.to("cpu").eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}.")
    try:
        fp32_name, int8_name = FILES[kind]
        labels = base.labels
        trace(sensevoice, staging / fp32_name, kind, labels.banned_ids())
        config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
        frontend = config.get("frontend_conf") or {}
        pieces = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / BPE_MODEL_NAME))
        metadata = sherpa_metadata(sensevoice, model_dir, pieces.vocab_size(), frontend, labels)
        if not labels.is_default:  # funasr_onnx decodes spare tokens by the sentencepiece model:
            write_schema(staging / SCHEMA_FILE, labels)  # onnx_runtimes renames them from this
        if kind == "sherpa":
            add_metadata(staging / fp32_name, metadata)
            names = labels.token_names  # sherpa-onnx prints tokens.txt's names: the user's
            (staging / "tokens.txt").write_text(
                "".join(f"{names.get(pieces.id_to_piece(i), pieces.id_to_piece(i))} {i}\n"
                        for i in range(pieces.vocab_size())),
                encoding="utf-8")
        else:
            config["frontend_conf"] = {**frontend, "dither": 0.0}  # inference features never dither
            (staging / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
            for name in ("am.mvn", BPE_MODEL_NAME, "configuration.json"):
                shutil.copy2(model_dir / name, staging / name)
        if int8:
            quantize(staging / fp32_name, staging / int8_name, kind)
            if kind == "sherpa":
                add_metadata(staging / int8_name, metadata)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.suffix == ".onnx"}
        write_json_atomic(staging / "svlora_onnx.json", {**provenance, "contract": kind, "opset": OPSET,
                                                         "int8": int8, "onnx_sha256": files})
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_export(out: Path) -> dict:
    return json.loads((Path(out) / "svlora_onnx.json").read_text(encoding="utf-8"))
