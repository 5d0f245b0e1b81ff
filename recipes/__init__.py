"""svlora.recipes: the YAML recipes shipped with svlora (`svlora recipes` lists them)."""

from pathlib import Path

RECIPES_DIR = Path(__file__).parent


def recipe_path(name_or_path: str) -> Path:
    """A path as given if it exists, else a shipped recipe by name (with or without .yaml)."""
    given = Path(name_or_path)
    if given.exists():
        return given
    shipped = RECIPES_DIR / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    return shipped if shipped.exists() else given


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
