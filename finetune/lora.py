"""Inject PEFT LoRA into the SenseVoice encoder's linear layers and police what trains."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from dataclasses import replace

from svlora.errors import RecipeError
from svlora.finetune.recipe import MODULES_TO_SAVE, LoraSettings
from svlora.label_schema import LabelSchema

# Linear layers of FunASR's SANM encoder blocks, by the recipe's names for them.
TARGET_LAYERS = {"attention": ("linear_q_k_v", "linear_out"), "ffn": ("w_1", "w_2")}


def target_pattern(targets: list[str]) -> str:
    """A PEFT full-match regex for the chosen layers inside the encoder only."""
    layers = sorted(name for target in targets for name in TARGET_LAYERS[target])
    return rf"encoder\..*\.({'|'.join(layers)})"


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=target_pattern(settings.targets), bias="none",
                      use_rslora=settings.use_rslora, use_dora=settings.use_dora,
                      modules_to_save=[MODULES_TO_SAVE[m] for m in settings.modules_to_save] or None)


def settings_for_labels(settings: LoraSettings, labels: LabelSchema) -> tuple[LoraSettings, list[str]]:
    """The LoRA settings with what a schema's new classes need trained as well: the CTC head
    (its output rows for the new tokens) and, for a new language, the query embedding (its
    spare row). The modules added, for the trainable summary."""
    needed = (["ctc_head"] if labels.new_tags() else []) + \
        (["query_embed"] if labels.new_languages() else [])
    added = [name for name in needed if name not in settings.modules_to_save]
    return replace(settings, modules_to_save=[*settings.modules_to_save, *added]), added


def attach_lora(model: torch.nn.Module, settings: LoraSettings):
    """A PeftModel with LoRA on the targets; the base frozen except `also_train` matches."""
    peft_model = get_peft_model(model, lora_config(settings))
    for name, parameter in peft_model.named_parameters():
        if any(pattern in name for pattern in settings.also_train):
            parameter.requires_grad_(True)
    return peft_model


def is_adapter_parameter(name: str) -> bool:
    """LoRA/DoRA weights and PEFT's trainable copies of modules_to_save."""
    return "lora_" in name or ".modules_to_save." in name


def trainable_summary(model: torch.nn.Module) -> dict:
    """Counts of trainable/total parameters, and names of trainable non-adapter parameters."""
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    return {"trainable": sum(trainable.values()),
            "total": sum(p.numel() for p in model.parameters()),
            "trainable_names": sorted(trainable),
            "non_lora_trainable": sorted(n for n in trainable if not is_adapter_parameter(n))}


def check_trainable(summary: dict, settings: LoraSettings) -> None:
    """Fail when a non-LoRA weight would train without the recipe asking for it."""
    unexpected = [n for n in summary["non_lora_trainable"]
                  if not any(pattern in n for pattern in settings.also_train)]
    if unexpected:
        raise RecipeError(f"{len(unexpected)} non-LoRA parameter(s) would train (first: "
                          f"{unexpected[0]}); list them in lora.also_train if intended")
    if summary["trainable"] == 0:
        raise RecipeError("no trainable parameters: lora.targets matched no layer")
