"""`svlora export`: an adapter package (PEFT files + svlora.json) or a merged model dir in the
base's layout that FunASR's AutoModel loads unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

from svlora.adapter_format import META_FILE, PEFT_FILES, read_adapter_meta, replace_dir
from svlora.errors import AdapterError
from svlora.adapters.runtime import load_model
from svlora.io import staging_dir, write_json_atomic
from svlora.label_schema import SCHEMA_FILE, write_schema
from svlora.model import resolve_device, write_model_dir


def export_adapter(model: str, adapter: str, out: str, merge: bool = False, hub: str = "ms",
                   allow_base_mismatch: bool = False, device: str = "cpu",
                   trust_remote_code: bool = False, overwrite: bool = False) -> Path:
    """Write OUT atomically: the checked adapter package, or with merge=True a full model dir
    (merged on `device`; the files written are the same)."""
    resolve_device(device)  # a device that is not there is an error before any work
    check_output_dir(Path(out), [("the adapter", Path(adapter)), ("the base model", Path(model))],
                     overwrite)
    runtime = load_model(model, adapter, hub=hub, allow_base_mismatch=allow_base_mismatch,
                         merge=merge, device=device, trust_remote_code=trust_remote_code,
                         bf16_weights=False)  # the files written keep fp32 on any device
    out_dir = Path(out)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out_dir.parent, f".{out_dir.name}.")
    try:
        if merge:
            write_model_dir(runtime.state_dict(), runtime.base.model_dir, staging)
            write_json_atomic(staging / "svlora_merge.json", {
                "base_model": str(model), "base_sha256": runtime.base_sha256,
                "adapter": str(adapter), "adapter_meta": runtime.adapter_meta})
            labels_file = staging / SCHEMA_FILE
            if not runtime.base.labels.is_default:  # svlora's loader decodes into these labels
                write_schema(labels_file, runtime.base.labels)
            elif labels_file.exists():  # copied from a base dir of another schema
                labels_file.unlink()
        else:
            for name in PEFT_FILES:
                shutil.copy2(Path(adapter) / name, staging / name)
            meta = read_adapter_meta(adapter)
            write_json_atomic(staging / META_FILE, meta)
            (staging / "README.md").write_text(_package_readme(meta), encoding="utf-8")
        replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def export_onnx(model: str, adapter: str, out: str, kind: str, int8: bool = False, hub: str = "ms",
                allow_base_mismatch: bool = False, trust_remote_code: bool = False,
                overwrite: bool = False, verify: str | None = None,
                runtime_python: str | None = None) -> tuple[Path, dict | None]:
    """Merge the adapter and write an ONNX dir in sherpa-onnx's or FunASR ONNX's contract
    (adapters/onnx_export.py); with `verify` (a manifest), decode it through that runtime and
    compare with the unmerged adapter (adapters/onnx_verify.py). Parity below 99% is an error
    after the files are written (they stay, with verify-KIND.json saying what differs)."""
    from svlora.adapters.onnx_export import write_onnx_dir
    from svlora.adapters.onnx_verify import PARITY_TARGET, check_verify_manifest, verify_export

    check_output_dir(Path(out), [("the adapter", Path(adapter)), ("the base model", Path(model))],
                     overwrite)
    if verify is not None:
        check_verify_manifest(verify)
    runtime = load_model(model, adapter, hub=hub, allow_base_mismatch=allow_base_mismatch,
                         merge=True, trust_remote_code=trust_remote_code)
    provenance = {"base_model": str(model), "base_sha256": runtime.base_sha256,
                  "adapter": str(adapter), "adapter_meta": runtime.adapter_meta}
    out_dir = write_onnx_dir(runtime, Path(out), kind, int8, provenance)
    if verify is None:
        return out_dir, None
    reference = load_model(model, adapter, hub=hub, allow_base_mismatch=allow_base_mismatch,
                           trust_remote_code=trust_remote_code)
    report = verify_export(reference, out_dir, kind, verify, int8, runtime_python)
    if report["fp32_identical_rate"] < PARITY_TARGET:
        raise AdapterError(f"{out_dir}: only {report['fp32_identical']}/{report['clips']} clips give the "
                           f"same text and tags through {report['runtime']} as svlora "
                           f"(target {PARITY_TARGET:.0%}); see {out_dir / f'verify-{kind}.json'}")
    return out_dir, report


def check_output_dir(out: Path, protected: list[tuple[str, Path]], overwrite: bool) -> None:
    """Refuse an --out that would delete what it must not: the adapter, the base model or the
    training run (or a folder holding them), and any non-empty folder without --overwrite."""
    target = out.resolve()
    for name, path in protected:
        if not path.exists():
            continue
        guarded = [path.resolve()]
        if name == "the adapter" and (path.resolve().parent / "metrics.jsonl").is_file():
            guarded.append(path.resolve().parent)  # the run the adapter came from
        for folder in guarded:
            if target == folder or target in folder.parents:
                raise AdapterError(f"--out {out} would replace {folder}, which holds {name} or its "
                                   "training run; choose a new directory")
    if target.exists() and not target.is_dir():
        raise AdapterError(f"--out {out} is a file; give a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise AdapterError(f"--out {out} exists and is not empty; pass --overwrite to replace it "
                           "or choose a new directory")


def _package_readme(meta: dict) -> str:
    metrics = meta.get("val_metrics") or {}
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val_loss", "val_cer", "val_emotion_accuracy")
                      if k in metrics)
    return (f"# SenseVoiceSmall LoRA adapter (svlora)\n\n"
            f"- base model: `{meta.get('base_model')}`, model.pt sha256 `{meta.get('base_sha256')}`\n"
            f"- trainable parameters: {meta.get('trainable_parameters')}\n"
            f"- validation: {shown or 'n/a'}\n\n"
            "Load it with `svlora.adapters.load_model(BASE, adapter=THIS_DIR)` or "
            "`svlora transcribe --model BASE --adapter THIS_DIR AUDIO...`; with plain PEFT, "
            "`PeftModel.from_pretrained(sensevoice_small_module, THIS_DIR)`.\n")
