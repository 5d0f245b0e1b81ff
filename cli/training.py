"""`svlora train` and `svlora recipes`."""

from __future__ import annotations

import json
import sys


def register(commands) -> None:
    train = commands.add_parser("train", help="train a LoRA adapter from a YAML recipe")
    train.add_argument("recipe", help="a YAML recipe path or a shipped recipe name (svlora recipes)")
    train.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.lr=1e-4")
    train.add_argument("--print-config", action="store_true", help="print the resolved recipe, exit")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in `out`")
    train.add_argument("--resume", action="store_true", help="continue the run in `out` from "
                       "its last checkpoint")
    train.add_argument("--preflight", action="store_true", help="one step on the largest batch: "
                       "print peak memory, fail above train.max_memory_gb")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N: overrides the recipe's "
                       "train.device (as train.device=... would)")
    train.set_defaults(handler=run_train)

    recipes = commands.add_parser("recipes", help="list the shipped recipes")
    recipes.set_defaults(handler=run_recipes)


def run_train(args) -> None:
    import yaml
    from dataclasses import asdict

    from svlora.finetune import load_recipe, train_recipe
    from svlora.recipes import recipe_path

    overrides = [*args.overrides, *([f"train.device={args.device}"] if args.device else [])]
    recipe = load_recipe(recipe_path(args.recipe), overrides)
    if args.print_config:
        print(yaml.safe_dump(asdict(recipe), sort_keys=False), end="")
        return
    if args.preflight:
        from svlora.finetune import preflight

        print(json.dumps(preflight(recipe, log=lambda m: print(m, file=sys.stderr))))
        return
    result = train_recipe(recipe, overwrite=args.overwrite, resume=args.resume)
    if result.is_main_process:
        print(f"best: {json.dumps(result.best)}")
        print(f"wrote {result.output}")


def run_recipes(args) -> None:
    from svlora.recipes import recipe_path, shipped_recipes

    for name in shipped_recipes():
        first_line = recipe_path(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        print(f"{name:28s} {first_line}")
