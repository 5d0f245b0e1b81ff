"""Mistakes users make end in one line that names what is wrong and how to fix it (exit 1),
never a traceback, a misleading message or a silent wrong result."""

import shutil
import subprocess
import sys

import pytest

from svlora.cli import main
from tests.conftest import write_tone
from tests.data_prep.test_prepare import good_rows, write_csv


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"svlora {command}: error:"), err
    return err[-1]


@pytest.mark.parametrize("command", ["transcribe", "eval", "export"])
def test_cuda_without_cuda_is_one_line(command, tiny_model_dir, tmp_path, capsys):
    extra = {"transcribe": [str(tmp_path / "a.wav")],
             "eval": ["--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r")],
             "export": ["--adapter", str(tmp_path / "ad"), "--out", str(tmp_path / "o")]}[command]
    write_tone(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text('{"key": "a", "source": "%s", "source_len": 100, "target": '
                                      '"x", "target_len": 1, "text_language": "<|en|>", '
                                      '"emo_target": "<|SAD|>", "event_target": "<|Speech|>", '
                                      '"with_or_wo_itn": "<|woitn|>"}\n' % (tmp_path / "a.wav"))
    assert main([command, "--model", str(tiny_model_dir), "--device", "cuda", *extra]) == 1
    line = one_error_line(capsys, command)
    assert "no CUDA device" in line and "use --device cpu" in line


def test_a_failed_hub_download_reports_its_cause(monkeypatch, tmp_path, capsys):
    import funasr.download.download_model_from_hub as hub

    def unreachable(**kwargs):  # what FunASR does: print the cause, swallow it, return the id
        print(f"Download: {kwargs['model']} failed!: [E1020] Connection failed: name resolution")
        return {**kwargs, "model_path": kwargs["model"]}
    monkeypatch.setattr(hub, "download_model", unreachable)
    audio = str(write_tone(tmp_path / "x.wav"))
    assert main(["transcribe", "--model", "iic/SenseVoiceSmall", audio]) == 1
    line = one_error_line(capsys, "transcribe")
    assert "cannot download 'iic/SenseVoiceSmall'" in line and "Connection failed" in line
    assert "not a SenseVoiceSmall model dir" not in line


def test_unknown_hub_and_missing_local_dir(tmp_path, capsys):
    assert main(["transcribe", "--model", "./no/such/dir", str(write_tone(tmp_path / "x.wav"))]) == 1
    assert "no such model directory" in one_error_line(capsys, "transcribe")


@pytest.mark.parametrize("model", ["runs/quickstart/tiny-base", "./tiny-base", "/no/such/model"])
def test_a_missing_path_that_cannot_be_a_hub_id_is_refused_before_any_download(
        model, monkeypatch, tmp_path, capsys):
    import funasr.download.download_model_from_hub as hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "download_model", lambda **kwargs: pytest.fail("tried the hub"))
    assert main(["transcribe", "--model", model, str(write_tone(tmp_path / "x.wav"))]) == 1
    line = one_error_line(capsys, "transcribe")
    assert f"{model}: no such model directory (resolved against the working directory {tmp_path})" in line


def test_a_missing_relative_dir_shaped_like_a_hub_id_is_named_before_the_hub(monkeypatch, tmp_path,
                                                                              capsys):
    """A recipe's `model: runs/base` run from another folder: say so before the slow download."""
    import sys

    import funasr.download.download_model_from_hub as hub

    def unreachable(**kwargs):
        sys.stderr.write("DOWNLOAD STARTED\n")
        return {**kwargs, "model_path": kwargs["model"]}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "download_model", unreachable)
    assert main(["transcribe", "--model", "runs/base", str(write_tone(tmp_path / "x.wav"))]) == 1
    err = capsys.readouterr().err
    notice = (f"svlora: runs/base not found locally (resolved against the working directory "
              f"{tmp_path}); treated as a hub id")
    assert notice in err and err.index(notice) < err.index("DOWNLOAD STARTED")


def test_train_device_overrides_the_recipe(capsys):
    import yaml

    assert main(["train", "tiny_demo", "--print-config", "--device", "cpu"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["device"] == "cpu"
    assert main(["train", "tiny_demo", "--print-config", "--device", "tpu"]) == 1
    assert "train.device='tpu'; use auto, cpu, cuda or cuda:N" in one_error_line(capsys, "train")


def test_a_missing_audio_file_says_not_found(tiny_model_dir, tmp_path, capsys):
    assert main(["transcribe", "--model", str(tiny_model_dir), str(tmp_path / "gone.wav")]) == 1
    assert one_error_line(capsys, "transcribe").endswith("gone.wav: not found")


def test_unknown_language_is_refused(tiny_model_dir, tmp_path, capsys):
    from svlora.adapters import load_model
    from svlora.errors import SvloraError

    write_tone(tmp_path / "a.wav")
    # the languages depend on the adapter's label schema: checked once the model is loaded
    assert main(["transcribe", "--model", str(tiny_model_dir), "--language", "xx", str(tmp_path / "a.wav")]) == 1
    assert "language 'xx': use auto or one of zh, en, yue, ja, ko, nospeech" in capsys.readouterr().err
    with pytest.raises(SvloraError, match="language 'xx': use auto or one of zh, en"):
        load_model(str(tiny_model_dir)).transcribe([tmp_path / "a.wav"], language="xx")


def test_a_model_dir_without_am_mvn_is_refused(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "am.mvn").unlink()
    write_tone(tmp_path / "a.wav")
    assert main(["transcribe", "--model", str(broken), str(tmp_path / "a.wav")]) == 1
    assert "am.mvn is missing" in one_error_line(capsys, "transcribe")


def test_label_map_file_missing(tmp_path, capsys):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path))
    assert main(["prepare", str(table), "--format", "csv", "--out", str(tmp_path / "o"),
                 "--language", "en", "--label-map", str(tmp_path / "map.yaml")]) == 1
    line = one_error_line(capsys, "prepare")
    assert "--label-map" in line and "map.yaml: file not found" in line


def test_hf_without_datasets_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ImportError
    (tmp_path / "ds").mkdir()
    assert main(["prepare", str(tmp_path / "ds"), "--format", "hf", "--out", str(tmp_path / "o")]) == 1
    assert "pip install 'svlora[hf]'" in one_error_line(capsys, "prepare")


@pytest.mark.parametrize("override, message", [
    ("lora.targets=[", "override 'lora.targets=[': the value is not valid YAML"),
    ("optim.lr=abc", "command-line override 'optim.lr=abc': optim.lr: expected a number"),
    ("optim.lr=-1e-4", "command-line override 'optim.lr=-1e-4': optim.lr=-0.0001; use a positive"),
    ("optim.lr=.nan", "optim.lr=nan"),
    ("lora.r=0", "lora.r=0"),
    ("lora.dropout=1.5", "lora.dropout=1.5; use [0, 1)"),
    ("train.seed=-3", "train.seed=-3; use 0 or more"),
    ("train.device=tpu", "train.device='tpu'; use auto, cpu, cuda or cuda:N"),
    ("hub=xx", "hub='xx'; use ms (ModelScope) or hf"),
])
def test_bad_overrides_fail_at_print_config_and_blame_the_command_line(override, message, capsys):
    assert main(["train", "tiny_demo", "--print-config", override]) == 1
    line = one_error_line(capsys, "train")
    assert message in line and "tiny_demo.yaml" not in line


def test_wandb_logging_without_wandb(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["train", "tiny_demo", "--print-config", "logging.wandb=true"]) == 1
    assert "pip install 'svlora[wandb]'" in one_error_line(capsys, "train")


def test_help_imports_no_torch_and_funasr_notices_stay_away(tiny_model_dir, tmp_path):
    probe = ("import sys; from svlora.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('torch', 'funasr', 'numpy') if m in sys.modules]\n"
             "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)
    write_tone(tmp_path / "a.wav")
    done = subprocess.run([sys.executable, "-m", "svlora.cli", "transcribe", "--model",
                           str(tiny_model_dir), str(tmp_path / "a.wav")],
                          capture_output=True, text=True, check=True)
    assert "ffmpeg" not in done.stderr + done.stdout
    assert "trust_remote_code" not in done.stderr  # FunASR's per-load log lines are quiet too
