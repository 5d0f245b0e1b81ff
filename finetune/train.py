"""`svlora train`: the training loop. AdamW, warmup + schedule, clipping, bf16 autocast,
gradient checkpointing, periodic validation with a retention guard, best kept, resumable
checkpoints, DDP through accelerate (`accelerate launch -m svlora.cli train ...`)."""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from svlora.adapter_format import replace_dir, save_adapter
from svlora.decoding import transcribe_features
from svlora.errors import SvloraError
from svlora.finetune.checkpoint import load_checkpoint, save_checkpoint
from svlora.finetune.data import (Example, build_examples, collate, epoch_examples, make_batches,
                                  spec_augment)
from svlora.finetune.lora import (attach_lora, check_trainable, settings_for_labels,
                                  trainable_summary)
from svlora.finetune.memory import (PeakMemory, autocast, enable_gradient_checkpointing,
                                    resolve_precision, worst_case_batch)
from svlora.finetune.objective import SenseVoiceObjective, loss_parts
from svlora.finetune.recipe import Recipe
from svlora.finetune.run_log import MetricsLog, plot_curves, write_run_info
from svlora.io import require_output_dir, write_text_atomic
from svlora.label_schema import SCHEMA_FILE, LabelSchema, load_schema, schema_beside, write_schema
from svlora.manifest import read_manifest
from svlora.metrics import accuracy, corpus_cer
from svlora.model import (BaseModel, load_base_model, log_note, resolve_device, weights_sha256,
                          write_model_dir)

HIGHER_IS_BETTER = {"val_emotion_accuracy"}


@dataclass
class TrainResult:
    output: Path                 # OUT/adapter (lora) or OUT/model (full), the best checkpoint
    best: dict | None            # the metrics record of the best validation
    trainable: int
    total_parameters: int
    seconds: float
    model: torch.nn.Module       # the trained module as it ended (last step, not best)
    stopped_early: bool = False
    is_main_process: bool = True  # False on the other ranks of a multi-process run


def learning_rate_factor(step: int, warmup: int, total: int, schedule: str = "cosine",
                         min_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine or linear decay to `min_ratio` of the peak, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def decoded_scores(base: BaseModel, examples: list[Example]) -> tuple[float, float]:
    """CER and emotion accuracy (over the clips that have an emotion) of greedy decoding, each
    clip with its own row's ITN query as eval decodes it: val_cer measures what the report does."""
    itn = [e.row.itn_query for e in examples]
    outputs = [base.labels.split(text)
               for text in transcribe_features(base, [e.features for e in examples], itn=itn)]
    languages = [e.row.text_language.strip("<|>") for e in examples]
    return (corpus_cer([e.row.target for e in examples], [o["text"] for o in outputs], languages),
            accuracy([e.row.emo_target for e in examples if e.row.has_emotion],
                     [o["emotion"] for e, o in zip(examples, outputs) if e.row.has_emotion]))


@torch.no_grad()
def validate(base: BaseModel, objective: SenseVoiceObjective, examples: list[Example],
             retention: list[Example], recipe: Recipe, device: torch.device,
             precision: str) -> dict:
    """Validation loss, CER and emotion accuracy; retention CER when a retention set is given.

    FunASR's encode replaces the language query at random (p=0.2) even in eval mode, so the
    loss runs under a fixed seed: the same on every rank and after a resume.
    """
    objective.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        record = validation_loss(objective, examples, recipe, device, precision)
    cer, emotion_accuracy = decoded_scores(base, examples)
    record.update(val_cer=cer, val_emotion_accuracy=emotion_accuracy)
    if retention:
        record["retention_cer"] = decoded_scores(base, retention)[0]
    objective.train()
    return record


def validation_loss(objective: SenseVoiceObjective, examples: list[Example], recipe: Recipe,
                    device: torch.device, precision: str) -> dict:
    total_loss, total_clips = 0.0, 0
    for batch in make_batches(examples, recipe.data.max_seconds_per_batch, rng=None):
        inputs = collate(batch, device)
        with autocast(device, precision):
            loss, _ = objective(**inputs)
        total_loss += float(loss) * len(batch)
        total_clips += len(batch)
    return {"val_loss": total_loss / max(1, total_clips)}


def require_finite_validation(record: dict, recipe: Recipe) -> None:
    """A NaN or infinite validation score is never "best": the run stops (exit 1), keeping the
    last finite checkpoint and best adapter."""
    broken = {k: record[k] for k in ("val_loss", "val_cer", "val_emotion_accuracy", "retention_cer")
              if k in record and not math.isfinite(record[k])}
    if broken:
        raise SvloraError(f"step {record['step']}: validation became non-finite ({broken}); the last "
                          f"finite checkpoint is kept in {recipe.out}/checkpoint and the best "
                          f"adapter in {recipe.out}/adapter; lower optim.lr and --resume, or check the data")


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def planned_steps(recipe: Recipe, examples: list[Example], replay: list[Example],
                  world_size: int = 1) -> int:
    """train.max_steps, or train.epochs passes over the training batches when epochs > 0.
    Each step consumes one batch per process, so an epoch is batches / processes steps."""
    if recipe.train.epochs <= 0:
        return recipe.train.max_steps
    batches = epoch_batches(recipe, examples, replay, epoch=0, world_size=world_size)
    return recipe.train.epochs * len(batches) // world_size


def epoch_batches(recipe: Recipe, examples: list[Example], replay: list[Example], epoch: int,
                  world_size: int = 1) -> list[list[Example]]:
    """The batches of one epoch, a pure function of (seed, epoch): resumes replay them exactly."""
    rng = random.Random(recipe.train.seed * 1_000_003 + epoch)
    clips = epoch_examples(examples, replay, recipe.data.replay_ratio,
                           recipe.data.balance_emotions, rng)
    batches = make_batches(clips, recipe.data.max_seconds_per_batch, rng)
    usable = len(batches) - len(batches) % world_size  # every rank steps on every step
    if usable == 0:
        raise SvloraError(f"{len(batches)} batch(es) per epoch cannot feed {world_size} processes")
    return batches[:usable]


def build_objective(base: BaseModel, recipe: Recipe,
                    device: torch.device) -> tuple[SenseVoiceObjective, torch.nn.Module, dict]:
    """The loss module over the recipe's trainable model (LoRA attached and policed, or every
    weight), with gradient checkpointing if asked; also the trainable model and its counts."""
    # The recipe's `augment` is the only augmentation: FunASR's own SpecAugLFR (declared in
    # SenseVoiceSmall's config.yaml) would otherwise run inside `encode` on every training step.
    base.model.specaug = None
    if recipe.mode == "lora":
        settings, added = settings_for_labels(recipe.lora, base.labels)
        model = attach_lora(base.model, settings)
        summary = trainable_summary(model)
        check_trainable(summary, settings)
        summary["modules_to_save"] = settings.modules_to_save
        summary["added_for_new_labels"] = added
    else:
        model = base.model
        summary = trainable_summary(model)
    if recipe.train.gradient_checkpointing:
        enable_gradient_checkpointing(base.model)
    objective = SenseVoiceObjective(model, base.model, recipe.loss.ctc_weight,
                                    recipe.loss.rich_weight).to(device)
    return objective, model, summary


def training_labels(recipe: Recipe) -> LabelSchema:
    """data.labels if the recipe names one, else the labels.json prepare wrote beside the
    training manifest, else SenseVoice's."""
    return load_schema(recipe.data.labels) if recipe.data.labels else schema_beside(recipe.data.train)


def make_accelerator(device: torch.device):
    from accelerate import Accelerator

    return Accelerator(cpu=device.type == "cpu", step_scheduler_with_optimizer=False)


def train_recipe(recipe: Recipe, overwrite: bool = False, resume: bool = False,
                 log=print) -> TrainResult:
    """Run the recipe; write OUT/adapter (lora) or OUT/model (full), OUT/checkpoint,
    metrics.jsonl, curves.png, run.json and recipe.yaml."""
    out = Path(recipe.out)
    if (out / "metrics.jsonl").exists() and not (overwrite or resume):
        raise SvloraError(f"{out} already holds a training run; pass --resume to continue it, "
                          "--overwrite to replace it, or set out=ANOTHER_DIR")
    if overwrite and resume:
        raise SvloraError("--overwrite and --resume contradict each other: choose one")
    accelerator = make_accelerator(torch.device(resolve_device(recipe.train.device)))
    if not accelerator.is_main_process:
        return run_training(recipe, accelerator, resume, log)
    require_output_dir(out, "out=")
    with RunLock(out):
        if overwrite:
            clear_run(out)
        return run_training(recipe, accelerator, resume, log)


def clear_run(out: Path) -> None:
    """--overwrite: the old run's checkpoints, adapter, model and logs go before the new run
    starts, so a later --resume can never continue the old one."""
    for name in ("checkpoint", "adapter", "model", "tensorboard", "wandb"):
        shutil.rmtree(out / name, ignore_errors=True)
    for leftover in (*out.glob(".checkpoint*"), *out.glob(".adapter*"), *out.glob(".model*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for name in ("metrics.jsonl", "curves.png", "run.json"):
        (out / name).unlink(missing_ok=True)


class RunLock:
    """OUT/.lock holding the training process's pid: a second run into the same OUT refuses,
    naming the holder; a lock whose process is gone is taken over."""

    def __init__(self, out: Path):
        self.path = out / ".lock"

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.path.read_text().strip() or "?"
                if holder.isdigit() and process_alive(int(holder)):
                    raise SvloraError(f"{self.path.parent} is in use by another svlora train "
                                      f"(pid {holder}); wait for it, or use another out=") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(os.getpid()))
            return self
        raise SvloraError(f"{self.path}: cannot take the run lock; remove it if no run is active")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_training(recipe: Recipe, accelerator, resume: bool, log) -> TrainResult:
    out = Path(recipe.out)
    device, main = accelerator.device, accelerator.is_main_process
    if main:
        write_text_atomic(out / "recipe.yaml", yaml.safe_dump(asdict(recipe), sort_keys=False))
    seed_everything(recipe.train.seed)
    precision = resolve_precision(recipe.train.precision, device)
    base = load_base_model(recipe.model, device=str(device), hub=recipe.hub,
                           trust_remote_code=recipe.trust_remote_code,
                           log=log_note if main else None)
    base_sha256 = weights_sha256(base.model_dir)
    labels = training_labels(recipe)
    base.use_labels(labels)
    cache = recipe.data.feature_cache
    # every manifest is read against the training schema: a row it cannot express is an error
    manifests = {name: read_manifest(path, labels) if path else None for name, path in (
        ("train", recipe.data.train), ("val", recipe.data.val), ("replay", recipe.data.replay),
        ("retention", recipe.data.retention))}
    train_examples = build_examples(base, manifests["train"], "train features", cache)
    val_examples = build_examples(base, manifests["val"], "val features", cache)
    replay = build_examples(base, manifests["replay"], "replay features", cache,
                            replay=True) if recipe.data.replay else []
    retention = build_examples(base, manifests["retention"], "retention features",
                               cache) if recipe.data.retention else []

    objective, trainable_model, summary = build_objective(base, recipe, device)
    log(f"trainable parameters: {summary['trainable']:,} of {summary['total']:,} "
        f"({100 * summary['trainable'] / summary['total']:.2f}%), mode={recipe.mode}, "
        f"precision={precision}, processes={accelerator.num_processes}")
    if summary.get("added_for_new_labels"):
        log(f"label schema has new classes ({', '.join(t[2:-2] for t in labels.new_tags())}): "
            f"also training {', '.join(summary['added_for_new_labels'])} (lora.modules_to_save)")
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.optim.lr,
                                  weight_decay=recipe.optim.weight_decay)
    total_steps = planned_steps(recipe, train_examples, replay, accelerator.num_processes)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, recipe.optim.warmup_steps, total_steps, recipe.optim.schedule,
        recipe.optim.min_lr_ratio))
    state = {"step": 0, "epoch": 0, "batch_index": 0, "best_value": None, "best_metrics": None,
             "evals_without_improvement": 0, "base_retention_cer": None}
    if resume:
        loaded = load_checkpoint(out, objective)
        optimizer.load_state_dict(loaded.pop("optimizer"))
        scheduler.load_state_dict(loaded.pop("scheduler"))
        state.update(loaded)
        log(f"resuming {out} at step {state['step']}")
    elif retention:
        state["base_retention_cer"] = decoded_scores(base, retention)[0]
        log(f"retention CER before training: {state['base_retention_cer']:.4f}")
    objective, optimizer = accelerator.prepare(objective, optimizer)
    if main:
        write_run_info(out, recipe, {"device": str(device), "precision": precision,
                                     "processes": accelerator.num_processes,
                                     "base_sha256": base_sha256, "total_steps": total_steps,
                                     "trainable_parameters": summary["trainable"],
                                     "modules_to_save": summary.get("modules_to_save", []),
                                     "labels": labels.to_dict()})
    metrics_log = MetricsLog(out, recipe, state["step"] if resume else None) if main else None
    started = time.time()
    stopped_early = False
    checkpoint_every = recipe.train.checkpoint_every or recipe.train.eval_every
    batches = epoch_batches(recipe, train_examples, replay, state["epoch"], accelerator.num_processes)
    objective.train()
    try:
        with tqdm(total=total_steps, initial=state["step"], desc="training", unit="step",
                  disable=not main) as progress:
            while state["step"] < total_steps:
                if state["batch_index"] >= len(batches):
                    state["epoch"] += 1
                    state["batch_index"] = 0
                    batches = epoch_batches(recipe, train_examples, replay, state["epoch"],
                                            accelerator.num_processes)
                batch = batches[state["batch_index"] + accelerator.process_index]
                state["batch_index"] += accelerator.num_processes
                state["step"] += 1
                step = state["step"]
                record = train_step(objective, optimizer, scheduler, parameters, batch, recipe,
                                    device, precision, accelerator, step)
                record["elapsed_s"] = round(time.time() - started, 2)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.3f}")
                if step % recipe.train.eval_every == 0 or step == total_steps:
                    record.update(validate(base, accelerator.unwrap_model(objective), val_examples,
                                           retention, recipe, device, precision))
                    require_finite_validation(record, recipe)
                    stopped_early = consider_best(record, state, recipe, trainable_model, base,
                                                  base_sha256, summary, main)
                    if main:
                        tqdm.write(f"step {step}: " + ", ".join(
                            f"{k}={record[k]:.4f}" for k in ("val_loss", "val_cer",
                                                             "val_emotion_accuracy", "retention_cer")
                            if k in record))
                if main:
                    metrics_log.write(record)
                if main and (step % checkpoint_every == 0 or step == total_steps or stopped_early):
                    save_checkpoint(out, accelerator.unwrap_model(objective), {
                        **state, "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict()})
                if stopped_early:
                    log(f"early stop at step {step}: {recipe.train.select_metric} did not improve "
                        f"in {recipe.train.early_stopping_patience} evaluations")
                    break
    finally:
        if main:
            metrics_log.close()
            plot_curves(out / "metrics.jsonl", out / "curves.png")
    accelerator.wait_for_everyone()
    return TrainResult(output=out / ("adapter" if recipe.mode == "lora" else "model"),
                       best=state["best_metrics"], trainable=summary["trainable"],
                       total_parameters=summary["total"], seconds=round(time.time() - started, 1),
                       model=trainable_model, stopped_early=stopped_early, is_main_process=main)


def train_step(objective, optimizer, scheduler, parameters, batch, recipe: Recipe,
               device: torch.device, precision: str, accelerator, step: int) -> dict:
    """One optimizer step on one batch; a non-finite loss stops the run naming the clips."""
    inputs = collate(batch, device)
    if recipe.augment.specaugment:
        generator = torch.Generator().manual_seed(recipe.train.seed * 7919 + step)
        inputs["speech"] = spec_augment(inputs["speech"].cpu(), inputs["speech_lengths"].cpu(),
                                        recipe.augment, generator).to(device)
    with autocast(device, precision):
        loss, parts = objective(**inputs)
    if not torch.isfinite(loss):
        raise SvloraError(f"step {step}: loss is {loss.item()}; batch clips: "
                          f"{', '.join(e.row.key for e in batch)}; the last good checkpoint is "
                          f"in {recipe.out}/checkpoint; lower optim.lr or check these clips")
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(parameters, recipe.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    # clips stepped on by every process together: proof that each rank trained
    all_clips = accelerator.reduce(torch.tensor(len(batch), device=device), reduction="sum")
    return {"step": step, "loss": loss.item(), **loss_parts(parts), "grad_norm": float(grad_norm),
            "lr": scheduler.get_last_lr()[0], "clips": len(batch), "clips_all_ranks": int(all_clips),
            "replay_clips": sum(e.replay for e in batch)}


def consider_best(record: dict, state: dict, recipe: Recipe, trainable_model, base: BaseModel,
                  base_sha256: str, summary: dict, main: bool) -> bool:
    """Keep the checkpoint if it is the best that passes the retention guard; True = stop."""
    metric = recipe.train.select_metric
    guard_ok = True
    if state["base_retention_cer"] is not None and "retention_cer" in record:
        record["retention_guard_ok"] = guard_ok = \
            record["retention_cer"] <= state["base_retention_cer"] + recipe.train.retention_guard
    if guard_ok and is_better(record[metric], state["best_value"], metric):
        state["best_value"], state["best_metrics"] = record[metric], dict(record)
        state["evals_without_improvement"] = 0
        if main:
            save_best(recipe, trainable_model, base, base_sha256, dict(record), summary)
        return False
    state["evals_without_improvement"] += 1
    patience = recipe.train.early_stopping_patience
    return patience > 0 and state["evals_without_improvement"] >= patience


def save_best(recipe: Recipe, trainable_model, base: BaseModel, base_sha256: str,
              metrics: dict, summary: dict) -> None:
    out = Path(recipe.out)
    if recipe.mode == "lora":
        save_adapter(trainable_model, out / "adapter", {
            "base_model": str(recipe.model), "base_sha256": base_sha256,
            "recipe": asdict(recipe), "val_metrics": metrics,
            "trainable_parameters": summary["trainable"]}, labels=base.labels)
    else:
        staging = out / ".model.staging"
        write_model_dir(base.model.state_dict(), base.model_dir, staging)
        if not base.labels.is_default:  # the model dir decodes into its labels when loaded
            write_schema(staging / SCHEMA_FILE, base.labels)
        replace_dir(staging, out / "model")


def preflight(recipe: Recipe, log=print) -> dict:
    """One forward/backward/step on the largest batch the recipe can make; peak memory
    checked against train.max_memory_gb."""
    device = torch.device(resolve_device(recipe.train.device))
    precision = resolve_precision(recipe.train.precision, device)
    seed_everything(recipe.train.seed)
    base = load_base_model(recipe.model, device=str(device), hub=recipe.hub,
                           trust_remote_code=recipe.trust_remote_code)
    base.use_labels(training_labels(recipe))
    objective, _, summary = build_objective(base, recipe, device)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad],
                                  lr=recipe.optim.lr)
    batch = worst_case_batch(read_manifest(recipe.data.train), recipe.data.max_seconds_per_batch,
                             device)
    objective.train()
    with PeakMemory(device) as peak:
        started = time.time()
        with autocast(device, precision):
            loss, _ = objective(batch["speech"], batch["speech_lengths"], batch["text"],
                                batch["text_lengths"])
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.time() - started
    result = {"peak_gib": round(peak.gib, 3), "memory": peak.kind, "batch_clips": batch["clips"],
              "batch_audio_seconds": round(batch["seconds"], 1), "step_seconds": round(seconds, 3),
              "precision": precision, "device": str(device),
              "gradient_checkpointing": recipe.train.gradient_checkpointing,
              "trainable_parameters": summary["trainable"], "limit_gib": recipe.train.max_memory_gb}
    log(f"preflight: {batch['clips']} clips x {batch['seconds'] / batch['clips']:.1f}s "
        f"({batch['seconds']:.0f}s padded audio), {precision}, one step {seconds:.2f}s, "
        f"peak {peak.kind} {peak.gib:.2f} GiB (limit {recipe.train.max_memory_gb} GiB)")
    if peak.gib > recipe.train.max_memory_gb:
        raise SvloraError(
            f"preflight peak {peak.gib:.2f} GiB exceeds train.max_memory_gb="
            f"{recipe.train.max_memory_gb}: lower data.max_seconds_per_batch, set "
            "train.gradient_checkpointing=true, train.precision=bf16 (GPU), or a smaller lora.r")
    return result
