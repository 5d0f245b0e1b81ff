"""Render an A/B report dict as Markdown and a confusion-matrix PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from svlora.io import atomic_path


def _tag(tag: str) -> str:
    return tag.strip("<|>")


def verdict(report: dict) -> str:
    """One sentence a reader sees first."""
    if "adapter" not in report:
        base = report["base"]
        return f"Base only: CER {base['cer']:.3f}, emotion accuracy {base['emotion_accuracy']:.3f}."
    delta = report["delta"]
    cer_word = "lower" if delta["cer"] < 0 else "higher" if delta["cer"] > 0 else "equal"
    emo_word = "higher" if delta["emotion_accuracy"] > 0 else \
        "lower" if delta["emotion_accuracy"] < 0 else "equal"
    return (f"With the adapter, CER is {cer_word} ({delta['cer']:+.3f}) and emotion accuracy is "
            f"{emo_word} ({delta['emotion_accuracy']:+.3f}) on the same {report['base']['n']} clips.")


def render_markdown(report: dict) -> str:
    arms = [arm for arm in ("base", "adapter") if arm in report]
    lines = [f"# A/B report: {report['data']}", "", verdict(report), "",
             f"- base model: `{report['model']}` (model.pt sha256 {report['base_sha256'][:12]}…)"]
    if report.get("adapter_path"):
        lines.append(f"- adapter: `{report['adapter_path']}`")
    lines += [f"- clips: {report['base']['n']}; CER is character error rate on normalised text "
              "(rich tags stripped, NFKC, lower case, punctuation removed)", "",
              "| metric | " + " | ".join(arms) + (" | delta |" if "delta" in report else " |"),
              "|---|" + "---|" * (len(arms) + ("delta" in report))]
    for metric in ("cer", "emotion_accuracy"):
        cells = [f"{report[arm][metric]:.4f}" for arm in arms]
        if "delta" in report:
            cells.append(f"{report['delta'][metric]:+.4f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", "## Emotion accuracy per reference emotion", "",
              "| emotion | n | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for tag, stats in report["base"]["per_emotion_accuracy"].items():
        cells = [f"{report[arm]['per_emotion_accuracy'][tag]['accuracy']:.3f}" for arm in arms]
        lines.append(f"| {_tag(tag)} | {stats['n']} | " + " | ".join(cells) + " |")
    for arm in arms:
        confusion = report[arm]["confusion"]
        lines += ["", f"## Confusion matrix, {arm} (rows: reference, columns: predicted)", "",
                  "| | " + " | ".join(_tag(c) for c in confusion["columns"]) + " |",
                  "|---|" + "---|" * len(confusion["columns"])]
        for row, counts in zip(confusion["rows"], confusion["counts"]):
            lines.append(f"| {_tag(row)} | " + " | ".join(str(c) for c in counts) + " |")
    lines += ["", "Per-clip outputs: predictions.jsonl; confusion matrices: confusion.png.", ""]
    return "\n".join(lines)


def plot_confusions(report: dict, path: str | Path) -> None:
    """Row-normalised confusion matrices of each arm side by side, counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in ("base", "adapter") if arm in report]
    figure, axes = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 4.8), squeeze=False)
    for axis, arm in zip(axes[0], arms):
        confusion = report[arm]["confusion"]
        counts = np.array(confusion["counts"], dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        axis.set_xticks(range(len(confusion["columns"])),
                        [_tag(c) for c in confusion["columns"]], rotation=45, ha="right")
        axis.set_yticks(range(len(confusion["rows"])), [_tag(r) for r in confusion["rows"]])
        for (i, j), count in np.ndenumerate(counts):
            axis.text(j, i, int(count), ha="center", va="center",
                      color="white" if rates[i, j] > 0.5 else "black")
        axis.set_title(f"{arm}: emotion accuracy {report[arm]['emotion_accuracy']:.3f}")
        axis.set_xlabel("predicted")
        axis.set_ylabel("reference")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
