"""The training objective against FunASR's own SenseVoiceSmall.forward, and augmentation that
obeys the recipe (FunASR's SpecAugLFR never runs behind the recipe's back)."""

import pytest
import torch

from svlora.finetune import load_recipe
from svlora.finetune.data import build_examples, collate
from svlora.finetune.train import build_objective
from svlora.manifest import read_manifest
from svlora.model import load_base_model
from svlora.recipes import recipe_path


def recipe_for(model_dir, manifests, *extra):
    return load_recipe(recipe_path("tiny_demo"), [
        f"model={model_dir}", f"data.train={manifests}/train.jsonl", "train.device=cpu",
        "loss.ctc_weight=1.0", "loss.rich_weight=1.0", "lora.dropout=0.0", *extra])


def a_batch(base, manifests, clips=4):
    rows = read_manifest(manifests / "train.jsonl")[:clips]
    return collate(build_examples(base, rows, "batch"), torch.device("cpu"))


def test_objective_equals_funasr_forward_loss(tiny_model_dir, clinic_manifests):
    base = load_base_model(str(tiny_model_dir))
    batch = a_batch(base, clinic_manifests)
    base.model.specaug = None  # FunASR's side without augmentation, as svlora trains
    base.model.eval()          # no dropout; the random "auto" language query stays (seeded)
    torch.manual_seed(123)
    funasr_loss, stats, _ = base.model(batch["speech"], batch["speech_lengths"].clone(),
                                       batch["text"], batch["text_lengths"])
    objective, _, _ = build_objective(base, recipe_for(tiny_model_dir, clinic_manifests),
                                      torch.device("cpu"))
    objective.eval()
    torch.manual_seed(123)
    ours, parts = objective(batch["speech"], batch["speech_lengths"], batch["text"],
                            batch["text_lengths"])
    # LoRA B starts at zero, so the adapted model computes exactly the base's function
    assert torch.allclose(ours, funasr_loss, rtol=1e-5), (float(ours), float(funasr_loss))
    assert torch.allclose(parts[0], stats["loss_ctc"], rtol=1e-5)
    assert torch.allclose(parts[1], stats["loss_rich"], rtol=1e-5)
    assert float(parts[2]) == pytest.approx(stats["acc_rich"], abs=1e-6)


def count_funasr_specaug_calls(base):
    calls = []
    base.model.specaug.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_funasr_specaug_never_runs_in_training(tiny_model_dir, clinic_manifests):
    for specaugment in ("false", "true"):
        base = load_base_model(str(tiny_model_dir))
        assert base.model.specaug is not None  # the config declares SpecAugLFR
        calls = count_funasr_specaug_calls(base)
        recipe = recipe_for(tiny_model_dir, clinic_manifests, f"augment.specaugment={specaugment}")
        objective, _, _ = build_objective(base, recipe, torch.device("cpu"))
        objective.train()
        batch = a_batch(base, clinic_manifests, clips=2)
        objective(**batch)[0].backward()
        assert calls == [], f"FunASR's specaug ran with augment.specaugment={specaugment}"
