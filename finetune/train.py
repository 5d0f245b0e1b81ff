"""`svlora train`: the training loop. AdamW, warmup, clipping, periodic validation, best kept."""

from __future__ import annotations

import json
import math
import random
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
from svlora.finetune.data import Example, build_examples, collate, make_batches
from svlora.finetune.lora import attach_lora, check_trainable, trainable_summary
from svlora.finetune.recipe import Recipe
from svlora.io import write_text_atomic
from svlora.labels import split_output
from svlora.manifest import read_manifest
from svlora.metrics import accuracy, corpus_cer, normalize_text
from svlora.model import BaseModel, load_base_model, weights_sha256, write_model_dir

HIGHER_IS_BETTER = {"val_emotion_accuracy"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SvloraError(f"train.device={name} but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def sensevoice_loss(sensevoice: torch.nn.Module, batch: dict, ctc_weight: float,
                    rich_weight: float) -> tuple[torch.Tensor, dict]:
    """FunASR's SenseVoice loss (CTC on text + CE on the 4 rich tags), with recipe weights."""
    encoder_out, encoder_lengths = sensevoice.encode(batch["speech"], batch["speech_lengths"].clone(),
                                                     batch["text"])
    prefix = 4
    loss_ctc, _ = sensevoice._calc_ctc_loss(encoder_out[:, prefix:], encoder_lengths - prefix,
                                            batch["text"][:, prefix:], batch["text_lengths"] - prefix)
    loss_rich, rich_accuracy = sensevoice._calc_rich_ce_loss(encoder_out[:, :prefix],
                                                             batch["text"][:, :prefix])
    loss = ctc_weight * loss_ctc + rich_weight * loss_rich
    return loss, {"loss_ctc": float(loss_ctc.detach()), "loss_rich": float(loss_rich.detach()),
                  "rich_accuracy": float(rich_accuracy)}


def learning_rate_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def validate(base: BaseModel, examples: list[Example], recipe: Recipe, device: torch.device) -> dict:
    """Validation loss plus greedy-decode emotion accuracy and CER."""
    sensevoice = base.model
    sensevoice.eval()
    total_loss, total_clips = 0.0, 0
    for batch in make_batches(examples, recipe.data.max_seconds_per_batch, rng=None):
        loss, _ = sensevoice_loss(sensevoice, collate(batch, device), recipe.loss.ctc_weight,
                                  recipe.loss.rich_weight)
        total_loss += float(loss) * len(batch)
        total_clips += len(batch)
    outputs = [split_output(text) for text in transcribe_features(base, [e.features for e in examples])]
    languages = [e.row.text_language.strip("<|>") for e in examples]
    references = [normalize_text(e.row.target, lang) for e, lang in zip(examples, languages)]
    hypotheses = [normalize_text(o["text"], lang) for o, lang in zip(outputs, languages)]
    sensevoice.train()
    return {"val_loss": total_loss / max(1, total_clips),
            "val_cer": corpus_cer(references, hypotheses),
            "val_emotion_accuracy": accuracy([e.row.emo_target for e in examples],
                                             [o["emotion"] for o in outputs])}


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value > best if metric in HIGHER_IS_BETTER else value < best


def planned_steps(recipe: Recipe, examples: list[Example]) -> int:
    """train.max_steps, or train.epochs passes over the training batches when epochs > 0."""
    if recipe.train.epochs <= 0:
        return recipe.train.max_steps
    batches_per_epoch = len(make_batches(examples, recipe.data.max_seconds_per_batch,
                                         random.Random(recipe.train.seed)))
    return recipe.train.epochs * batches_per_epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    output: Path                 # OUT/adapter (lora) or OUT/model (full), the best checkpoint
    best: dict                   # the metrics record of the best validation
    trainable: int
    total_parameters: int
    seconds: float
    model: torch.nn.Module       # the trained module as it ended (last step, not best)


def train(recipe: Recipe, overwrite: bool = False, log=print) -> TrainResult:
    """Run the recipe; write OUT/adapter (lora) or OUT/model (full), metrics.jsonl, recipe.yaml.

    An OUT that already holds a run is refused unless `overwrite` (then its log restarts).
    """
    out = Path(recipe.out)
    if (out / "metrics.jsonl").exists() and not overwrite:
        raise SvloraError(f"{out} already holds a training run; pass --overwrite to replace it or "
                          "set out=ANOTHER_DIR")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "recipe.yaml", yaml.safe_dump(asdict(recipe), sort_keys=False))
    seed_everything(recipe.train.seed)
    device = resolve_device(recipe.train.device)
    base = load_base_model(recipe.model, device=str(device), hub=recipe.hub)
    base_sha256 = weights_sha256(base.model_dir)
    train_examples = build_examples(base, read_manifest(recipe.data.train), "train features",
                                    recipe.data.feature_cache)
    val_examples = build_examples(base, read_manifest(recipe.data.val), "val features",
                                  recipe.data.feature_cache)

    if recipe.mode == "lora":
        trainable_model = attach_lora(base.model, recipe.lora)
        summary = trainable_summary(trainable_model)
        check_trainable(summary, recipe.lora)
    else:
        trainable_model = base.model
        summary = trainable_summary(trainable_model)
    log(f"trainable parameters: {summary['trainable']:,} of {summary['total']:,} "
        f"({100 * summary['trainable'] / summary['total']:.2f}%), mode={recipe.mode}")

    total_steps = planned_steps(recipe, train_examples)
    parameters = [p for p in trainable_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.optim.lr,
                                  weight_decay=recipe.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, recipe.optim.warmup_steps, total_steps))
    batch_rng = random.Random(recipe.train.seed)
    sensevoice = base.model
    sensevoice.train()
    best_value, best_metrics = None, None
    metric = recipe.train.select_metric
    started = time.time()
    batches: list = []
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as metrics_log, \
            tqdm(total=total_steps, desc="training", unit="step") as progress:
        for step in range(1, total_steps + 1):
            if not batches:
                batches = make_batches(train_examples, recipe.data.max_seconds_per_batch, batch_rng)
            batch = batches.pop()
            loss, parts = sensevoice_loss(sensevoice, collate(batch, device),
                                          recipe.loss.ctc_weight, recipe.loss.rich_weight)
            if not torch.isfinite(loss):
                raise SvloraError(f"step {step}: loss is {float(loss)}; batch clips: "
                                  f"{', '.join(e.row.key for e in batch)}; lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, recipe.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            record = {"step": step, "loss": loss.item(), **parts, "lr": scheduler.get_last_lr()[0],
                      "elapsed_s": round(time.time() - started, 2)}
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.3f}")
            if step % recipe.train.eval_every == 0 or step == total_steps:
                record.update(validate(base, val_examples, recipe, device))
                if is_better(record[metric], best_value, metric):
                    best_value, best_metrics = record[metric], dict(record)
                    save_checkpoint(recipe, trainable_model, base, base_sha256, best_metrics, summary)
                tqdm.write(f"step {step}: " + ", ".join(
                    f"{k}={record[k]:.4f}" for k in ("val_loss", "val_cer", "val_emotion_accuracy")))
            metrics_log.write(json.dumps(record) + "\n")
            metrics_log.flush()
    return TrainResult(output=out / ("adapter" if recipe.mode == "lora" else "model"),
                       best=best_metrics, trainable=summary["trainable"],
                       total_parameters=summary["total"], seconds=round(time.time() - started, 1),
                       model=trainable_model)


def save_checkpoint(recipe: Recipe, trainable_model, base: BaseModel, base_sha256: str,
                    metrics: dict, summary: dict) -> None:
    out = Path(recipe.out)
    if recipe.mode == "lora":
        save_adapter(trainable_model, out / "adapter", {
            "base_model": str(recipe.model), "base_sha256": base_sha256,
            "recipe": asdict(recipe), "val_metrics": metrics,
            "trainable_parameters": summary["trainable"]})
    else:
        staging = out / ".model.staging"
        write_model_dir(base.model.state_dict(), base.model_dir, staging)
        replace_dir(staging, out / "model")
