"""Typed configs: YAML onto nested dataclasses, dotted key=value overrides, unknown keys rejected."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from svlora.errors import RecipeError

Config = TypeVar("Config")


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _coerce(value: Any, kind: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where, key) if len(options) == 1 else value
    if _is_dataclass_type(kind):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {key}: expected a mapping, got {value!r}")
        return from_dict(kind, value, where, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {key}: expected a list, got {value!r}")
        (item_kind,) = typing.get_args(kind) or (Any,)
        return [_coerce(item, item_kind, where, f"{key}[{i}]") for i, item in enumerate(value)]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise RecipeError(f"{where}: {key}: expected a number, got {value!r}") from None
    if kind in (int, bool, str) and not isinstance(value, kind):
        raise RecipeError(f"{where}: {key}: expected {kind.__name__}, got {value!r}")
    if kind is int and isinstance(value, bool):
        raise RecipeError(f"{where}: {key}: expected int, got {value!r}")
    return value


def from_dict(cls: type[Config], data: dict, where: str = "config", prefix: str = "") -> Config:
    """Build dataclass `cls` from `data`; an unknown or mistyped key raises RecipeError naming
    `where` (the file) and the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"valid keys: {', '.join(prefix + n for n in sorted(names))}")
    values = {name: _coerce(value, hints[name], where, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise RecipeError(f"{where}: {error}") from error


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys from 'a.b=value' strings; values are parsed as YAML scalars."""
    for override in overrides:
        if "=" not in override:
            raise RecipeError(f"override {override!r}: expected key=value (e.g. optim.lr=1e-4)")
        key, raw = override.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {override!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise RecipeError(f"override {override!r}: the value is not valid YAML ({problem}); "
                              "quote it or complete it, e.g. lora.targets=[attention,ffn]") from None
    return data


def load_config(cls: type[Config], path: str | Path, overrides: list[str] | None = None,
                check: Callable[[Config, str], None] | None = None, kind: str = "recipe") -> Config:
    """Read YAML at `path`, apply overrides, and build `cls`; `check(config, where)` validates
    values. Errors name the file and key, or the command-line override that caused them."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: {kind} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML ({error})") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a {kind} is a YAML mapping")
    config = from_dict(cls, data, str(path))
    if check:
        check(config, str(path))
    for override in overrides or []:  # one at a time, so an error names the override, not the file
        data = apply_overrides(copy.deepcopy(data), [override])
        where = f"command-line override {override!r}"
        config = from_dict(cls, data, where)
        if check:
            check(config, where)
    return config


def parse_named_target(spec: str, flag: str, example: str) -> tuple[str, str, str]:
    """(name, source, target) of a 'NAME=SOURCE:TARGET' command-line spec."""
    from svlora.errors import SvloraError

    name, _, rest = spec.partition("=")
    source, _, target = rest.partition(":")
    if not (name and source and target):
        raise SvloraError(f"{flag} {spec!r}: expected NAME=SOURCE:TARGET, e.g. {example}")
    return name, source, target
