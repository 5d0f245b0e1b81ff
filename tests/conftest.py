"""Session fixtures: the tiny model, the demo corpora and one quickstart run shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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
    from svlora.data_prep import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("clinic")
    prepare(PrepareOptions(input=str(demo_corpora["clinic"]), out=str(out), format="csv",
                           split_by="speaker", val=0.1, test=0.2))
    return out


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory, request) -> dict:
    """`svlora quickstart --out DIR` run exactly as the README does, in a subprocess; its stage
    lines are shown live (a few minutes of work should not look like a hang in CI).
    SVLORA_TEST_QUICKSTART=DIR reuses a finished run of the current code (local iteration only)."""
    if os.environ.get("SVLORA_TEST_QUICKSTART"):
        return {"out": Path(os.environ["SVLORA_TEST_QUICKSTART"]), "returncode": 0, "stdout": "",
                "stderr": ""}
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    process = subprocess.Popen([sys.executable, "-m", "svlora.cli", "quickstart", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    stdout = []
    for line in process.stdout:
        stdout.append(line)
        if line.startswith("== "):  # quickstart's stage lines (name, then seconds)
            with capture.global_and_fixture_disabled():
                print(f"  quickstart fixture: {line.rstrip()}", flush=True)
    process.wait()
    reader.join()
    return {"out": out, "returncode": process.returncode, "stdout": "".join(stdout),
            "stderr": "".join(stderr)}


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
