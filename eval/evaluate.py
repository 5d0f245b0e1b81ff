"""`svlora eval`: decode the same test clips with the base and with base+adapter, score both,
write report.json, report.md, predictions.jsonl and confusion.png."""

from __future__ import annotations

from pathlib import Path

from svlora.adapter_format import attach_adapter
from svlora.decoding import transcribe_features
from svlora.eval.report import plot_confusions, render_markdown
from svlora.eval.scoring import arm_metrics, metric_delta, score_clip
from svlora.features import row_features
from svlora.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from svlora.manifest import read_manifest
from svlora.model import load_base_model, weights_sha256

REPORT_VERSION = 1


def evaluate(model: str, data: str, out: str, adapter: str | None = None, device: str = "cpu",
             hub: str = "ms", batch_size: int = 16, allow_base_mismatch: bool = False,
             feature_cache: str | None = None) -> dict:
    """Score base (and base+adapter) on every clip of `data`; return the report dict."""
    rows = read_manifest(data)
    base = load_base_model(model, device=device, hub=hub)
    base_sha256 = weights_sha256(base.model_dir)
    features = row_features(base, rows, "eval features", feature_cache)
    outputs = {"base": transcribe_features(base, features, batch_size)}
    if adapter is not None:
        attach_adapter(base.model, adapter, base_sha256, allow_base_mismatch)
        outputs["adapter"] = transcribe_features(base, features, batch_size)

    clips = {arm: [score_clip(row, raw) for row, raw in zip(rows, raws)]
             for arm, raws in outputs.items()}
    report = {"version": REPORT_VERSION, "model": str(model), "base_sha256": base_sha256,
              "adapter_path": adapter, "data": str(data)}
    report.update({arm: arm_metrics(rows, arm_clips) for arm, arm_clips in clips.items()})
    if adapter is not None:
        report["delta"] = metric_delta(report["base"], report["adapter"])

    out_dir = Path(out)
    predictions = [{"key": row.key, "source": row.source, "reference": row.target,
                    "reference_emotion": row.emo_target,
                    **{arm: clips[arm][i] for arm in clips}} for i, row in enumerate(rows)]
    write_jsonl_atomic(out_dir / "predictions.jsonl", predictions)
    plot_confusions(report, out_dir / "confusion.png")
    write_text_atomic(out_dir / "report.md", render_markdown(report))
    write_json_atomic(out_dir / "report.json", report)
    return report
