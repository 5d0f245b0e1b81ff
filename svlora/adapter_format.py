"""The adapter package on disk: PEFT's adapter_config.json + adapter_model.safetensors, plus
svlora.json (base model hash, label vocabulary, recipe, metrics). Written atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from svlora.errors import AdapterError, SvloraError
from svlora.io import sha256_of_files, staging_dir, write_json_atomic
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema, schema_of_meta

META_FILE = "svlora.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
FORMAT_VERSION = 1


def save_adapter(peft_model, out_dir: str | Path, meta: dict,
                 labels: LabelSchema = DEFAULT_SCHEMA) -> Path:
    """Write the PEFT adapter and svlora.json (with the label schema it was trained on) into a
    temp dir, then swap it into place."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}.")
    try:
        peft_model.save_pretrained(str(staging), safe_serialization=True)
        write_json_atomic(staging / META_FILE, {"format": "svlora-adapter",
                                                "version": FORMAT_VERSION,
                                                "labels": labels.to_dict(), **meta})
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


def schema_difference(ours: LabelSchema, theirs: LabelSchema) -> str:
    """The first kind in which two schemas differ, in words."""
    for kind in ("emotion", "event", "language"):
        if ours.tags(kind) != theirs.tags(kind):
            return (f"its {kind} classes {', '.join(t[2:-2] for t in theirs.tags(kind))}; this "
                    f"run's {', '.join(t[2:-2] for t in ours.tags(kind))}")
    return "heads" if ours.heads != theirs.heads else "query rows"


def adapter_labels(meta: dict, adapter_dir: str | Path, expected: LabelSchema | None) -> LabelSchema:
    """The label schema an adapter was trained on; refused when `expected` (the run's) differs:
    its classes' output rows mean other things."""
    try:
        schema = schema_of_meta(meta, f"{adapter_dir}/{META_FILE}")
    except SvloraError as error:
        raise AdapterError(str(error)) from None
    if expected is not None and schema != expected:
        raise AdapterError(f"{adapter_dir} was trained on another label schema than this run's "
                           f"({schema_difference(expected, schema)}); keep the labels.json prepare wrote "
                           "beside the manifests (copy it next to a manifest you moved), or train an "
                           "adapter on this schema")
    return schema


def check_adapter_matches_base(meta: dict, adapter_dir: str | Path, base_sha256: str,
                               allow_base_mismatch: bool = False) -> None:
    """Refuse an adapter trained on other base weights."""
    recorded = meta.get("base_sha256")
    if recorded != base_sha256 and not allow_base_mismatch:
        raise AdapterError(
            f"{adapter_dir} was trained on base {meta.get('base_model')} (model.pt sha256 "
            f"{str(recorded)[:12]}…) but the given base's model.pt has sha256 {base_sha256[:12]}…; "
            "pass the base it was trained on, or --allow-base-mismatch to load it anyway")


# What PEFT saves for one LoRA layer, after "base_model.model.<module>.": the low-rank factors
# (lora_embedding_* on an Embedding), DoRA's magnitude vector, lora_bias's bias on B.
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|"
                      r"lora_B\.bias|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)$")
RANK_AXIS = {"lora_A.weight": 0, "lora_B.weight": 1, "lora_embedding_A": 0, "lora_embedding_B": 1}
# Submodules PEFT adds inside a wrapped layer (per adapter name), left out of the base's names.
PEFT_PARTS = frozenset({"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_dropout",
                        "lora_magnitude_vector", "modules_to_save"})
PEFT_WRAPPERS = frozenset({"base_layer", "original_module"})  # the wrapped base layer itself


@dataclass(frozen=True)
class ModelLayout:
    """What an adapter is checked against: the base model's own module names (as PEFT's keys
    spell them), each Linear-like layer's (in, out) features, and its parameter shapes."""

    features: dict[str, tuple[int, int] | None]
    parameters: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, module) -> "ModelLayout":
        """The layout of a SenseVoiceSmall, or of the model inside a PeftModel (PEFT's wrapper
        parts from earlier adapters left out, so the names are the base's)."""
        unwrap = getattr(module, "get_base_model", None)
        module = unwrap() if callable(unwrap) else module
        features: dict[str, tuple[int, int] | None] = {}
        for name, layer in module.named_modules():
            if name and (base := base_name(name)) is not None:
                sizes = (getattr(layer, "in_features", None), getattr(layer, "out_features", None))
                if None not in sizes or base not in features:  # PEFT's wrapper and its base_layer
                    features[base] = None if None in sizes else sizes
        parameters = {base: tuple(tensor.shape) for name, tensor in module.state_dict().items()
                      if (base := base_name(name)) is not None}
        return cls(features, parameters)


def base_name(name: str) -> str | None:
    """A module or parameter name with PEFT's wrappers removed; None for PEFT's own parts."""
    parts = name.split(".")
    if PEFT_PARTS.intersection(parts):
        return None
    return ".".join(part for part in parts if part not in PEFT_WRAPPERS)


def read_lora_config(adapter_dir: Path):
    """adapter_config.json as PEFT's LoraConfig (what PEFT itself will inject from)."""
    from peft import LoraConfig

    path = adapter_dir / "adapter_config.json"
    try:
        peft_type = json.loads(path.read_text(encoding="utf-8")).get("peft_type")
        if peft_type != "LORA":
            raise AdapterError(f"{path}: peft_type {peft_type!r}; svlora loads LoRA adapters only")
        return LoraConfig.from_pretrained(str(adapter_dir))
    except (ValueError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise AdapterError(f"{path}: not a readable LoRA config ({error}); copy it again or "
                           "re-export the adapter") from None


def read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a readable safetensors file whose tensors are all finite (a truncated or
    foreign file, or NaN/Inf weights, are one clear error, not a traceback or NaN outputs)."""
    import torch
    from safetensors import safe_open

    shapes = {}
    try:
        if path.stat().st_size < 8:
            raise ValueError("file too short")
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise AdapterError(f"{path}: tensor {key!r} holds NaN or Inf values (training "
                                       "diverged, or the file is damaged); export the adapter "
                                       "again from a good checkpoint")
                shapes[key] = tuple(tensor.shape)
    except AdapterError:
        raise
    except Exception as error:  # SafetensorError, ValueError, OSError
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise AdapterError(f"{path}: not a readable safetensors file ({reason}); copy it again or "
                           "re-export the adapter") from None
    return shapes


def named_by(entry: str, name: str) -> bool:
    """Whether a config entry ('ctc.ctc_lo', 'w_1') names module `name` (a dotted suffix)."""
    return name == entry or name.endswith(f".{entry}")


def check_config_names_modules(config_file: Path, config, layout: ModelLayout) -> set[str]:
    """Refuse target_modules / modules_to_save entries that name no module of the model; the
    modules_to_save modules found."""
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = config.target_modules
    if isinstance(targets, str) or targets is None:  # one regex, matched against whole names
        found = any(check_target_module_exists(config, name) for name in layout.features)
        unknown = [] if found else [targets]
    else:
        unknown = [t for t in sorted(targets) if not any(named_by(t, n) for n in layout.features)]
    saved = {entry: {n for n in layout.features if named_by(entry, n)}
             for entry in config.modules_to_save or []}
    unknown += [entry for entry, names in saved.items() if not names]
    if unknown:
        raise AdapterError(f"{config_file}: {unknown[0]!r} (target_modules / modules_to_save) "
                           "names no module of this model; the adapter was written for another "
                           "architecture")
    return set().union(*saved.values())


def rank_of(config, module: str) -> int:
    """The LoRA rank PEFT gives `module`: its rank_pattern entry (a key matching the module
    name's tail, as PEFT matches it), else r."""
    for key, rank in config.rank_pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return rank
    return config.r


def check_adapter_fits(path: Path, config, shapes: dict[str, tuple[int, ...]],
                       layout: ModelLayout) -> None:
    """An adapter may only add LoRA weights to the modules its config targets (and replace a
    declared modules_to_save module, which PEFT keeps in a per-adapter copy): any other key
    would be loaded into the shared base weights. Its targets must exist, and every targeted
    module must get its weights (else PEFT loads a silent no-op) at the config's rank and the
    layer's size."""
    from peft.tuners.tuners_utils import check_target_module_exists

    saved = check_config_names_modules(path.parent / "adapter_config.json", config, layout)
    targeted = {name for name in layout.features if check_target_module_exists(config, name)}
    parts: dict[str, set[str]] = {}
    for key, shape in shapes.items():
        found = LORA_KEY.match(key)
        if found and found["module"] in targeted:
            module, part = found["module"], found["part"]
            rank = rank_of(config, module)
            check_lora_shape(path, key, shape, part, rank, layout.features.get(module))
            parts.setdefault(module, set()).add(part)
            continue
        parameter = key.removeprefix("base_model.model.")
        if any(parameter.startswith(f"{name}.") for name in saved) and \
                layout.parameters.get(parameter) == shape:
            continue
        raise AdapterError(f"{path}: tensor {key!r} {why_not_lora(found, parameter, layout)}; an "
                           "adapter may only add LoRA weights to the modules adapter_config.json "
                           "targets: remove the key, or export the adapter again with svlora")
    complete = {name for name, saved_parts in parts.items()
                if {"lora_A.weight", "lora_B.weight"} <= saved_parts
                or {"lora_embedding_A", "lora_embedding_B"} <= saved_parts}
    if not complete:
        raise AdapterError(f"{path}: holds no LoRA weights for the {len(targeted)} module(s) "
                           "adapter_config.json targets (empty, or its keys renamed), so it would "
                           "change nothing; export the adapter again with svlora")
    missing = sorted(targeted - complete)
    if missing:
        raise AdapterError(f"{path}: no complete LoRA weights (A and B) for {len(missing)} of the "
                           f"{len(targeted)} targeted modules (first: {missing[0]}), which would "
                           "stay untrained; export the adapter again with svlora")


def why_not_lora(lora: re.Match | None, parameter: str, layout: ModelLayout) -> str:
    if parameter in layout.parameters:
        return ("is a weight of the base model itself: loading it would overwrite the shared base "
                "for every user")
    if lora and lora["module"] in layout.features:
        return f"is a LoRA weight of {lora['module']}, which adapter_config.json does not target"
    return "names no layer of this model (renamed keys, or another architecture)"


def check_lora_shape(path: Path, key: str, shape: tuple[int, ...], part: str, rank: int,
                     sizes: tuple[int, int] | None) -> None:
    """A LoRA factor at the config's rank and, on a Linear layer, the layer's (in, out) size."""
    if part in RANK_AXIS and (len(shape) < 2 or shape[RANK_AXIS[part]] != rank):
        raise AdapterError(f"{path}: tensor {key!r} has shape {list(shape)}, not rank r={rank} as "
                           "adapter_config.json says; the two files come from different adapters: "
                           "copy both from one export")
    expected = {"lora_A.weight": (rank, sizes[0]), "lora_B.weight": (sizes[1], rank)}.get(part) \
        if sizes else None
    if expected and shape != expected:
        raise AdapterError(f"{path}: tensor {key!r} has shape {list(shape)}, but this model's "
                           f"layer maps {sizes[0]} → {sizes[1]} features (expected "
                           f"{list(expected)}); the adapter was trained on another model size")


def checked_adapter_meta(adapter_dir: str | Path, base_sha256: str,
                         allow_base_mismatch: bool = False, *, module,
                         labels: LabelSchema | None = None) -> dict:
    """svlora.json of an adapter that may be attached to `module` (the base SenseVoiceSmall,
    the PeftModel around it, or its ModelLayout, computed once): metadata, base sha256 and
    (given `labels`, the run's schema) label schema checked, and the weights checked against
    the model (check_adapter_fits: LoRA weights of targeted modules only, finite, at the
    config's rank) before PEFT touches anything."""
    meta = read_adapter_meta(adapter_dir)
    adapter_labels(meta, adapter_dir, labels)
    check_adapter_matches_base(meta, adapter_dir, base_sha256, allow_base_mismatch)
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    shapes = read_tensor_shapes(weights)
    check_adapter_fits(weights, read_lora_config(Path(adapter_dir)), shapes,
                       module if isinstance(module, ModelLayout) else ModelLayout.of(module))
    return meta


def inject_adapter(module, adapter_dir: str | Path, name: str = "default"):
    """Load an already checked adapter's LoRA weights under `name` and make it the active one,
    for inference. `module` is a SenseVoiceSmall (wrapped in a new PeftModel) or a PeftModel
    from an earlier call (the adapter is added beside the others). PEFT injects the LoRA layers
    into the SenseVoiceSmall itself, so decoding it uses the active adapter."""
    from peft import PeftModel

    if isinstance(module, PeftModel):
        peft_model = module
        if not peft_model.peft_config:  # every earlier adapter unloaded: PEFT would re-activate
            peft_model.base_model.active_adapter = name  # an empty list and fail (modules_to_save)
        peft_model.load_adapter(str(adapter_dir), adapter_name=name)
    else:
        peft_model = PeftModel.from_pretrained(module, str(adapter_dir), adapter_name=name,
                                               is_trainable=False)
    peft_model.set_adapter(name)
    peft_model.eval()
    return peft_model


def attach_adapter(module, adapter_dir: str | Path, base_sha256: str,
                   allow_base_mismatch: bool = False, name: str = "default",
                   labels: LabelSchema | None = None):
    """checked_adapter_meta, then inject_adapter: (the PeftModel, the adapter's metadata)."""
    meta = checked_adapter_meta(adapter_dir, base_sha256, allow_base_mismatch, module=module,
                                labels=labels)
    return inject_adapter(module, adapter_dir, name), meta


def adapter_identity(adapter_dir: str | Path) -> str:
    """One sha256 over an adapter's weights *and* its adapter_config.json: the config's scale
    (lora_alpha / r) and targets change outputs as much as the weights do."""
    return sha256_of_files(adapter_dir, PEFT_FILES)


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
