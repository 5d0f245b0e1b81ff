"""A model directory is data, not code: nothing it names is run, and its weights are read with
torch.load(weights_only=True) by svlora itself, so a hostile pickle is refused in one line."""

import os
import shutil

import pytest
import torch
import yaml

from svlora.cli import main
from svlora.errors import ModelError
from svlora.model import load_base_model
from tests.conftest import write_tone


class Payload:
    """Unpickling this runs a shell command (what a hostile model.pt does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def copy_model(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_a_hostile_pickle_is_refused_and_never_runs(tiny_model_dir, tmp_path, capsys):
    model = copy_model(tiny_model_dir, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"encoder.weight": Payload(marker)}, model / "model.pt")
    write_tone(tmp_path / "a.wav")
    assert main(["transcribe", "--model", str(model), str(tmp_path / "a.wav")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("svlora transcribe: error:") and "refused" in line
    assert not marker.exists()


def test_torch_force_no_weights_only_does_not_reopen_the_hole(tiny_model_dir, tmp_path, monkeypatch):
    model = copy_model(tiny_model_dir, tmp_path)
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), model / "model.pt")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelError, match="refused"):
        load_base_model(str(model))
    assert not marker.exists()


@pytest.mark.parametrize("weights, message", [({}, "lacks"), ({"x": torch.zeros(1)}, "lacks"),
                                              ([1, 2], "expected a state dict")])
def test_weights_that_are_not_the_model_are_refused(tiny_model_dir, tmp_path, weights, message):
    model = copy_model(tiny_model_dir, tmp_path)
    torch.save(weights, model / "model.pt")
    with pytest.raises(ModelError, match=message):
        load_base_model(str(model))


def test_a_wrong_shape_is_refused(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path)
    state = torch.load(model / "model.pt", weights_only=True)
    name = next(iter(state))
    state[name] = torch.zeros(3, 3, 3)
    torch.save(state, model / "model.pt")
    with pytest.raises(ModelError, match="wrong shape"):
        load_base_model(str(model))


def test_remote_code_named_by_a_model_dir_is_not_run(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path)
    marker = tmp_path / "ran"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = yaml.safe_load((model / "config.yaml").read_text())
    config.update(trust_remote_code=True, remote_code=str(model / "evil.py"))
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    base = load_base_model(str(model))
    assert type(base.model).__name__ == "SenseVoiceSmall" and not marker.exists()
    # asked for explicitly, FunASR imports it (the flag is the user's decision)
    load_base_model(str(model), trust_remote_code=True)
    assert marker.exists()
