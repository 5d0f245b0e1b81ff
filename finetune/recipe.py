"""The recipe: every training choice, typed, loaded 1:1 from YAML with key=value overrides."""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from svlora.config import load_config
from svlora.errors import RecipeError

MODULES_TO_SAVE = {"ctc_head": "ctc.ctc_lo", "query_embed": "embed"}
SELECT_METRICS = ("val_loss", "val_cer", "val_emotion_accuracy")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass
class DataSettings:
    train: str = "data/train.jsonl"  # SenseVoice jsonl from `svlora prepare`
    val: str = "data/val.jsonl"
    max_seconds_per_batch: float = 60.0  # padded audio seconds per batch (FunASR batch_size_s)
    feature_cache: str | None = None     # `svlora prepare --features` cache dir: no audio decoding
    replay: str | None = None            # general-domain manifest mixed into training
    replay_ratio: float = 0.0            # share of training clips drawn from `replay`
    retention: str | None = None         # general-domain manifest scored at every validation
    balance_emotions: bool = False       # draw clips inversely to their emotion's frequency
    labels: str | None = None            # label schema (labels.json/YAML); default: beside `train`


@dataclass
class LoraSettings:
    targets: list[str] = field(default_factory=lambda: ["attention", "ffn"])  # attention, ffn
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    use_rslora: bool = False   # scale by alpha/sqrt(r) instead of alpha/r
    use_dora: bool = False     # weight-decomposed LoRA
    # Whole modules trained and saved with the adapter: ctc_head, query_embed.
    modules_to_save: list[str] = field(default_factory=list)
    # Non-LoRA parameter name substrings that may also train (kept in the base, not the adapter).
    also_train: list[str] = field(default_factory=list)


@dataclass
class LossSettings:
    ctc_weight: float = 1.0   # FunASR's SenseVoice loss is ctc + rich (both weights 1)
    rich_weight: float = 1.0  # cross-entropy on [language, emotion, event, itn]


@dataclass
class OptimSettings:
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine (to min_lr_ratio) | linear | constant, after warmup
    min_lr_ratio: float = 0.1
    grad_clip: float = 5.0


@dataclass
class AugmentSettings:
    specaugment: bool = False  # mask mel bands and time spans of the training features
    freq_masks: int = 2
    freq_width: int = 15       # of 80 mel bins
    time_masks: int = 2
    time_width: int = 10       # LFR frames (60 ms each)


@dataclass
class TrainSettings:
    max_steps: int = 1000
    epochs: int = 0  # > 0: train this many passes over the data instead of max_steps
    eval_every: int = 100
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0: at every eval
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on a bf16 GPU, else fp32) | fp32 | bf16
    # recompute encoder blocks in backward (less memory, ~30% more compute); auto: only when a
    # step of the largest batch without it would pass max_memory_gb (measured at start)
    gradient_checkpointing: bool | str = "auto"
    grad_accum_steps: int = 1      # batches per optimizer step (one big batch's gradient)
    base_dtype: str = "auto"       # frozen weights: auto (bf16 when training in bf16 on a GPU) | fp32 | bf16
    compile: bool = False          # torch.compile the model; padded lengths bucketed so shapes repeat
    compile_backend: str = "inductor"
    compile_bucket_frames: int = 50  # with compile: pad each batch to a multiple of this (60 ms frames)
    select_metric: str = "val_loss"  # val_loss | val_cer | val_emotion_accuracy
    early_stopping_patience: int = 0  # stop after this many evals without a better metric; 0: off
    retention_guard: float = 0.01  # a checkpoint is "best" only if retention CER rose ≤ this
    max_memory_gb: float = 10.0    # --preflight fails above this peak


@dataclass
class LoggingSettings:
    tensorboard: bool = False  # OUT/tensorboard event files
    wandb: bool = False        # offline unless WANDB_MODE says otherwise; `wandb sync` later
    wandb_project: str = "svlora"
    every: int = 10            # steps between reads of loss/grad norm from the device (no sync in between)


@dataclass
class Recipe:
    model: str = "iic/SenseVoiceSmall"  # local SenseVoiceSmall dir or hub id
    hub: str = "ms"                      # ms (ModelScope) or hf, for hub ids
    trust_remote_code: bool = False      # let FunASR import code the model dir names (never by default)
    mode: str = "lora"                   # lora: train an adapter; full: train every weight
    out: str = "runs/sensevoice_lora"
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def validate(self, where: str) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise RecipeError(f"{where}: {message}")

        require(self.mode in ("lora", "full"), f"mode={self.mode!r}; use lora or full")
        unknown = sorted(set(self.lora.targets) - {"attention", "ffn"})
        require(not unknown and bool(self.lora.targets),
                f"lora.targets={self.lora.targets}; choose from attention, ffn")
        unknown = sorted(set(self.lora.modules_to_save) - set(MODULES_TO_SAVE))
        require(not unknown, f"lora.modules_to_save={self.lora.modules_to_save}; choose from "
                f"{', '.join(MODULES_TO_SAVE)}")
        require(self.train.select_metric in SELECT_METRICS,
                f"train.select_metric={self.train.select_metric!r}; use {', '.join(SELECT_METRICS)}")
        require(self.train.max_steps > 0 and self.train.eval_every > 0 and self.train.epochs >= 0
                and self.train.checkpoint_every >= 0,
                "train.max_steps and train.eval_every must be positive, train.epochs and "
                "train.checkpoint_every zero or positive")
        require(self.train.precision in ("auto", "fp32", "bf16"),
                f"train.precision={self.train.precision!r}; use auto, fp32 or bf16")
        require(self.train.gradient_checkpointing in (True, False, "auto"),
                f"train.gradient_checkpointing={self.train.gradient_checkpointing!r}; use true, false or auto")
        require(self.train.base_dtype in ("auto", "fp32", "bf16"),
                f"train.base_dtype={self.train.base_dtype!r}; use auto, fp32 or bf16")
        require(self.train.base_dtype != "bf16" or self.train.precision == "bf16",
                "train.base_dtype=bf16 needs train.precision=bf16 (bf16 weights run under bf16 autocast)")
        require(self.train.grad_accum_steps >= 1 and self.logging.every >= 1
                and self.train.compile_bucket_frames >= 0,
                "train.grad_accum_steps and logging.every must be ≥ 1, train.compile_bucket_frames ≥ 0")
        require(self.optim.schedule in ("cosine", "linear", "constant"),
                f"optim.schedule={self.optim.schedule!r}; use cosine, linear or constant")
        require(0 <= self.data.replay_ratio < 1, "data.replay_ratio must be in [0, 1)")
        require(self.data.replay_ratio == 0 or self.data.replay is not None,
                "data.replay_ratio > 0 needs data.replay (a general-domain manifest)")
        require(self.hub in ("ms", "hf"), f"hub={self.hub!r}; use ms (ModelScope) or hf")
        require(math.isfinite(self.optim.lr) and self.optim.lr > 0,
                f"optim.lr={self.optim.lr}; use a positive number such as 2e-4")
        require(self.optim.weight_decay >= 0 and self.optim.warmup_steps >= 0
                and self.optim.grad_clip > 0 and 0 <= self.optim.min_lr_ratio <= 1,
                "optim.weight_decay and optim.warmup_steps must be ≥ 0, optim.grad_clip > 0, "
                "optim.min_lr_ratio in [0, 1]")
        require(self.lora.r > 0 and self.lora.alpha > 0,
                f"lora.r={self.lora.r}, lora.alpha={self.lora.alpha}; both must be positive")
        require(0 <= self.lora.dropout < 1, f"lora.dropout={self.lora.dropout}; use [0, 1)")
        require(self.train.seed >= 0, f"train.seed={self.train.seed}; use 0 or more")
        require(DEVICE_PATTERN.match(self.train.device) is not None,
                f"train.device={self.train.device!r}; use auto, cpu, cuda or cuda:N")
        require(self.data.max_seconds_per_batch > 0 and self.train.max_memory_gb > 0,
                "data.max_seconds_per_batch and train.max_memory_gb must be positive")
        require(self.loss.ctc_weight >= 0 and self.loss.rich_weight >= 0
                and self.loss.ctc_weight + self.loss.rich_weight > 0,
                "loss.ctc_weight and loss.rich_weight must be ≥ 0 and not both 0")
        require(not self.logging.wandb or importlib.util.find_spec("wandb") is not None,
                "logging.wandb=true needs wandb: pip install 'svlora[wandb]' (or set it false)")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """The recipe at `path` with `overrides`, every value validated now (not when first used)."""
    return load_config(Recipe, path, overrides, check=Recipe.validate)
