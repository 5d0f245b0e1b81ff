"""`svlora train`: the training loop. AdamW, warmup + schedule, clipping, bf16 autocast,
gradient checkpointing, periodic validation with a retention guard, best kept, resumable
checkpoints, DDP through accelerate (`accelerate launch -m svlora.cli train ...`)."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
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
from svlora.finetune.data import (Example, build_examples, clip_frames, collate, epoch_examples,
                                  make_batches, spec_augment)
from svlora.finetune.lora import (attach_lora, check_trainable, settings_for_labels,
                                  trainable_summary)
from svlora.finetune.memory import (GIB, PeakMemory, autocast, enable_gradient_checkpointing,
                                    resolve_base_dtype, resolve_precision, store_frozen_in_bf16,
                                    worst_case_batch)
from svlora.finetune.objective import SenseVoiceObjective
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


def bucket_frames(recipe: Recipe) -> int:
    """Every batch (training, validation loss, validation decoding) padded to a multiple of
    this many frames under train.compile, so the compiled encoder reuses its shapes; else 0."""
    return recipe.train.compile_bucket_frames if recipe.train.compile else 0


def decoded_scores(base: BaseModel, examples: list[Example], bucket: int = 0) -> tuple[float, float]:
    """CER and emotion accuracy (over the clips that have an emotion) of greedy decoding, each
    clip with its own row's ITN query as eval decodes it: val_cer measures what the report does."""
    itn = [e.row.itn_query for e in examples]
    outputs = [base.labels.split(text) for text in
               transcribe_features(base, [e.features for e in examples], itn=itn, bucket_frames=bucket)]
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
    cer, emotion_accuracy = decoded_scores(base, examples, bucket_frames(recipe))
    record.update(val_cer=cer, val_emotion_accuracy=emotion_accuracy)
    if retention:
        record["retention_cer"] = decoded_scores(base, retention, bucket_frames(recipe))[0]
    objective.train()
    return record


def validation_loss(objective: SenseVoiceObjective, examples: list[Example], recipe: Recipe,
                    device: torch.device, precision: str) -> dict:
    total_loss, total_clips = torch.zeros((), device=device), 0
    for batch in make_batches(examples, recipe.data.max_seconds_per_batch, rng=None):
        inputs = collate(batch, device, bucket_frames(recipe))
        with autocast(device, precision):
            loss, _ = objective(**inputs)
        total_loss += loss.float() * len(batch)
        total_clips += len(batch)
    return {"val_loss": float(total_loss) / max(1, total_clips)}  # one read for all batches


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
    Each step consumes grad_accum_steps batches per process, so an epoch is
    batches / (processes x accumulation) steps."""
    if recipe.train.epochs <= 0:
        return recipe.train.max_steps
    batches = epoch_batches(recipe, examples, replay, epoch=0, world_size=world_size)
    return recipe.train.epochs * len(batches) // (world_size * recipe.train.grad_accum_steps)


def epoch_batches(recipe: Recipe, examples: list[Example], replay: list[Example], epoch: int,
                  world_size: int = 1) -> list[list[Example]]:
    """The batches of one epoch, a pure function of (seed, epoch): resumes replay them exactly."""
    rng = random.Random(recipe.train.seed * 1_000_003 + epoch)
    clips = epoch_examples(examples, replay, recipe.data.replay_ratio,
                           recipe.data.balance_emotions, rng)
    batches = make_batches(clips, recipe.data.max_seconds_per_batch, rng)
    per_step = world_size * recipe.train.grad_accum_steps
    usable = len(batches) - len(batches) % per_step  # every rank steps on every step
    if usable == 0:
        raise SvloraError(f"{len(batches)} batch(es) per epoch cannot feed {world_size} process(es) "
                          f"x train.grad_accum_steps={recipe.train.grad_accum_steps}; lower "
                          "grad_accum_steps or data.max_seconds_per_batch")
    return batches[:usable]


def build_objective(base: BaseModel, recipe: Recipe, device: torch.device,
                    precision: str | None = None) -> tuple[SenseVoiceObjective, torch.nn.Module, dict]:
    """The loss module over the recipe's trainable model (LoRA attached and policed, or every
    weight), frozen weights in bf16 when train.base_dtype resolves so, gradient checkpointing if
    set to true (auto is decided by `decide_checkpointing`), the encoder compiled if asked; also
    the trainable model and its counts."""
    precision = precision or resolve_precision(recipe.train.precision, device)
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
    summary["base_dtype"] = resolve_base_dtype(recipe.train.base_dtype, precision, device)
    if summary["base_dtype"] == "bf16":
        store_frozen_in_bf16(base.model)
    if recipe.train.gradient_checkpointing is True:
        enable_gradient_checkpointing(base.model)
    if recipe.train.compile:
        base.model.encoder.compile(backend=recipe.train.compile_backend)
    objective = SenseVoiceObjective(model, base.model, recipe.loss.ctc_weight,
                                    recipe.loss.rich_weight).to(device)
    return objective, model, summary


def step_peak_gib(objective: SenseVoiceObjective, batch: dict, device: torch.device,
                  precision: str) -> float:
    """Peak memory of one forward/backward on `batch` plus AdamW's two fp32 moments of the
    trainable weights (not yet allocated at this point); RNG state and gradients untouched."""
    trainable = [p for p in objective.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            PeakMemory(device) as peak:
        with autocast(device, precision):
            loss, _ = objective(batch["speech"], batch["speech_lengths"], batch["text"],
                                batch["text_lengths"])
        loss.backward()
    for parameter in trainable:
        parameter.grad = None
    return peak.gib + 2 * sum(p.numel() * 4 for p in trainable) / GIB


def decide_checkpointing(objective: SenseVoiceObjective, base: BaseModel, recipe: Recipe, rows,
                         device: torch.device, precision: str, log=print) -> bool:
    """train.gradient_checkpointing=auto: measure a step of the largest batch the recipe can
    make without checkpointing; turn it on only if that would pass train.max_memory_gb (or
    runs out of memory). True/false are taken as set."""
    setting = recipe.train.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    batch = worst_case_batch(rows, recipe.data.max_seconds_per_batch, device)
    objective.train()
    try:
        peak = step_peak_gib(objective, batch, device, precision)
    except torch.OutOfMemoryError:
        peak = math.inf
        objective.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    needed = peak > recipe.train.max_memory_gb
    if needed:
        enable_gradient_checkpointing(base.model)
    log(f"gradient checkpointing: {'on' if needed else 'off'} (auto: a {batch['seconds']:.0f} s "
        f"batch without it peaks at {peak:.2f} GiB, limit {recipe.train.max_memory_gb} GiB)")
    return needed


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

    objective, trainable_model, summary = build_objective(base, recipe, device, precision)
    log(f"trainable parameters: {summary['trainable']:,} of {summary['total']:,} "
        f"({100 * summary['trainable'] / summary['total']:.2f}%), mode={recipe.mode}, "
        f"precision={precision}, frozen weights {summary['base_dtype']}, "
        f"processes={accelerator.num_processes}")
    checkpointing = decide_checkpointing(objective, base, recipe, manifests["train"], device,
                                         precision, log if main else (lambda _: None))
    if summary.get("added_for_new_labels"):
        log(f"label schema has new classes ({', '.join(t[2:-2] for t in labels.new_tags())}): "
            f"also training {', '.join(summary['added_for_new_labels'])} (lora.modules_to_save)")
    parameters = [p for p in objective.parameters() if p.requires_grad]
    # fused on a GPU: one kernel for all weights, its step counters stay on the device (the
    # for-each AdamW reads each one back to the host every step)
    optimizer = torch.optim.AdamW(parameters, lr=recipe.optim.lr,
                                  weight_decay=recipe.optim.weight_decay, fused=device.type == "cuda")
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
        state["base_retention_cer"] = decoded_scores(base, retention, bucket_frames(recipe))[0]
        log(f"retention CER before training: {state['base_retention_cer']:.4f}")
    objective, optimizer = accelerator.prepare(objective, optimizer)
    if main:
        write_run_info(out, recipe, {"device": str(device), "precision": precision,
                                     "base_dtype": summary["base_dtype"],
                                     "gradient_checkpointing": checkpointing,
                                     "grad_accum_steps": recipe.train.grad_accum_steps,
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
    pending = PendingSteps()
    per_step = accelerator.num_processes * recipe.train.grad_accum_steps
    try:
        with tqdm(total=total_steps, initial=state["step"], desc="training", unit="step",
                  disable=not main) as progress:

            def read_back() -> list[dict]:
                """The pending steps' figures, read from the device at once; a non-finite loss
                stops the run naming its step's clips, before anything after it is saved (the
                finite steps read with it are logged first)."""
                try:
                    records = pending.read(recipe)
                except NonFiniteLoss as stop:
                    if main:
                        for record in stop.records:
                            metrics_log.write(record)
                    raise
                if records:
                    progress.set_postfix(loss=f"{records[-1]['loss']:.3f}")
                return records

            while state["step"] < total_steps:
                if state["batch_index"] >= len(batches):
                    state["epoch"] += 1
                    state["batch_index"] = 0
                    batches = epoch_batches(recipe, train_examples, replay, state["epoch"],
                                            accelerator.num_processes)
                first = state["batch_index"] + accelerator.process_index
                micro_batches = batches[first:first + per_step:accelerator.num_processes]
                state["batch_index"] += per_step
                state["step"] += 1
                step = state["step"]
                pending.add(train_step(objective, optimizer, scheduler, parameters, micro_batches,
                                       recipe, device, precision, accelerator, step),
                            elapsed_s=round(time.time() - started, 2))
                progress.update(1)
                evaluate_now = step % recipe.train.eval_every == 0 or step == total_steps
                save_now = step % checkpoint_every == 0 or step == total_steps
                if not (evaluate_now or save_now or step % recipe.logging.every == 0):
                    continue
                records = read_back()
                if evaluate_now:
                    record = records[-1]
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
                    for record in records:
                        metrics_log.write(record)
                if main and (save_now or stopped_early):
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


@dataclass
class StepFigures:
    """One optimizer step's figures, still on the device (reading them would wait for the GPU)."""

    step: int
    values: torch.Tensor        # [loss, loss_ctc, loss_rich, rich_accuracy, grad_norm]
    clips_all_ranks: torch.Tensor | int
    host: dict                  # what the host already knows: lr, clips, replay clips
    clip_keys: list[str]


FIGURE_NAMES = ("loss", "loss_ctc", "loss_rich", "rich_accuracy", "grad_norm")


class NonFiniteLoss(SvloraError):
    """A step's loss was NaN or inf; `records` are the finite steps read before it."""

    def __init__(self, message: str, records: list[dict]):
        super().__init__(message)
        self.records = records


class PendingSteps:
    """Steps not yet read back: read every logging.every steps (and before a validation or a
    checkpoint) in one device→host copy."""

    def __init__(self):
        self.steps: list[tuple[StepFigures, dict]] = []

    def add(self, figures: StepFigures, **extra) -> None:
        self.steps.append((figures, extra))

    def read(self, recipe: Recipe) -> list[dict]:
        if not self.steps:
            return []
        stacked = torch.stack([f.values for f, _ in self.steps]).float().cpu().tolist()
        clips = [int(f.clips_all_ranks) for f, _ in self.steps]
        records = []
        for (figures, extra), values, all_clips in zip(self.steps, stacked, clips):
            if not math.isfinite(values[0]):
                self.steps = []
                raise NonFiniteLoss(f"step {figures.step}: loss is {values[0]}; batch clips: "
                                    f"{', '.join(figures.clip_keys)}; the last good checkpoint is in "
                                    f"{recipe.out}/checkpoint; lower optim.lr or check these clips",
                                    records)
            records.append({"step": figures.step, **dict(zip(FIGURE_NAMES, values)),
                            **figures.host, "clips_all_ranks": all_clips, **extra})
        self.steps = []
        return records


def train_step(objective, optimizer, scheduler, parameters, micro_batches: list[list[Example]],
               recipe: Recipe, device: torch.device, precision: str, accelerator,
               step: int) -> StepFigures:
    """One optimizer step over `micro_batches` (train.grad_accum_steps of them): each
    micro-batch's loss weighted by its share of the step's clips, so the gradient is the one
    big batch's (the loss is a mean over clips). Nothing is read back from the device."""
    total_clips = sum(len(batch) for batch in micro_batches)
    bucket = bucket_frames(recipe)
    generator = torch.Generator().manual_seed(recipe.train.seed * 7919 + step)
    optimizer.zero_grad(set_to_none=True)
    values = None
    for index, batch in enumerate(micro_batches):
        inputs = collate(batch, device, bucket)
        if recipe.augment.specaugment:
            inputs["speech"] = spec_augment(inputs["speech"], clip_frames(batch), recipe.augment,
                                            generator)
        weight = len(batch) / total_clips
        last = index == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(objective):
            with autocast(device, precision):
                loss, parts = objective(**inputs)
            accelerator.backward(loss * weight if len(micro_batches) > 1 else loss)
        figures = torch.cat([loss.detach().float()[None], parts]) * weight
        values = figures if values is None else values + figures
    grad_norm = accelerator.clip_grad_norm_(parameters, recipe.optim.grad_clip)
    optimizer.step()
    scheduler.step()
    # clips stepped on by every process together: proof that each rank trained
    all_clips = (accelerator.reduce(torch.tensor(total_clips, device=device), reduction="sum")
                 if accelerator.num_processes > 1 else total_clips)
    clips = [e for batch in micro_batches for e in batch]
    return StepFigures(step, torch.cat([values, torch.as_tensor(grad_norm, device=values.device,
                                                                 dtype=torch.float32).reshape(1)]),
                       all_clips, {"lr": scheduler.get_last_lr()[0], "clips": total_clips,
                                   "replay_clips": sum(e.replay for e in clips)},
                       [e.row.key for e in clips])


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
    objective, _, summary = build_objective(base, recipe, device, precision)
    rows = read_manifest(recipe.data.train)
    checkpointing = decide_checkpointing(objective, base, recipe, rows, device, precision, log)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad],
                                  lr=recipe.optim.lr)
    batch = worst_case_batch(rows, recipe.data.max_seconds_per_batch, device)
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
              "gradient_checkpointing": checkpointing, "base_dtype": summary["base_dtype"],
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
