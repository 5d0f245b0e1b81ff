"""The layering the README promises: the core imports no stage, stages import each other only
through their packages' public names, and no package hides a module behind a function."""

import ast
import importlib
import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_DIRS = {name: name for name in ("data_prep", "finetune", "eval", "adapters", "postprocess",
                                      "batch", "review", "selection")}
STAGES = {*STAGE_DIRS, "recipes"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_imports_no_stage_and_no_entry_point():
    offenders = []
    for path in sorted((ROOT / "svlora").glob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "svlora" and len(parts) > 1 and parts[1] in STAGES | {"cli"}:
                offenders.append(f"{path.name}: {module}")
    assert not offenders


def test_stages_use_only_each_others_public_packages():
    offenders = []
    for stage, folder in STAGE_DIRS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                other = parts[1] if parts[0] == "svlora" and len(parts) > 1 else None
                # svlora.recipes.rules is the shipped examples' locator, a public name
                if other in STAGES - {stage, "recipes"} and len(parts) > 2:
                    offenders.append(f"{folder}/{path.name}: {module}")
                if other == "cli":
                    offenders.append(f"{folder}/{path.name}: {module}")
    assert not offenders


def test_no_package_shadows_one_of_its_modules():
    import svlora

    shadowed = []
    packages = ["svlora", "svlora.cli", *(f"svlora.{s}" for s in STAGES)]
    for name in packages:
        package = importlib.import_module(name)
        modules = [m for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"]
        for info in modules:
            importlib.import_module(f"{name}.{info.name}")  # importing sets the attribute...
        for info in modules:
            attribute = getattr(package, info.name, None)
            if attribute is not None and not hasattr(attribute, "__path__") and \
                    getattr(attribute, "__name__", None) != f"{name}.{info.name}":
                shadowed.append(f"{name}.{info.name}")  # ...unless a function took its name
    assert not shadowed, shadowed
    assert svlora.cli.main is not None and callable(svlora.cli.main)
