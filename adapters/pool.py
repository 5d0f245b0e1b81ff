"""The models one server holds: one SenseVoiceSmall base, LoRA adapters layered on it as one
PEFT model (loaded and unloaded while serving, optionally LRU-bounded), and post-processing
pipelines (rules or a cascade after the base or an adapter), each selectable by name."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from svlora.adapter_format import checked_adapter_meta, inject_adapter
from svlora.decoding import PreparedFile, decode_prepared
from svlora.errors import AdapterError, SvloraError
from svlora.model import BaseModel, load_base_model, weights_sha256
from svlora.segments import LazyVad

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


@dataclass
class ServeSettings:
    model: str
    adapters: dict[str, str] = field(default_factory=dict)   # name → adapter dir
    rules: dict[str, tuple[str, str]] = field(default_factory=dict)    # name → (model, rules)
    cascades: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (model, dir)
    base_name: str = "sensevoice-small"
    device: str = "cpu"
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's limit
    max_audio_seconds: float = 3600.0
    allow_base_mismatch: bool = False
    adapter_root: str | None = None   # admin loads only adapters under this directory
    admin_token: str | None = None
    max_adapters: int | None = None   # LRU bound on loaded adapters
    batch_window_ms: float = 10.0     # how long the batcher waits for more requests
    max_batch_requests: int = 32
    max_batch_seconds: float | None = None  # padded seconds per forward pass (default: device's)
    max_queue: int = 64               # requests waiting or decoding; beyond: 503 + Retry-After
    unload_timeout_s: float = 60.0


class ModelBusy(SvloraError):
    """An adapter cannot be unloaded or evicted now (requests in flight, or a pipeline uses it)."""


@dataclass
class LoadedAdapter:
    path: str
    base_sha256: str | None
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    draining: bool = False


@dataclass
class Route:
    """What a model name does: decode with `stage1` (the base or an adapter), then optionally
    re-decide with a cascade and/or apply rules."""

    stage1: str
    rules: object | None = None
    cascade: object | None = None

    def finish(self, result: dict) -> dict:
        """Stage 1's result after this route's cascade, then its rules (as `svlora eval`'s arms
        order them)."""
        from svlora.postprocess import result_with_cascade, result_with_rules

        if self.cascade is not None:
            result = result_with_cascade(self.cascade, result)
        if self.rules is not None:
            result = result_with_rules(self.rules, result)
        return result


class ModelPool:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.base: BaseModel = load_base_model(settings.model, device=settings.device)
        self.base_sha256 = weights_sha256(self.base.model_dir)
        self.peft_model = None
        self.adapters: dict[str, LoadedAdapter] = {}
        self.pipelines: dict[str, Route] = {}
        self.model_lock = threading.Lock()     # the PEFT model: decoding vs load/unload
        self.registry_lock = threading.Lock()  # names, counts, LRU
        self.vad_model = LazyVad()  # Silero VAD, loaded on the first long file
        if settings.max_adapters is not None and len(settings.adapters) > settings.max_adapters:
            raise SvloraError(f"{len(settings.adapters)} --adapter given but --max-adapters is "
                              f"{settings.max_adapters}")
        for name, path in settings.adapters.items():
            self.load_adapter(name, path, admin=False)
        for name, (source, rules) in settings.rules.items():
            self.add_pipeline(name, source, rules=rules)
        for name, (source, directory) in settings.cascades.items():
            self.add_pipeline(name, source, cascade=directory)

    # ---- names ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self.registry_lock:
            adapters = [n for n, a in self.adapters.items() if not a.draining]
        return [self.settings.base_name, *adapters, *self.pipelines]

    def model_entries(self) -> list[dict]:
        entry = {"object": "model", "owned_by": "svlora"}
        rows = [{"id": self.settings.base_name, **entry, "kind": "base", "base_sha256": self.base_sha256}]
        with self.registry_lock:
            rows += [{"id": n, **entry, "kind": "adapter", "adapter": a.path, "base_sha256": a.base_sha256}
                     for n, a in self.adapters.items() if not a.draining]
        rows += [{"id": n, **entry, "kind": "rules" if r.rules else "cascade", "stage1": r.stage1,
                  "base_sha256": self.base_sha256} for n, r in self.pipelines.items()]
        return rows

    def check_new_name(self, name: str) -> None:
        if not name or "/" in name or name in self.names() or name in self.adapters:
            raise SvloraError(f"model name {name!r} is empty, has a '/', or is already taken")

    # ---- adapters ---------------------------------------------------------------------------
    def adapter_dir(self, path: str) -> Path:
        """An admin-requested adapter path, which must lie under --adapter-root."""
        root = self.settings.adapter_root
        if root is None:
            raise PermissionError("loading adapters at run time needs --adapter-root")
        root_dir = Path(root).resolve()
        candidate = (root_dir / path).resolve()
        if not candidate.is_relative_to(root_dir):
            raise PermissionError(f"{path}: outside --adapter-root {root_dir}")
        if not candidate.is_dir():
            raise AdapterError(f"{path}: no adapter directory under --adapter-root")
        return candidate

    def load_adapter(self, name: str, path: str, admin: bool = True) -> dict:
        """Attach an adapter as `name`: validated (svlora metadata, base sha256, safetensors)
        before PEFT touches the model; a failure leaves the model as it was."""
        self.check_new_name(name)
        directory = self.adapter_dir(path) if admin else Path(path)
        # refuse a bad adapter before anything is evicted for it
        meta = checked_adapter_meta(directory, self.base_sha256, self.settings.allow_base_mismatch)
        if self.settings.max_adapters is not None:
            while len(self.adapters) >= self.settings.max_adapters:
                self.evict_one()
        with self.model_lock:
            try:
                self.peft_model = inject_adapter(self.peft_model or self.base.model, directory, name)
            except Exception as error:  # PEFT's own errors (shapes, keys): the model stays as it was
                self.drop_partial(name)
                raise AdapterError(f"{directory}: not a loadable adapter ({type(error).__name__}: "
                                   f"{error})") from error
        with self.registry_lock:
            self.adapters[name] = LoadedAdapter(str(directory), meta.get("base_sha256"))
        return {"id": name, "adapter": str(directory), "base_sha256": meta.get("base_sha256")}

    def drop_partial(self, name: str) -> None:
        if self.peft_model is not None and name in self.peft_model.peft_config:
            self.peft_model.delete_adapter(name)

    def evict_one(self) -> None:
        """Unload the least recently used adapter that is idle and no pipeline uses."""
        with self.registry_lock:
            used = {route.stage1 for route in self.pipelines.values()}
            idle = [(a.last_used, n) for n, a in self.adapters.items()
                    if a.in_flight == 0 and not a.draining and n not in used]
        if not idle:
            raise ModelBusy(f"--max-adapters {self.settings.max_adapters} reached and every "
                            "loaded adapter is busy or used by a pipeline; retry later")
        self.unload_adapter(min(idle)[1])

    def unload_adapter(self, name: str) -> None:
        """Stop routing to `name`, wait for its requests in flight, then delete it."""
        with self.registry_lock:
            adapter = self.adapters.get(name)
            if adapter is None or adapter.draining:
                raise KeyError(name)
            users = [n for n, r in self.pipelines.items() if r.stage1 == name]
            if users:
                raise ModelBusy(f"adapter {name!r} is used by pipeline(s) {', '.join(users)}")
            adapter.draining = True
        deadline = time.monotonic() + self.settings.unload_timeout_s
        while adapter.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        if adapter.in_flight:
            adapter.draining = False
            raise ModelBusy(f"adapter {name!r} still has {adapter.in_flight} request(s) in flight")
        with self.model_lock:
            self.peft_model.delete_adapter(name)
        with self.registry_lock:
            del self.adapters[name]

    # ---- pipelines --------------------------------------------------------------------------
    def add_pipeline(self, name: str, source: str, rules: str | None = None,
                     cascade: str | None = None) -> None:
        self.check_new_name(name)
        if source != self.settings.base_name and source not in self.adapters:
            raise SvloraError(f"pipeline {name!r}: {source!r} is not the base or an --adapter name")
        route = Route(source)
        if rules:
            from svlora.postprocess import load_rules
            from svlora.recipes.rules import rules_path

            route.rules = load_rules(rules_path(rules))
        if cascade:
            from svlora.io import sha256_file
            from svlora.postprocess import load_cascade

            adapter_sha256 = (None if source == self.settings.base_name else
                              sha256_file(Path(self.adapters[source].path) / "adapter_model.safetensors"))
            route.cascade = load_cascade(cascade, self.base_sha256, adapter_sha256,
                                         self.settings.allow_base_mismatch)
        self.pipelines[name] = route

    # ---- requests ---------------------------------------------------------------------------
    def acquire(self, name: str) -> Route:
        """A request's hold on a model name (unknown → KeyError): an adapter stays loaded until
        release(route)."""
        route = self.route(name)
        if route.stage1 != self.settings.base_name:
            with self.registry_lock:
                adapter = self.adapters.get(route.stage1)
                if adapter is None or adapter.draining:
                    raise KeyError(name)
                adapter.in_flight += 1
                adapter.last_used = time.monotonic()
        return route

    def release(self, route: Route) -> None:
        if route.stage1 != self.settings.base_name:
            with self.registry_lock:
                self.adapters[route.stage1].in_flight -= 1

    def route(self, name: str) -> Route:
        if name == self.settings.base_name:
            return Route(name)
        if name in self.pipelines:
            return self.pipelines[name]
        with self.registry_lock:
            adapter = self.adapters.get(name)
        if adapter is None or adapter.draining:
            raise KeyError(name)
        return Route(name)

    def mixed_adapters(self, names: list[str]):
        """PEFT's mixed-batch inference: row i of the next forward pass uses adapter names[i]."""
        if self.peft_model is None:
            return nullcontext()
        rows = [BASE_ROW if n == self.settings.base_name else n for n in names]
        return self.peft_model.base_model._enable_peft_forward_hooks(adapter_names=rows)

    def decode(self, files: list[PreparedFile], stage1: list[str], language: str, itn: str,
               with_pooled: bool) -> list[dict]:
        """One shared decoding of files from several requests, each row with its own adapter."""
        with self.model_lock:
            return decode_prepared(self.base, files, self.settings.max_batch_seconds, language, itn,
                                   with_pooled=with_pooled,
                                   batch_context=lambda owners: self.mixed_adapters(
                                       [stage1[i] for i in owners]))
