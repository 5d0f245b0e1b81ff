"""Example rules files for `svlora transcribe --rules` and eval's rules arms (svlora.postprocess)."""

from pathlib import Path

RULES_DIR = Path(__file__).resolve().parent


def rules_path(name_or_path: str) -> Path:
    """A rules file path as given, or a shipped example by name (e.g. `soft_particles`)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return RULES_DIR / f"{name_or_path}.yaml"
