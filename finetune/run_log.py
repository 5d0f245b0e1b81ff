"""What a run leaves for people: metrics.jsonl (always), tensorboard/wandb when enabled,
curves.png, and run.json (versions, git commit, seed, manifest hashes) to reproduce it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from svlora.io import atomic_path, json_line, sha256_file, write_json_atomic

PACKAGES = ("svlora", "torch", "funasr", "peft", "accelerate", "transformers", "numpy")


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def write_run_info(out: Path, recipe, extra: dict) -> None:
    manifests = {name: getattr(recipe.data, name) for name in ("train", "val", "replay", "retention")
                 if getattr(recipe.data, name)}
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    write_json_atomic(out / "run.json", {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": recipe.train.seed,
        "git_commit": git_commit(), "python": platform.python_version(), "versions": versions,
        "manifests": {name: {"path": path, "sha256": sha256_file(path)}
                      for name, path in manifests.items()},
        "recipe": asdict(recipe), **extra})


def kept_lines(path: Path) -> list[str]:
    """The complete JSON lines of a metrics log; a torn last line (a kill or a full disk mid-
    write) is dropped with a warning."""
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            print(f"svlora: {path}:{number}: incomplete line dropped (the run was cut mid-write)",
                  file=sys.stderr)
            continue
        kept.append(line)
    return kept


class MetricsLog:
    """metrics.jsonl plus the optional tensorboard and wandb sinks."""

    def __init__(self, out: Path, recipe, resume_step: int | None):
        self.path = out / "metrics.jsonl"
        records = []
        if resume_step is not None and self.path.exists():  # drop steps the resume redoes
            records = [line for line in kept_lines(self.path) if json.loads(line)["step"] <= resume_step]
        with atomic_path(self.path) as temporary:
            temporary.write_text("".join(r + "\n" for r in records))
        self.handle = open(self.path, "a", encoding="utf-8")
        self.tensorboard = self.wandb = None
        if recipe.logging.tensorboard:
            from tensorboardX import SummaryWriter
            self.tensorboard = SummaryWriter(str(out / "tensorboard"))
        if recipe.logging.wandb:
            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb
            self.wandb = wandb.init(project=recipe.logging.wandb_project, dir=str(out),
                                    config=asdict(recipe), name=out.name, reinit="finish_previous")

    def write(self, record: dict) -> None:
        self.handle.write(json_line(record) + "\n")
        self.handle.flush()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tensorboard:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, record["step"])
        if self.wandb:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        self.handle.close()
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """Training loss, validation metrics and learning rate against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    evals = [r for r in records if "val_loss" in r]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.7, label="train")
    axes[0].plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
    axes[0].set_title("loss")
    for key in ("val_cer", "val_emotion_accuracy", "retention_cer"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            axes[1].plot(*zip(*points), "o-", label=key)
    axes[1].set_title("validation")
    axes[2].plot([r["step"] for r in records], [r["lr"] for r in records])
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("step")
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    with atomic_path(png_path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
