"""svlora.finetune: the LoRA (or full) trainer for SenseVoiceSmall, driven by a YAML recipe."""

from svlora.finetune.recipe import Recipe, load_recipe
from svlora.finetune.train import preflight, train

__all__ = ["Recipe", "load_recipe", "preflight", "train"]
