"""Nothing already written is lost and nothing runs twice into one place: export never
deletes what it did not create, training runs are locked, --overwrite really starts over, a
kill between checkpoint renames resumes, torn log lines are survived, outputs are readable."""

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from svlora.adapters import export_adapter
from svlora.errors import AdapterError, SvloraError
from svlora.finetune import train_recipe
from svlora.finetune.checkpoint import STATE, WEIGHTS, settle_checkpoints
from svlora.finetune.run_log import kept_lines
from svlora.finetune.train import RunLock, require_finite_validation
from svlora.io import write_json_atomic
from tests.finetune.test_train import short_recipe


def test_export_never_deletes_the_run_the_adapter_or_a_full_folder(trained_dir, tmp_path):
    base, run = trained_dir / "tiny-base", trained_dir / "clinic-run"
    for out, message in ((run, "would replace"), (run / "adapter", "would replace"),
                         (trained_dir, "would replace"), (base, "would replace")):
        with pytest.raises(AdapterError, match=message):
            export_adapter(str(base), str(run / "adapter"), str(out), merge=True)
    assert (run / "metrics.jsonl").is_file() and (run / "adapter/adapter_model.safetensors").is_file()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(AdapterError, match="not empty; pass --overwrite"):
        export_adapter(str(base), str(run / "adapter"), str(busy))
    assert (busy / "notes.txt").read_text() == "mine"
    export_adapter(str(base), str(run / "adapter"), str(busy), overwrite=True)
    assert not (busy / "notes.txt").exists() and (busy / "adapter_model.safetensors").is_file()
    mode = stat.S_IMODE(os.stat(busy).st_mode)
    assert mode == 0o777 & ~current_umask(), oct(mode)  # not mkdtemp's 0700


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_second_run_into_the_same_out_is_refused(tiny_model_dir, clinic_manifests, tmp_path):
    (tmp_path / ".lock").write_text(str(os.getpid()))  # a live holder
    with pytest.raises(SvloraError, match=rf"in use by another svlora train \(pid {os.getpid()}\)"):
        train_recipe(short_recipe(tiny_model_dir, clinic_manifests, tmp_path))
    (tmp_path / ".lock").write_text("999999999")  # its process is gone: taken over
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_overwrite_clears_the_old_run_before_starting(tiny_model_dir, clinic_manifests, tmp_path):
    train_recipe(short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "train.max_steps=4",
                              "train.eval_every=2"))
    old_state = torch.load(tmp_path / "checkpoint" / STATE, weights_only=True)
    assert old_state["step"] == 4
    (tmp_path / "adapter" / "stale.txt").write_text("from the old run")
    train_recipe(short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "train.max_steps=2",
                              "train.eval_every=2"), overwrite=True)
    assert torch.load(tmp_path / "checkpoint" / STATE, weights_only=True)["step"] == 2
    assert not (tmp_path / "adapter" / "stale.txt").exists()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def fake_checkpoint(directory, step: int, complete: bool = True):
    directory.mkdir(parents=True)
    save_file({"w": torch.full((2,), float(step))}, str(directory / WEIGHTS))
    if complete:
        torch.save({"step": step}, directory / STATE)
    return directory


def test_a_kill_between_renames_resumes_from_the_newest_complete_checkpoint(tmp_path):
    # killed after "checkpoint" was moved to ".checkpoint.old", before the staged one moved in
    fake_checkpoint(tmp_path / ".checkpoint.old", step=10)
    fake_checkpoint(tmp_path / ".checkpoint.x1y2", step=15)
    fake_checkpoint(tmp_path / ".checkpoint.half", step=20, complete=False)  # cut mid-write
    assert settle_checkpoints(tmp_path) == tmp_path / "checkpoint"
    assert torch.load(tmp_path / "checkpoint" / STATE, weights_only=True)["step"] == 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # leftovers cleaned


def test_resume_after_the_checkpoint_was_moved_aside(tiny_model_dir, clinic_manifests, tmp_path):
    recipe = short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "train.max_steps=4",
                          "train.eval_every=2", "train.checkpoint_every=2")
    train_recipe(recipe)
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")
    longer = short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "train.max_steps=6",
                          "train.eval_every=2", "train.checkpoint_every=2")
    train_recipe(longer, resume=True)
    assert torch.load(tmp_path / "checkpoint" / STATE, weights_only=True)["step"] == 6


def test_a_torn_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [json.loads(line)["step"] for line in kept_lines(log)] == [1, 2]
    assert "metrics.jsonl:3: incomplete line dropped" in capsys.readouterr().err


def test_non_finite_validation_stops_the_run_and_json_stays_strict(tmp_path):
    recipe = type("R", (), {"out": str(tmp_path)})()
    with pytest.raises(SvloraError, match="validation became non-finite"):
        require_finite_validation({"step": 7, "val_loss": float("nan"), "val_cer": 0.2}, recipe)
    require_finite_validation({"step": 7, "val_loss": 1.0, "val_cer": 0.2}, recipe)
    write_json_atomic(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [None, 1.5]}
    assert "NaN" not in (tmp_path / "r.json").read_text()


def test_bad_out_paths_are_one_clear_error(tiny_model_dir, clinic_manifests, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SvloraError, match="is a file"):
        train_recipe(short_recipe(tiny_model_dir, clinic_manifests, a_file))
    if os.geteuid() != 0:  # root writes anywhere: read-only dirs only bind other users
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SvloraError, match="not writable|cannot create"):
            train_recipe(short_recipe(tiny_model_dir, clinic_manifests, locked / "run"))
