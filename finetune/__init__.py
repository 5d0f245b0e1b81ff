"""svlora.finetune: the LoRA (or full) trainer for SenseVoiceSmall, driven by a YAML recipe."""

from svlora.finetune.recipe import Recipe, load_recipe
from svlora.finetune.train import preflight, train_recipe

# The function is train_recipe, not `train`: the package attribute `train` stays the module.
__all__ = ["Recipe", "load_recipe", "preflight", "train_recipe"]
