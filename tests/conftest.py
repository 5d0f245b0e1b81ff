"""Session fixtures: the tiny model, the demo corpora and one quickstart run shared by tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from svlora.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-random", seed=0)


@pytest.fixture(scope="session")
def demo_corpora(tmp_path_factory) -> dict[str, Path]:
    from svlora.demo_data import generate_demo_corpora

    return generate_demo_corpora(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="session")
def clinic_manifests(tmp_path_factory, demo_corpora) -> Path:
    from svlora.data_prep import PrepareOptions, prepare_corpus

    out = tmp_path_factory.mktemp("clinic")
    prepare_corpus(PrepareOptions(input=str(demo_corpora["clinic"]), out=str(out), format="csv",
                                  split_by="speaker", val=0.1, test=0.2))
    return out


def run_streaming(command: list[str], label: str, request, every_seconds: float = 20.0) -> dict:
    """Run `command`, showing its stage lines ("== ...") and, every `every_seconds`, its latest
    progress bar (tqdm writes to stderr with carriage returns) on the terminal through pytest's
    capture, so minutes of training never look like a hang."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def show(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"  {label}: {text}", flush=True)

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stderr: list[str] = []
    latest = {"line": "", "shown": time.monotonic()}

    def read_stderr() -> None:
        buffer = ""
        while chunk := process.stderr.read(256):
            stderr.append(chunk)
            buffer += chunk
            *done, buffer = re.split(r"[\r\n]", buffer)
            for piece in done:
                if piece.strip():
                    latest["line"] = piece.strip()
            if latest["line"] and time.monotonic() - latest["shown"] >= every_seconds:
                show(latest["line"][:160])
                latest["shown"] = time.monotonic()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = []
    for line in process.stdout:
        stdout.append(line)
        if line.startswith("== "):  # quickstart's stage lines (name, then seconds)
            show(line.rstrip())
    process.wait()
    reader.join()
    return {"returncode": process.returncode, "stdout": "".join(stdout), "stderr": "".join(stderr)}


def reused_run() -> Path | None:
    """SVLORA_TEST_QUICKSTART=DIR reuses a finished quickstart of the current code (local
    iteration only; CI always builds its own)."""
    reused = os.environ.get("SVLORA_TEST_QUICKSTART")
    return Path(reused) if reused else None


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory, request) -> dict:
    """`svlora quickstart --out DIR` run exactly as the README does, in a subprocess, its
    progress shown live. Only tests about the quickstart's own outputs (report, cascades,
    export) use it; tests that need just a trained base and adapter use `trained_dir`."""
    if reused_run():
        return {"out": reused_run(), "returncode": 0, "stdout": "", "stderr": ""}
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    result = run_streaming([sys.executable, "-m", "svlora.cli", "quickstart", "--out", str(out)],
                           "quickstart fixture", request)
    return {"out": out, **result}


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, request) -> Path:
    """The quickstart's first stages, in the quickstart's layout: the tiny model trained on the
    demo "general" domain (`tiny-base/`), a LoRA adapter on "clinic" (`clinic-run/adapter/`)
    and the clinic manifests (`clinic/`). Taken from the quickstart fixture's run when it
    succeeded (the same commands and seeds: training twice would cost CI minutes); when it
    failed, built here through the CLI, so a failure in the quickstart's later stages (rules,
    cascades, eval, export) does not take these tests out."""
    if reused_run():
        return reused_run()
    quickstart = request.getfixturevalue("quickstart_run")
    if quickstart["returncode"] == 0:
        return quickstart["out"]
    root = tmp_path_factory.mktemp("trained")
    cli = [sys.executable, "-m", "svlora.cli"]

    def step(label: str, *arguments: str) -> None:
        result = run_streaming([*cli, *arguments], f"trained fixture ({label})", request)
        assert result["returncode"] == 0, f"{label}: {result['stderr'][-3000:]}"

    from svlora.demo_data import generate_demo_corpora

    step("tiny model", "make-tiny-model", str(root / "tiny-random"))
    corpora = generate_demo_corpora(root / "demo", seed=0)
    for name in ("general", "clinic"):
        labels = ["--labels", str(corpora[name].parent / "labels.yaml")] if name == "clinic" else []
        step(f"prepare {name}", "prepare", str(corpora[name]), "--format", "csv", "--out",
             str(root / name), "--split-by", "speaker", "--val", "0.1", "--test", "0.2", *labels,
             "--word-times", str(corpora[name].parent / "word_times.jsonl"))

    def train(recipe: str, model: Path, data: str, run_dir: str) -> None:
        step(f"train {recipe}", "train", recipe, f"model={model}", f"out={root / run_dir}",
             f"data.train={root / data}/train.jsonl", f"data.val={root / data}/val.jsonl",
             "train.seed=0")

    train("tiny_base", root / "tiny-random", "general", "base-run")
    shutil.copytree(root / "base-run" / "model", root / "tiny-base")
    train("tiny_demo", root / "tiny-base", "clinic", "clinic-run")
    return root


@pytest.fixture(scope="session")
def quickstart_dir(quickstart_run) -> Path:
    assert quickstart_run["returncode"] == 0, quickstart_run["stderr"][-3000:]
    return quickstart_run["out"]


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000, amplitude: float = 0.3,
               channels: int = 1, frequency: float = 220.0, subtype: str | None = None,
               format: str | None = None) -> Path:
    """A sine tone file; vary `frequency` for distinct content (prepare drops duplicates)."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    samples = amplitude * np.sin(2 * np.pi * frequency * t)
    if channels > 1:
        samples = np.stack([samples] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype=subtype, format=format)
    return path
