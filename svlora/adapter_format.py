"""The adapter package on disk: PEFT's adapter_config.json + adapter_model.safetensors, plus
svlora.json (base model hash, label vocabulary, recipe, metrics). Written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from svlora.errors import AdapterError
from svlora.io import sha256_file, staging_dir, write_json_atomic
from svlora.labels import EMOTION_TAGS, EVENT_TAGS, ITN_TAGS, LANGUAGE_TAGS

META_FILE = "svlora.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
FORMAT_VERSION = 1


def label_vocabulary() -> dict:
    return {"language": LANGUAGE_TAGS, "emotion": EMOTION_TAGS, "event": EVENT_TAGS,
            "itn": ITN_TAGS}


def save_adapter(peft_model, out_dir: str | Path, meta: dict) -> Path:
    """Write the PEFT adapter and svlora.json into a temp dir, then swap it into place."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}.")
    try:
        peft_model.save_pretrained(str(staging), safe_serialization=True)
        write_json_atomic(staging / META_FILE, {"format": "svlora-adapter",
                                                "version": FORMAT_VERSION,
                                                "labels": label_vocabulary(), **meta})
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`, keeping the old `target` until the move succeeded."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_adapter_meta(adapter_dir: str | Path) -> dict:
    """svlora.json of an adapter dir, after checking the PEFT files are there."""
    adapter = Path(adapter_dir)
    missing = [name for name in (*PEFT_FILES, META_FILE) if not (adapter / name).is_file()]
    if missing:
        raise AdapterError(f"{adapter}: not an svlora adapter (missing {', '.join(missing)}); "
                           "it is written by `svlora train` or `svlora export`")
    try:
        return json.loads((adapter / META_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AdapterError(f"{adapter / META_FILE}: invalid JSON ({error.msg})") from error


def check_adapter_matches_base(meta: dict, adapter_dir: str | Path, base_sha256: str,
                               allow_base_mismatch: bool = False) -> None:
    """Refuse an adapter trained on other base weights or another label vocabulary."""
    if meta.get("labels") != label_vocabulary():
        raise AdapterError(f"{adapter_dir}: its label vocabulary differs from SenseVoice's; it was "
                           "not written by this svlora version")
    recorded = meta.get("base_sha256")
    if recorded != base_sha256 and not allow_base_mismatch:
        raise AdapterError(
            f"{adapter_dir} was trained on base {meta.get('base_model')} (model.pt sha256 "
            f"{str(recorded)[:12]}…) but the given base's model.pt has sha256 {base_sha256[:12]}…; "
            "pass the base it was trained on, or --allow-base-mismatch to load it anyway")


def check_adapter_weights(path: Path) -> None:
    """A readable safetensors file (a truncated or foreign file is one clear error, not a
    traceback from deep inside PEFT)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                handle.get_slice(name)
        if path.stat().st_size < 8:
            raise ValueError("file too short")
    except Exception as error:  # SafetensorError, ValueError, OSError
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise AdapterError(f"{path}: not a readable safetensors file ({reason}); copy it again or "
                           "re-export the adapter") from None


def checked_adapter_meta(adapter_dir: str | Path, base_sha256: str,
                         allow_base_mismatch: bool = False) -> dict:
    """svlora.json of an adapter that may be attached to this base: metadata, base sha256 and
    readable safetensors weights all checked."""
    meta = read_adapter_meta(adapter_dir)
    check_adapter_matches_base(meta, adapter_dir, base_sha256, allow_base_mismatch)
    check_adapter_weights(Path(adapter_dir) / "adapter_model.safetensors")
    return meta


def inject_adapter(module, adapter_dir: str | Path, name: str = "default"):
    """Load an already checked adapter's LoRA weights under `name` and make it the active one,
    for inference. `module` is a SenseVoiceSmall (wrapped in a new PeftModel) or a PeftModel
    from an earlier call (the adapter is added beside the others). PEFT injects the LoRA layers
    into the SenseVoiceSmall itself, so decoding it uses the active adapter."""
    from peft import PeftModel

    if isinstance(module, PeftModel):
        peft_model = module
        peft_model.load_adapter(str(adapter_dir), adapter_name=name)
    else:
        peft_model = PeftModel.from_pretrained(module, str(adapter_dir), adapter_name=name,
                                               is_trainable=False)
    peft_model.set_adapter(name)
    peft_model.eval()
    return peft_model


def attach_adapter(module, adapter_dir: str | Path, base_sha256: str,
                   allow_base_mismatch: bool = False, name: str = "default"):
    """checked_adapter_meta, then inject_adapter: (the PeftModel, the adapter's metadata)."""
    meta = checked_adapter_meta(adapter_dir, base_sha256, allow_base_mismatch)
    return inject_adapter(module, adapter_dir, name), meta


def adapter_identity(adapter_dir: str | Path) -> str:
    """One sha256 over an adapter's weights *and* its adapter_config.json: the config's scale
    (lora_alpha / r) and targets change outputs as much as the weights do."""
    digest = hashlib.sha256()
    for name in PEFT_FILES:
        digest.update(name.encode())
        digest.update(bytes.fromhex(sha256_file(Path(adapter_dir) / name)))
    return digest.hexdigest()


@dataclass(frozen=True)
class Stage1Identity:
    """What produced a clip's stage-1 outputs: the base's model.pt sha256 and, for base +
    adapter, adapter_identity(adapter). Cascades, rules fits, eval's prediction cache and the
    server's pool all compare this one record."""

    base_sha256: str
    adapter_sha256: str | None = None

    @classmethod
    def of(cls, base_sha256: str, adapter_dir: str | Path | None) -> "Stage1Identity":
        return cls(base_sha256, adapter_identity(adapter_dir) if adapter_dir else None)

    def to_dict(self) -> dict:
        return {"base": self.base_sha256, "adapter": self.adapter_sha256}
