"""ONNX export through the runtimes users deploy: sherpa-onnx (this environment) and FunASR ONNX
(its own virtual environment: funasr-onnx pins numpy<=1.26.4). Parity with `svlora transcribe
--adapter` on the quickstart's clinic test clips, int8 scored, contracts checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svlora.cli import main

REPO = Path(__file__).resolve().parents[2]
FUNASR_ONNX_VENV = REPO / ".venv-funasr-onnx"


@pytest.fixture(scope="session")
def funasr_onnx_python() -> str:
    """An interpreter with funasr-onnx: $SVLORA_FUNASR_ONNX_PYTHON, or a venv made here once."""
    if os.environ.get("SVLORA_FUNASR_ONNX_PYTHON"):
        return os.environ["SVLORA_FUNASR_ONNX_PYTHON"]
    python = FUNASR_ONNX_VENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(FUNASR_ONNX_VENV)], capture_output=True)
        installed = made.returncode == 0 and subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "funasr-onnx", "soundfile", "soxr"],
            capture_output=True, text=True, timeout=900).returncode == 0
        if not installed:
            pytest.skip("funasr-onnx could not be installed into its own venv (no package index?)")
    return str(python)


def export(trained_dir, out, kind, *extra):
    main(["export", "--model", str(trained_dir / "tiny-base"), "--adapter",
          str(trained_dir / "clinic-run/adapter"), "--out", str(out), "--onnx", kind, "--int8",
          "--verify", str(trained_dir / "clinic/test.jsonl"), *extra])
    return json.loads((out / f"verify-{kind}.json").read_text())


def io_names(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()],
            session.get_modelmeta().custom_metadata_map)


def test_sherpa_onnx_loads_the_export_and_agrees_with_svlora(trained_dir, tmp_path, capsys):
    out = tmp_path / "sherpa"
    report = export(trained_dir, out, "sherpa")
    assert "parity through sherpa-onnx: 60/60" in capsys.readouterr().out
    assert report["clips"] == 60 and report["fp32_identical_rate"] >= 0.99
    assert set(report["onnx_int8"]) == {"cer", "emotion_accuracy"} and "int8_change" in report
    inputs, outputs, meta = io_names(out / "model.onnx")
    assert (inputs, outputs) == (["x", "x_length", "language", "text_norm"], ["logits"])
    assert meta["model_type"] == "sense_voice_ctc" and meta["vocab_size"] == "25055"
    assert (meta["lang_en"], meta["with_itn"], meta["without_itn"]) == ("4", "14", "15")
    assert len(meta["neg_mean"].split(",")) == 560 and meta["lfr_window_size"] == "7"
    assert io_names(out / "model.int8.onnx")[2]["neg_mean"] == meta["neg_mean"]
    tokens = (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(tokens) == 25055 and tokens[24885] == "<|en|> 24885"
    # the clinic's HESITANT (a spare token) is named in tokens.txt, so sherpa-onnx prints it: the
    # 60/60 parity above covers the 12 HESITANT clips
    assert tokens[25034] == "<|HESITANT|> 25034" and report["onnx_fp32"]["emotion_accuracy"] >= 0.9


def test_funasr_onnx_loads_the_export_and_agrees_with_svlora(trained_dir, tmp_path, capsys,
                                                           funasr_onnx_python):
    out = tmp_path / "funasr"
    report = export(trained_dir, out, "funasr", "--runtime-python", funasr_onnx_python)
    assert "parity through funasr_onnx: 60/60" in capsys.readouterr().out
    assert report["interpreter"] == funasr_onnx_python and report["fp32_identical_rate"] >= 0.99
    assert report["onnx_fp32"]["emotion_accuracy"] >= 0.9  # HESITANT among them, by name
    inputs, outputs, _ = io_names(out / "model.onnx")
    assert (inputs, outputs) == (["speech", "speech_lengths", "language", "textnorm"],
                                 ["ctc_logits", "encoder_out_lens"])
    assert {"model_quant.onnx", "config.yaml", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"} <= \
        {p.name for p in out.iterdir()}


def test_verify_reports_what_differs(trained_dir, tmp_path):
    """Against the base without the adapter, the adapted export must not pass as identical."""
    from svlora.adapters import load_model
    from svlora.adapters.onnx_verify import verify_export

    out = tmp_path / "sherpa"
    main(["export", "--model", str(trained_dir / "tiny-base"), "--adapter",
          str(trained_dir / "clinic-run/adapter"), "--out", str(out), "--onnx", "sherpa"])
    report = verify_export(load_model(str(trained_dir / "tiny-base")), out, "sherpa",
                           str(trained_dir / "clinic/test.jsonl"))
    assert report["fp32_identical"] < report["clips"] * 0.5
    assert report["fp32_differences"] and report["torch_fp32"]["cer"] > report["onnx_fp32"]["cer"]


def test_onnx_only_flags_without_onnx_are_refused(trained_dir, tmp_path, capsys):
    assert main(["export", "--model", str(trained_dir / "tiny-base"), "--adapter",
                 str(trained_dir / "clinic-run/adapter"), "--out", str(tmp_path / "x"), "--int8"]) == 1
    assert not (tmp_path / "x").exists()
    assert "--int8, --verify and --runtime-python go with --onnx" in capsys.readouterr().err
