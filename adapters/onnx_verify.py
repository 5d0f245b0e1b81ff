"""Parity of an ONNX export with `svlora transcribe --adapter`: the same clips through the
runtime users deploy (sherpa-onnx or FunASR ONNX, in-process or in another interpreter), text
and tags compared clip by clip; int8 scored against the manifest's labels (CER, emotion
accuracy) beside torch fp32."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from svlora.adapters import onnx_runtimes
from svlora.errors import ManifestError, SvloraError
from svlora.io import write_json_atomic
from svlora.manifest import read_manifest
from svlora.metrics import accuracy, corpus_cer

PARITY_TARGET = 0.99
COMPARED = ("text", "language", "emotion", "event")


def run_runtime(kind: str, export_dir: Path, paths: list[str], int8: bool, python: str | None,
                threads: int = 1) -> list[dict]:
    """The runtime's results, in this process or (python given) in that interpreter."""
    if python is None:
        return onnx_runtimes.RUNTIMES[kind](str(export_dir), paths, int8, threads)
    command = [python, onnx_runtimes.__file__, kind, str(export_dir), *paths, "--threads", str(threads)]
    completed = subprocess.run(command + (["--int8"] if int8 else []), capture_output=True, text=True)
    if completed.returncode != 0:
        raise SvloraError(f"{python} could not run the {kind} runtime: "
                          f"{completed.stderr.strip().splitlines()[-1:] or ['no output']}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


def same(expected: dict, got: dict) -> bool:
    return all((expected.get(k) or None) == (got.get(k) or None) for k in COMPARED)


def scores(rows, results: list[dict]) -> dict:
    languages = [r.text_language for r in rows]
    labelled = [(r.emo_target, x.get("emotion")) for r, x in zip(rows, results) if r.emo_target]
    return {"cer": round(corpus_cer([r.target for r in rows], [x["text"] for x in results], languages), 4),
            "emotion_accuracy": round(accuracy([a for a, _ in labelled], [b for _, b in labelled]), 4)
            if labelled else None}


def check_verify_manifest(manifest: str) -> None:
    """--verify MANIFEST before any export work: it exists, parses and every clip decodes (a bad
    clip found after the export would leave an unverified model behind)."""
    from svlora.audio import AudioDecodeError, decode_audio

    for row in read_manifest(manifest):
        try:
            decode_audio(row.source)
        except AudioDecodeError as error:
            raise ManifestError(f"--verify {manifest}: clip {row.key} ({row.source}): {error}; fix "
                                "or remove the row, then export again") from None


def verify_export(runtime, export_dir: str | Path, kind: str, manifest: str, int8: bool = False,
                  python: str | None = None, threads: int = 1) -> dict:
    """Compare the export with `runtime` (the base + adapter, unmerged) on every clip of
    `manifest`; writes verify.json in the export dir and returns it."""
    export_dir = Path(export_dir)
    rows = read_manifest(manifest)
    paths = [row.source for row in rows]
    reference = [{**runtime.base.labels.split(r["raw"]), "text": r["text"]}
                 for r in runtime.transcribe(paths)]
    onnx_fp32 = run_runtime(kind, export_dir, paths, False, python, threads)
    matches = [same(e, g) for e, g in zip(reference, onnx_fp32)]
    report = {"runtime": {"sherpa": "sherpa-onnx", "funasr": "funasr_onnx"}[kind],
              "interpreter": python or "this one", "manifest": str(manifest), "clips": len(rows),
              "fp32_identical": sum(matches), "fp32_identical_rate": round(sum(matches) / len(rows), 4),
              "target": PARITY_TARGET,
              "fp32_differences": [{"source": p, "svlora": e, "onnx": g}
                                   for p, e, g, ok in zip(paths, reference, onnx_fp32, matches) if not ok][:10],
              "torch_fp32": scores(rows, reference), "onnx_fp32": scores(rows, onnx_fp32)}
    if int8:
        onnx_int8 = run_runtime(kind, export_dir, paths, True, python, threads)
        report["onnx_int8"] = scores(rows, onnx_int8)
        report["int8_identical_to_fp32"] = sum(same(e, g) for e, g in zip(reference, onnx_int8))
        report["int8_change"] = {k: None if report["onnx_int8"][k] is None else
                                 round(report["onnx_int8"][k] - report["torch_fp32"][k], 4)
                                 for k in ("cer", "emotion_accuracy")}
    write_json_atomic(export_dir / f"verify-{kind}.json", report)
    return report
