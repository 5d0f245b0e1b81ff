"""An adapter may only add LoRA weights: copies of the trained clinic adapter with a base weight
slipped in, no or renamed keys, NaN weights, a rank or targets that disagree with the model,
are refused in one line before PEFT touches anything, by load_model (CLI) and by the server's
admin API (400), and the shared base weights stay what they were."""

import json
import re
import shutil

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from svlora.adapter_format import attach_adapter
from svlora.adapters import load_model
from svlora.cli import main
from svlora.errors import AdapterError
from tests.adapters.test_serve import ADMIN, TOKEN, clinic_clips, post, start_server, stop

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
# the query embedding: a base weight the clinic adapter neither targets nor saves (its CTC head
# is a declared modules_to_save copy, the schema's new class trains it)
BASE_KEY = "base_model.model.embed.weight"


def hostile_copy(trained_dir, target, base, tensors=None, config=None):
    """The trained adapter copied to `target`, its tensors and config rewritten by the callables
    `tensors(tensors, base state dict) -> dict` and `config(dict) -> dict`."""
    shutil.copytree(trained_dir / "clinic-run/adapter", target)
    if tensors:
        save_file(tensors(load_file(target / WEIGHTS), base.state_dict()), target / WEIGHTS)
    if config:
        (target / CONFIG).write_text(json.dumps(config(json.loads((target / CONFIG).read_text()))))
    return target


def with_base_key(tensors, base):
    """A replacement for the query embedding (the base's own weight), shaped to fit."""
    return {**tensors, BASE_KEY: torch.full_like(base["embed.weight"], 3.0)}


def with_nan(tensors, base):
    key = next(k for k in sorted(tensors) if k.endswith("lora_B.weight"))
    poisoned = tensors[key].clone()
    poisoned[0, 0] = float("nan")
    return {**tensors, key: poisoned}


HOSTILE = {
    "base key": (dict(tensors=with_base_key), f"{BASE_KEY}' is a weight of the base model itself"),
    "empty": (dict(tensors=lambda t, base: {}), "holds no LoRA weights"),
    "renamed keys": (dict(tensors=lambda t, base: {k.removeprefix("base_model."): v for k, v in t.items()}),
                     "names no layer of this model"),
    "a lora_B missing": (dict(tensors=lambda t, base: {k: v for k, v in t.items() if k != max(t)}),
                         "no complete LoRA weights"),
    "NaN": (dict(tensors=with_nan), "holds NaN or Inf values"),
    "rank": (dict(config=lambda c: {**c, "r": c["r"] * 2}), "not rank r="),
    "targets": (dict(config=lambda c: {**c, "target_modules": ["w_1", "no_such_layer"]}),
                "'no_such_layer' (target_modules / modules_to_save) names no module"),
}


@pytest.fixture(scope="module")
def runtime(trained_dir):
    """The tiny base with the good adapter attached, as `svlora transcribe` or a server holds it."""
    return load_model(str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter"))


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_adapter_is_refused_and_the_model_is_untouched(trained_dir, runtime, tmp_path, case):
    rewrite, message = HOSTILE[case]
    adapter = hostile_copy(trained_dir, tmp_path / "hostile", runtime.base.model, **rewrite)
    before = {k: v.clone() for k, v in runtime.base.model.state_dict().items()}
    with pytest.raises(AdapterError, match=re.escape(message)) as refused:
        attach_adapter(runtime.peft_model, adapter, runtime.base_sha256, name="hostile")
    assert str(adapter) in str(refused.value) and "\n" not in str(refused.value)
    after = runtime.base.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert "hostile" not in runtime.peft_model.peft_config


def test_the_cli_refuses_a_base_key_in_one_line_naming_file_and_key(trained_dir, runtime, tmp_path,
                                                                   capsys):
    adapter = hostile_copy(trained_dir, tmp_path / "hostile", runtime.base.model, tensors=with_base_key)
    clip = clinic_clips(trained_dir, 1)[0]
    assert main(["transcribe", "--model", str(trained_dir / "tiny-base"), "--adapter", str(adapter),
                 str(clip)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("svlora transcribe: error:") and "Traceback" not in "\n".join(err)
    assert f"{adapter / WEIGHTS}: tensor '{BASE_KEY}'" in err[-1] and "remove the key" in err[-1]


def test_the_server_answers_400_to_a_base_key_and_keeps_serving_the_same_base(trained_dir, runtime,
                                                                            tmp_path):
    hostile_copy(trained_dir, tmp_path / "hostile", runtime.base.model, tensors=with_base_key)
    clip = clinic_clips(trained_dir, 1)[0]
    process, url = start_server(trained_dir, "--adapter-root", str(tmp_path), "--admin-token", TOKEN)
    try:
        before = {model: post(url, clip, model=model).json() for model in ("sensevoice-small", "clinic")}
        loaded = httpx.post(f"{url}/v1/admin/adapters", headers=ADMIN, timeout=60,
                            json={"name": "hostile", "path": "hostile"})
        assert loaded.status_code == 400, loaded.text
        assert BASE_KEY in loaded.json()["detail"]
        after = {model: post(url, clip, model=model).json() for model in ("sensevoice-small", "clinic")}
        assert after == before
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == \
            ["sensevoice-small", "clinic"]
    finally:
        stop(process)
