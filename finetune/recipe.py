"""The recipe: every training choice, typed, loaded 1:1 from YAML with key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from svlora.config import load_config
from svlora.errors import RecipeError


@dataclass
class DataSettings:
    train: str = "data/train.jsonl"  # SenseVoice jsonl from `svlora prepare`
    val: str = "data/val.jsonl"
    max_seconds_per_batch: float = 60.0  # padded audio seconds per batch (FunASR batch_size_s)
    feature_cache: str | None = None     # `svlora prepare --features` cache dir: no audio decoding


@dataclass
class LoraSettings:
    targets: list[str] = field(default_factory=lambda: ["attention", "ffn"])  # attention, ffn
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Non-LoRA parameter name substrings that may also train (PEFT modules_to_save style).
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
    grad_clip: float = 5.0


@dataclass
class TrainSettings:
    max_steps: int = 1000
    epochs: int = 0  # > 0: train this many passes over the data instead of max_steps
    eval_every: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    select_metric: str = "val_loss"  # val_loss | val_cer | val_emotion_accuracy


@dataclass
class Recipe:
    model: str = "iic/SenseVoiceSmall"  # local SenseVoiceSmall dir or hub id
    hub: str = "ms"                      # ms (ModelScope) or hf, for hub ids
    mode: str = "lora"                   # lora: train an adapter; full: train every weight
    out: str = "runs/sensevoice_lora"
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def validate(self, where: str) -> None:
        if self.mode not in ("lora", "full"):
            raise RecipeError(f"{where}: mode={self.mode!r}; use lora or full")
        unknown = sorted(set(self.lora.targets) - {"attention", "ffn"})
        if unknown or not self.lora.targets:
            raise RecipeError(f"{where}: lora.targets={self.lora.targets}; choose from attention, ffn")
        if self.train.select_metric not in ("val_loss", "val_cer", "val_emotion_accuracy"):
            raise RecipeError(f"{where}: train.select_metric={self.train.select_metric!r}; use "
                              "val_loss, val_cer or val_emotion_accuracy")
        if self.train.max_steps <= 0 or self.train.eval_every <= 0 or self.train.epochs < 0:
            raise RecipeError(f"{where}: train.max_steps and train.eval_every must be positive, "
                              "train.epochs zero or positive")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    recipe = load_config(Recipe, path, overrides)
    recipe.validate(str(path))
    return recipe
