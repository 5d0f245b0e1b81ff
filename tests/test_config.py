import pytest

from svlora.errors import RecipeError
from svlora.finetune.recipe import load_recipe
from svlora.recipes import recipe_path, shipped_recipes


def test_every_shipped_recipe_loads():
    assert {"sensevoice_small_lora", "tiny_demo", "tiny_base"} <= set(shipped_recipes())
    for name in shipped_recipes():
        load_recipe(recipe_path(name))


def test_overrides_use_dotted_keys_and_keep_types():
    recipe = load_recipe(recipe_path("tiny_demo"), ["optim.lr=1e-3", "lora.r=4",
                                                    "lora.targets=[attention]"])
    assert recipe.optim.lr == 1e-3 and recipe.lora.r == 4 and recipe.lora.targets == ["attention"]


@pytest.mark.parametrize("override, message", [
    ("lora.rank=4", "unknown key(s) lora.rank"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("lora.r=1.5", "lora.r: expected int"),
    ("mode=qlora", "mode='qlora'"),
    ("lora.targets=[conv]", "choose from attention, ffn"),
    ("noequals", "expected key=value"),
])
def test_bad_recipes_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        load_recipe(recipe_path("tiny_demo"), [override])


def test_unknown_top_level_key_in_a_file_names_file_and_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("modle: x\n")
    with pytest.raises(RecipeError, match=r"r.yaml: unknown key\(s\) modle"):
        load_recipe(path)
