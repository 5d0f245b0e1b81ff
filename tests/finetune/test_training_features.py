"""Resume, NaN handling, multi-process DDP, replay/retention, balancing, SpecAugment,
preflight, logging sinks and the trained parameter set."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from svlora.errors import SvloraError
from svlora.feature_cache import FeatureCache
from svlora.finetune import load_recipe, train_recipe
from svlora.finetune.data import Example, epoch_examples, spec_augment
from svlora.finetune.lora import attach_lora, trainable_summary
from svlora.finetune.recipe import AugmentSettings, LoraSettings
from svlora.finetune.train import consider_best, preflight
from svlora.io import sha256_file
from svlora.manifest import read_manifest
from svlora.model import load_base_model
from svlora.recipes import recipe_path
from tests.finetune.test_train import short_recipe

ROOT = Path(__file__).resolve().parents[2]


def overrides(model_dir, manifests, out, *extra) -> list[str]:
    return [f"model={model_dir}", f"out={out}", f"data.train={manifests}/train.jsonl",
            f"data.val={manifests}/val.jsonl", "train.device=cpu", *extra]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_to_the_same_adapter(tiny_model_dir, clinic_manifests, tmp_path):
    # two micro-batches a step, figures read every 3 steps (not at the checkpoints): the deferred
    # reads and the accumulation must resume exactly too
    settings = ["train.max_steps=40", "train.eval_every=20", "train.checkpoint_every=5",
                "optim.warmup_steps=5", "lora.dropout=0.1", "augment.specaugment=true",
                "train.grad_accum_steps=2", "logging.every=3"]
    reference = train_recipe(load_recipe(recipe_path("tiny_demo"), overrides(
        tiny_model_dir, clinic_manifests, tmp_path / "whole", *settings)))
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "svlora.cli", "train", "tiny_demo",
               *overrides(tiny_model_dir, clinic_manifests, killed, *settings)]
    # the same intra-op thread count as this process's runs: float sums then add up alike
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state_file = killed / "checkpoint" / "trainer_state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file():
            try:
                if torch.load(state_file, weights_only=True)["step"] >= 10:
                    break
            except (RuntimeError, EOFError, FileNotFoundError):  # being replaced right now
                pass
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = torch.load(state_file, weights_only=True)["step"]
    assert 10 <= killed_at < 40

    resumed = train_recipe(load_recipe(recipe_path("tiny_demo"), overrides(
        tiny_model_dir, clinic_manifests, killed, *settings)), resume=True)
    assert resumed.best["step"] == reference.best["step"]
    a = load_file(tmp_path / "whole/adapter/adapter_model.safetensors")
    b = load_file(killed / "adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    steps = [r["step"] for r in metrics(killed)]
    assert steps == list(range(1, 41))  # steps after the checkpoint were logged once
    whole_losses = [r["loss"] for r in metrics(tmp_path / "whole")]
    assert [r["loss"] for r in metrics(killed)] == pytest.approx(whole_losses, rel=1e-4)


def test_resume_without_a_checkpoint_is_refused(tiny_model_dir, clinic_manifests, tmp_path):
    recipe = load_recipe(recipe_path("tiny_demo"), overrides(tiny_model_dir, clinic_manifests, tmp_path))
    with pytest.raises(SvloraError, match="no checkpoint to resume from"):
        train_recipe(recipe, resume=True)


@pytest.mark.parametrize("reads", ["every step", "deferred"])
def test_a_nan_loss_stops_naming_the_clip_and_keeps_the_checkpoint(tiny_model_dir, clinic_manifests,
                                                                   tmp_path, reads):
    rows = read_manifest(clinic_manifests / "train.jsonl")
    base = load_base_model(str(tiny_model_dir))
    cache = FeatureCache(tmp_path / "cache", base.frontend)
    poisoned = rows[5]
    features = base.features(__import__("svlora.audio", fromlist=["load_audio"]).load_audio(poisoned.source))
    features[3, 7] = float("nan")
    cache.store(sha256_file(poisoned.source), features)
    recipe = load_recipe(recipe_path("tiny_demo"), overrides(
        tiny_model_dir, clinic_manifests, tmp_path / "run", f"data.feature_cache={tmp_path / 'cache'}",
        "train.max_steps=200", "train.eval_every=100",
        *(["train.checkpoint_every=1"] if reads == "every step" else
          ["train.checkpoint_every=7", "logging.every=4"])))  # several steps wait to be read
    with pytest.raises(SvloraError, match=rf"step (\d+): loss is nan; batch clips: .*{poisoned.key}") as stop:
        train_recipe(recipe)
    nan_step = int(re.search(r"step (\d+):", str(stop.value)).group(1))
    state = torch.load(tmp_path / "run/checkpoint/trainer_state.pt", weights_only=True)
    good_steps = [r["step"] for r in metrics(tmp_path / "run")]
    assert good_steps == list(range(1, nan_step))  # every finite step before it is logged, none after
    assert state["step"] <= nan_step - 1  # what is kept was saved before the bad step
    if reads == "every step":
        assert state["step"] == nan_step - 1
    from svlora.finetune.checkpoint import WEIGHTS

    kept = load_file(tmp_path / "run/checkpoint" / WEIGHTS)
    assert kept and all(torch.isfinite(weight).all() for weight in kept.values())


def test_two_processes_step_and_train_the_epochs_asked(tiny_model_dir, clinic_manifests, tmp_path):
    from svlora.finetune.data import build_examples
    from svlora.finetune.train import epoch_batches

    out = tmp_path / "ddp"
    settings = overrides(tiny_model_dir, clinic_manifests, out, "train.epochs=1",
                         "train.eval_every=1000", "data.max_seconds_per_batch=40")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "29517", "-m", "svlora.cli",
               "train", "tiny_demo", *settings]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert completed.returncode == 0, completed.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2
    # one epoch = each batch seen once across both ranks = batches / 2 steps (not batches)
    recipe = load_recipe(recipe_path("tiny_demo"), settings)
    base = load_base_model(str(tiny_model_dir))
    examples = build_examples(base, read_manifest(recipe.data.train), "train")
    batches = epoch_batches(recipe, examples, [], epoch=0, world_size=2)
    assert len(batches) >= 4 and run["total_steps"] == len(batches) // 2
    records = metrics(out)
    assert [r["step"] for r in records] == list(range(1, len(batches) // 2 + 1))
    assert sum(r["clips_all_ranks"] for r in records) == sum(len(b) for b in batches)
    assert all(r["clips_all_ranks"] > r["clips"] for r in records)  # rank 1 stepped too
    assert completed.stdout.count("wrote ") == 1  # only the main process reports
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "adapter"))) == ["adapter"]


def fake_examples(labels: list[str], replay: bool = False) -> list[Example]:
    from svlora.manifest import ManifestRow

    return [Example(ManifestRow(key=f"{label}{i}{replay}", source="x", source_len=100, target="t",
                                target_len=1, text_language="<|en|>", emo_target=label,
                                event_target="<|Speech|>", with_or_wo_itn="<|woitn|>"),
                    torch.zeros(10, 560), torch.zeros(5), replay) for i, label in enumerate(labels)]


def test_replay_mixes_the_general_domain_at_the_ratio():
    domain = fake_examples(["<|SAD|>"] * 300)
    general = fake_examples(["<|NEUTRAL|>"] * 1000, replay=True)
    clips = epoch_examples(domain, general, 0.25, False, random.Random(0))
    assert len(clips) == 400 and sum(c.replay for c in clips) == 100
    assert len({c.row.key for c in clips if c.replay}) == 100  # drawn without repeats


def test_balanced_sampling_evens_out_emotions():
    domain = fake_examples(["<|SAD|>"] * 900 + ["<|HAPPY|>"] * 100)
    counts = Counter(c.row.emo_target for c in epoch_examples(domain, [], 0.0, True, random.Random(0)))
    assert sum(counts.values()) == 1000 and 400 < counts["<|HAPPY|>"] < 600


def test_replay_in_a_run_is_logged(tiny_model_dir, clinic_manifests, tmp_path):
    recipe = load_recipe(recipe_path("tiny_demo"), overrides(
        tiny_model_dir, clinic_manifests, tmp_path, f"data.replay={clinic_manifests}/test.jsonl",
        "data.replay_ratio=0.3", f"data.retention={clinic_manifests}/test.jsonl",
        "train.max_steps=6", "train.eval_every=3", "train.retention_guard=0.5"))
    train_recipe(recipe)
    records = metrics(tmp_path)
    replayed = sum(r["replay_clips"] for r in records) / sum(r["clips"] for r in records)
    assert 0.1 < replayed < 0.5
    assert "retention_cer" in records[2] and "retention_guard_ok" in records[2]


def test_retention_guard_and_early_stopping_decide_the_best():
    recipe = load_recipe(recipe_path("tiny_demo"), ["train.select_metric=val_cer",
                                                    "train.retention_guard=0.01",
                                                    "train.early_stopping_patience=2"])
    state = {"best_value": None, "best_metrics": None, "evals_without_improvement": 0,
             "base_retention_cer": 0.10}
    decide = lambda record: consider_best(record, state, recipe, None, None, "", {}, main=False)  # noqa: E731
    assert decide({"step": 1, "val_cer": 0.5, "retention_cer": 0.105}) is False
    assert state["best_metrics"]["step"] == 1
    # better on the domain but general CER rose by 5 points: not kept
    assert decide({"step": 2, "val_cer": 0.3, "retention_cer": 0.15}) is False
    assert state["best_metrics"]["step"] == 1
    assert decide({"step": 3, "val_cer": 0.6, "retention_cer": 0.10}) is True  # 2nd eval, no gain


def test_specaugment_masks_bands_and_spans_deterministically():
    features = torch.randn(2, 50, 560)
    lengths = torch.tensor([50, 30])

    def augment(freq_masks: int, time_masks: int, seed: int = 3) -> torch.Tensor:
        settings = AugmentSettings(specaugment=True, freq_masks=freq_masks, freq_width=10,
                                   time_masks=time_masks, time_width=5)
        return spec_augment(features, lengths, settings, torch.Generator().manual_seed(seed))

    assert torch.equal(augment(2, 2), augment(2, 2)) and not torch.equal(augment(2, 2, 4), augment(2, 2))
    bands = (augment(2, 0) == 0).view(2, 50, 7, 80)
    assert bands.any()
    # a band masks the same mel bins in every frame and in every stacked LFR frame
    assert torch.equal(bands, bands[:, :1, :1, :].expand_as(bands))
    spans = (augment(0, 2) == 0)
    frames_masked = spans.all(dim=2)
    assert frames_masked.any() and torch.equal(spans.any(dim=2), frames_masked)  # whole frames
    assert not frames_masked[1, 30:].any()  # spans stay inside the clip, not its padding


@pytest.mark.parametrize("targets, modules_to_save, expected_layers", [
    (["attention"], [], {"linear_q_k_v", "linear_out"}),
    (["ffn"], [], {"w_1", "w_2"}),
    (["attention", "ffn"], ["ctc_head", "query_embed"], {"linear_q_k_v", "linear_out", "w_1", "w_2"}),
])
def test_the_trained_parameter_set_is_the_recipes(tiny_model_dir, targets, modules_to_save,
                                                   expected_layers):
    base = load_base_model(str(tiny_model_dir))
    linear_layers = [name for name, module in base.model.named_modules()
                     if isinstance(module, torch.nn.Linear) and name.startswith("encoder.")
                     and name.rsplit(".", 1)[-1] in expected_layers]
    model = attach_lora(base.model, LoraSettings(targets=targets, r=2, alpha=4,
                                                 modules_to_save=modules_to_save))
    trained = set(trainable_summary(model)["trainable_names"])
    expected = {f"base_model.model.{layer}.lora_{ab}.default.weight" for layer in linear_layers
                for ab in "AB"}
    if "ctc_head" in modules_to_save:
        expected |= {f"base_model.model.ctc.ctc_lo.modules_to_save.default.{p}" for p in ("weight", "bias")}
    if "query_embed" in modules_to_save:
        expected |= {"base_model.model.embed.modules_to_save.default.weight"}
    assert trained == expected


def test_rslora_and_dora_train(tiny_model_dir, clinic_manifests, tmp_path):
    recipe = short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "lora.use_dora=true",
                          "lora.use_rslora=true", "train.max_steps=2", "train.eval_every=2")
    result = train_recipe(recipe)
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"]
    assert any("lora_magnitude_vector" in n for n in load_file(tmp_path / "adapter/adapter_model.safetensors"))
    assert result.best["step"] == 2


def test_preflight_reports_peak_memory_and_enforces_the_limit(tiny_model_dir, clinic_manifests):
    recipe = load_recipe(recipe_path("tiny_demo"), overrides(tiny_model_dir, clinic_manifests, "unused"))
    report = preflight(recipe)
    rows = read_manifest(clinic_manifests / "train.jsonl")
    longest = max(r.source_len for r in rows) / 100
    assert report["batch_clips"] >= 1 and report["batch_audio_seconds"] <= 20.0 + longest
    assert 0 < report["peak_gib"] < recipe.train.max_memory_gb
    strict = load_recipe(recipe_path("tiny_demo"), overrides(
        tiny_model_dir, clinic_manifests, "unused", "train.max_memory_gb=0.01"))
    with pytest.raises(SvloraError, match="exceeds train.max_memory_gb=0.01: lower data.max_seconds"):
        preflight(strict)


def test_logging_sinks_curves_and_run_record(tiny_model_dir, clinic_manifests, tmp_path):
    recipe = short_recipe(tiny_model_dir, clinic_manifests, tmp_path, "logging.tensorboard=true",
                          "logging.wandb=true", "train.max_steps=2", "train.eval_every=2")
    env = {k: os.environ.pop(k) for k in ("WANDB_MODE",) if k in os.environ}
    try:
        train_recipe(recipe)
    finally:
        os.environ.update(env)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 0 and run["versions"]["torch"] == torch.__version__
    assert run["manifests"]["train"]["sha256"] == sha256_file(clinic_manifests / "train.jsonl")
