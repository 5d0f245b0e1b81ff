"""Decode audio files with an exported SenseVoice ONNX dir through the runtimes users deploy:
sherpa-onnx (`OfflineRecognizer.from_sense_voice`) and FunASR ONNX (`funasr_onnx.SenseVoiceSmall`).

Standalone on purpose (no svlora, torch or FunASR imports): funasr-onnx pins numpy<=1.26.4,
so it often lives in its own virtual environment, where this file runs as a script:

    python onnx_runtimes.py funasr EXPORT_DIR [--int8] [--threads N] AUDIO...   # JSON lines out
"""

from __future__ import annotations

import argparse
import json
import re
import sys

TAGS = re.compile(r"<\|([^|]*)\|>")


def split_raw(raw: str) -> dict:
    """language/emotion/event tags and the text of a '<|en|><|HAPPY|><|Speech|><|woitn|>text'."""
    tags = [f"<|{t}|>" for t in TAGS.findall(raw)]
    return {"language": tags[0] if tags else None, "emotion": tags[1] if len(tags) > 1 else None,
            "event": tags[2] if len(tags) > 2 else None, "text": TAGS.sub("", raw).strip()}


def read_mono16k(path: str):
    import numpy as np
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != 16000:
        import soxr

        samples = soxr.resample(samples, rate, 16000)
    return np.ascontiguousarray(samples, dtype=np.float32)


def decode_sherpa(export_dir: str, paths: list[str], int8: bool = False, threads: int = 1) -> list[dict]:
    import sherpa_onnx

    model = f"{export_dir}/model.int8.onnx" if int8 else f"{export_dir}/model.onnx"
    recognizer = sherpa_onnx.OfflineRecognizer.from_sense_voice(
        model=model, tokens=f"{export_dir}/tokens.txt", num_threads=threads, use_itn=False, language="")
    results = []
    for path in paths:
        stream = recognizer.create_stream()
        stream.accept_waveform(16000, read_mono16k(path))
        recognizer.decode_stream(stream)
        result = stream.result
        results.append({"language": result.lang or None, "emotion": result.emotion or None,
                        "event": result.event or None, "text": result.text.strip()})
    return results


def spare_token_names(export_dir: str) -> dict[str, str]:
    """{tokenizer spelling: '<|NAME|>'} of each class SenseVoice lacks, from the export's
    labels.json (svlora's label schema puts them on spare tokens) and its sentencepiece model
    (the spelling funasr_onnx decodes them to); empty without a labels.json."""
    import os

    import sentencepiece

    path = os.path.join(export_dir, "labels.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        schema = json.load(handle)
    pieces = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(export_dir, "chn_jpn_yue_eng_ko_spectok.bpe.model"))
    names = {}
    for kind in ("emotion", "event", "language"):
        for tag, token in schema[kind].items():
            spelling = pieces.id_to_piece(token)
            if spelling != tag:  # SenseVoice's own classes are spelt as named
                names[spelling] = tag
    return names


def decode_funasr(export_dir: str, paths: list[str], int8: bool = False, threads: int = 1) -> list[dict]:
    from funasr_onnx import SenseVoiceSmall

    model = SenseVoiceSmall(export_dir, batch_size=1, quantize=int8, intra_op_num_threads=threads)
    names = spare_token_names(export_dir)
    results = []
    for path in paths:
        raw = model(read_mono16k(path), language="auto", textnorm="woitn")[0]
        for token, tag in names.items():  # funasr_onnx's tokenizer spells spare tokens so
            raw = raw.replace(token, tag)
        results.append(split_raw(raw))
    return results


RUNTIMES = {"sherpa": decode_sherpa, "funasr": decode_funasr}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runtime", choices=sorted(RUNTIMES))
    parser.add_argument("export_dir")
    parser.add_argument("audio", nargs="+")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for result in RUNTIMES[args.runtime](args.export_dir, args.audio, args.int8, args.threads):
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
