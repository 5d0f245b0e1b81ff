import json

import pytest
import torch
from safetensors.torch import load_file

from svlora.errors import RecipeError, SvloraError
from svlora.finetune import load_recipe, train_recipe
from svlora.finetune.lora import attach_lora, check_trainable, trainable_summary
from svlora.finetune.recipe import LoraSettings
from svlora.model import load_base_model, weights_sha256
from svlora.recipes import recipe_path


def short_recipe(model_dir, manifests, out, *extra):
    return load_recipe(recipe_path("tiny_demo"), [
        f"model={model_dir}", f"out={out}", f"data.train={manifests}/train.jsonl",
        f"data.val={manifests}/val.jsonl", "train.max_steps=6", "train.eval_every=3",
        "train.device=cpu", *extra])


def base_name(peft_name: str) -> str:
    """PEFT's name for a wrapped base weight, back to the SenseVoiceSmall state-dict name."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, clinic_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run")
    return out, train_recipe(short_recipe(tiny_model_dir, clinic_manifests, out))


def test_base_weights_are_bit_identical_and_only_lora_changed(tiny_model_dir, lora_run):
    _, result = lora_run
    before = torch.load(tiny_model_dir / "model.pt", weights_only=True)
    after = result.model.state_dict()
    base_after = {base_name(k): v for k, v in after.items() if "lora_" not in k}
    assert base_after.keys() == before.keys()
    for name, tensor in before.items():
        assert torch.equal(base_after[name], tensor), name
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    # PEFT initialises every lora_B to zero: non-zero means the adapter trained.
    assert lora_b and all(float(v.abs().sum()) > 0 for v in lora_b)


def test_adapter_package_records_base_hash_labels_recipe_and_metrics(tiny_model_dir, lora_run):
    out, result = lora_run
    adapter = out / "adapter"
    assert result.output == adapter
    meta = json.loads((adapter / "svlora.json").read_text())
    assert meta["base_sha256"] == weights_sha256(tiny_model_dir)
    assert meta["labels"]["emotion"]["<|HAPPY|>"] == 25001
    assert meta["recipe"]["lora"]["r"] == 16
    assert set(meta["val_metrics"]) >= {"val_loss", "val_cer", "val_emotion_accuracy", "step"}
    assert meta["trainable_parameters"] == result.trainable
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert tensors and all("lora_" in name for name in tensors)
    assert sum(t.numel() for t in tensors.values()) == result.trainable
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["peft_type"] == "LORA"
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert "val_cer" in log[2] and "val_cer" in log[5]


def test_an_existing_run_is_not_overwritten_silently(tiny_model_dir, clinic_manifests, lora_run):
    out, _ = lora_run
    with pytest.raises(SvloraError, match="already holds a training run"):
        train_recipe(short_recipe(tiny_model_dir, clinic_manifests, out))


def test_lora_targets_choose_the_trained_layers(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    model = attach_lora(base.model, LoraSettings(targets=["attention"], r=2, alpha=4))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ("linear_q_k_v" in n or "linear_out" in n) for n in names)
    assert all(".encoder." in n for n in names)
    summary = trainable_summary(model)
    check_trainable(summary, LoraSettings(targets=["attention"]))


def test_a_non_lora_weight_that_would_train_is_refused(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir))
    model = attach_lora(base.model, LoraSettings(r=2, alpha=4))
    model.base_model.model.ctc.ctc_lo.weight.requires_grad_(True)
    with pytest.raises(RecipeError, match="non-LoRA parameter"):
        check_trainable(trainable_summary(model), LoraSettings())
    check_trainable(trainable_summary(model), LoraSettings(also_train=["ctc.ctc_lo"]))


def test_epochs_set_the_number_of_steps(tiny_model_dir, clinic_manifests, tmp_path):
    from svlora.manifest import read_manifest

    recipe = short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "train.epochs=1",
                          "train.eval_every=1000", "data.max_seconds_per_batch=60")
    result = train_recipe(recipe)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # one pass: as many steps as there are batches of the training manifest
    assert len(read_manifest(clinic_manifests / "train.jsonl")) > steps[-1] == len(steps) > 6
    assert result.best["step"] == steps[-1]


def test_validation_decodes_each_row_with_its_own_itn_query(monkeypatch):
    """val_cer must measure the decoding eval reports: a withitn row decoded with the withitn
    query, a woitn row with woitn (the stand-in decoder answers per query)."""
    from svlora.finetune import train as train_module
    from svlora.finetune.data import Example
    from svlora.manifest import ManifestRow

    def row(key, target, itn):
        return ManifestRow(key, f"{key}.wav", 100, target, len(target), "<|en|>", "<|HAPPY|>",
                           "<|Speech|>", f"<|{itn}|>")

    written = {"withitn": "Dr. Smith, 3 pm.", "woitn": "doctor smith three p m"}
    examples = [Example(row("a", written["withitn"], "withitn"), torch.zeros(3, 560), torch.zeros(1)),
                Example(row("b", written["woitn"], "woitn"), torch.zeros(3, 560), torch.zeros(1))]
    seen = []

    def decoder(base, features, max_seconds_per_batch=None, language="auto", itn="woitn",
                ban_emo_unknown=False, bucket_frames=0):
        styles = [itn] * len(features) if isinstance(itn, str) else list(itn)
        seen.append(styles)
        return [f"<|en|><|HAPPY|><|Speech|><|{s}|>{written[s]}" for s in styles]

    monkeypatch.setattr(train_module, "transcribe_features", decoder)
    from types import SimpleNamespace

    from svlora.label_schema import DEFAULT_SCHEMA

    cer, emotion_accuracy = train_module.decoded_scores(SimpleNamespace(labels=DEFAULT_SCHEMA), examples)
    assert seen == [["withitn", "woitn"]]
    assert cer == 0.0 and emotion_accuracy == 1.0


def test_the_package_does_not_shadow_its_train_module():
    import inspect
    import pkgutil

    import svlora.finetune as finetune

    submodules = {info.name for info in pkgutil.iter_modules(finetune.__path__)}
    assert inspect.ismodule(finetune.train) and callable(finetune.train_recipe)
    assert not submodules & set(finetune.__all__)
