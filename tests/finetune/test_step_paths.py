"""The training step's fast paths against the plain ones (issue 23, checkable on a CPU): frozen
weights stored in bf16 vs fp32, gradient accumulation vs one big batch, bucket padding, and
gradient checkpointing decided by a measured step."""

from dataclasses import replace

import torch

from svlora.finetune.data import build_examples, collate
from svlora.finetune.memory import autocast
from svlora.finetune.train import build_objective, decide_checkpointing
from svlora.manifest import read_manifest
from svlora.model import load_base_model
from tests.finetune.test_objective import recipe_for

CPU = torch.device("cpu")


def objective_and_examples(model_dir, manifests, *extra, clips=6):
    base = load_base_model(str(model_dir))
    recipe = recipe_for(model_dir, manifests, "lora.dropout=0.0", *extra)
    objective, _, summary = build_objective(base, recipe, CPU, recipe.train.precision
                                            if recipe.train.precision != "auto" else "fp32")
    examples = build_examples(base, read_manifest(manifests / "train.jsonl")[:clips], "batch")
    return base, recipe, objective, examples, summary


def seeded_loss(objective, inputs, precision="fp32"):
    torch.manual_seed(5)
    with autocast(CPU, precision):
        return objective(**inputs)[0]


def test_frozen_weights_in_bf16_give_the_fp32_loss_and_lora_stays_fp32(tiny_model_dir, clinic_manifests):
    _, _, fp32, examples, _ = objective_and_examples(tiny_model_dir, clinic_manifests, "train.precision=bf16",
                                                     "train.base_dtype=fp32")
    _, _, bf16, _, summary = objective_and_examples(tiny_model_dir, clinic_manifests, "train.precision=bf16",
                                                    "train.base_dtype=bf16")
    assert summary["base_dtype"] == "bf16"
    dtypes = {n: p.dtype for n, p in bf16.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n, p in bf16.named_parameters() if p.requires_grad)
    assert sum(d == torch.bfloat16 for d in dtypes.values()) > 10  # the frozen linear layers
    assert all(d == torch.float32 for n, d in dtypes.items() if "norm" in n)
    fp32.eval(), bf16.eval()
    inputs = collate(examples, CPU)
    reference = seeded_loss(fp32, inputs, "bf16")   # fp32 weights, autocast casts them per op
    stored = seeded_loss(bf16, inputs, "bf16")      # already bf16: the same casts done once
    assert torch.allclose(stored, reference, rtol=1e-3), (float(stored), float(reference))
    exact = seeded_loss(fp32, inputs, "fp32")
    assert torch.allclose(stored, exact, rtol=3e-2), (float(stored), float(exact))  # bf16 vs fp32


def gradients(objective):
    return {n: p.grad.clone() for n, p in objective.named_parameters() if p.requires_grad}


def test_accumulated_micro_batches_give_the_big_batch_gradient(tiny_model_dir, clinic_manifests):
    _, _, objective, examples, _ = objective_and_examples(tiny_model_dir, clinic_manifests)
    objective.eval()  # no dropout; the same language-query draws per clip (seeded)
    torch.nn.init.normal_(next(p for n, p in objective.named_parameters() if "lora_B" in n), std=0.1)
    seeded_loss(objective, collate(examples, CPU)).backward()
    big = gradients(objective)
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the draws of the two halves follow each other as in the big batch
    for half in (examples[:2], examples[2:]):
        loss = objective(**collate(half, CPU))[0]
        (loss * len(half) / len(examples)).backward()
    accumulated = gradients(objective)
    assert big.keys() == accumulated.keys()
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in big.values())


def test_padding_to_a_compile_bucket_leaves_the_loss_unchanged(tiny_model_dir, clinic_manifests):
    _, _, objective, examples, _ = objective_and_examples(tiny_model_dir, clinic_manifests)
    objective.eval()
    plain, padded = collate(examples, CPU), collate(examples, CPU, bucket_frames=50)
    assert padded["speech"].shape[1] % 50 == 0 and padded["speech"].shape[1] > plain["speech"].shape[1]
    torch.testing.assert_close(seeded_loss(objective, padded), seeded_loss(objective, plain),
                               rtol=1e-5, atol=1e-6)


def test_validation_under_compile_pads_to_the_bucket_and_scores_as_without(tiny_model_dir, clinic_manifests):
    """Validation (loss and decoding) pads to train.compile_bucket_frames as training does, so
    a compiled encoder sees the same few lengths; the scores are those without padding."""
    from svlora.finetune.train import validate

    base, recipe, objective, examples, _ = objective_and_examples(tiny_model_dir, clinic_manifests)
    seen = []
    hook = base.model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1] - 4))  # after the 4 query frames
    plain = validate(base, objective, examples, examples[:3], recipe, CPU, "fp32")
    plain_lengths, seen[:] = sorted(set(seen)), []
    bucketed = validate(base, objective, examples, examples[:3], replace(
        recipe, train=replace(recipe.train, compile=True, compile_bucket_frames=50)), CPU, "fp32")
    hook.remove()
    assert any(n % 50 for n in plain_lengths)  # without compile: the batches' own lengths
    assert seen and all(n % 50 == 0 for n in seen)  # every forward, loss and decoding
    assert bucketed.keys() == plain.keys()
    for name in plain:
        assert abs(bucketed[name] - plain[name]) <= 1e-5 * max(1.0, abs(plain[name])), name


def test_checkpointing_auto_turns_on_only_above_the_memory_limit(tiny_model_dir, clinic_manifests):
    rows = read_manifest(clinic_manifests / "train.jsonl")
    decisions, notes = {}, []
    for limit in (0.01, 100.0):
        base, recipe, objective, _, _ = objective_and_examples(
            tiny_model_dir, clinic_manifests, "train.gradient_checkpointing=auto",
            f"train.max_memory_gb={limit}")
        before = torch.get_rng_state()
        decisions[limit] = decide_checkpointing(objective, base, recipe, rows, CPU, "fp32", notes.append)
        assert torch.equal(torch.get_rng_state(), before)  # the measurement leaves training's RNG alone
        assert all(p.grad is None for p in objective.parameters())
        wrapped = hasattr(base.model.encoder.encoders[0].forward, "__wrapped__")
        assert wrapped == decisions[limit]
    assert decisions == {0.01: True, 100.0: False}
    assert "on (auto" in notes[0] and "off (auto" in notes[1]


def test_a_compiled_run_trains_as_the_uncompiled_one(tiny_model_dir, clinic_manifests, tmp_path):
    """train.compile: true (the eager backend, which needs no compiler here; bucket padding is
    checked above, and in training it changes the dropout masks, so it is off here): the same
    losses step by step as without compile."""
    import json

    from svlora.finetune import load_recipe, train_recipe
    from svlora.recipes import recipe_path
    from tests.finetune.test_training_features import overrides

    settings = ["train.max_steps=8", "train.eval_every=8", "optim.warmup_steps=2", "logging.every=4"]

    def run(name, *extra):
        torch._dynamo.reset()
        train_recipe(load_recipe(recipe_path("tiny_demo"), overrides(
            tiny_model_dir, clinic_manifests, tmp_path / name, *settings, *extra)))
        return [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    plain = run("plain")
    compiled = run("compiled", "train.compile=true", "train.compile_backend=eager", "train.compile_bucket_frames=1")
    assert len(compiled) == len(plain) == 8
    for ours, theirs in zip(compiled, plain):
        assert abs(ours - theirs) <= 1e-4 * max(1.0, abs(theirs)), (ours, theirs)
