"""The models one server holds: one SenseVoiceSmall base, LoRA adapters layered on it as one
PEFT model (loaded and unloaded while serving, optionally LRU-bounded), and post-processing
pipelines (rules or a cascade after the base or an adapter), each selectable by name."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from svlora.adapter_format import (ModelLayout, adapter_identity, adapter_labels,
                                   checked_adapter_meta, inject_adapter)
from svlora.decoding import PreparedFile, decode_prepared
from svlora.errors import AdapterError, SvloraError
from svlora.hotwords import (DEFAULT_BEAM, DEFAULT_HOTWORD_SCORE, Hotwords, build_hotwords,
                             check_search_settings, request_terms)
from svlora.io import sha256_file
from svlora.label_schema import LabelSchema
from svlora.model import BaseModel, load_base_model, weights_sha256
from svlora.segments import LazyVad
from svlora.terms import TermList, read_terms

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
# Model names go into PEFT's module dicts (no '.'), URLs, logs and Prometheus labels: a small
# charset, bounded, starting with a letter or digit (so never BASE_ROW); '+' for pipelines.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,63}")
REQUEST_GRAPHS = 32  # requests' own hotword graphs kept (a client resending its list reuses it)
MODEL_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ + -, starting with a letter or digit"


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
    hotwords: str | None = None       # a terms file every request is biased towards
    hotword_score: float = DEFAULT_HOTWORD_SCORE
    beam: int = DEFAULT_BEAM
    subtitle_seconds: float = 7.0     # srt/vtt: no cue longer than this
    realtime_max_connections: int = 16
    realtime_max_session_seconds: float = 1800.0
    realtime_idle_seconds: float = 60.0
    capture_dir: str | None = None    # keep sampled requests here (svlora.captures); None: off
    capture_rate: float = 0.1         # the share of requests kept
    capture_max_bytes: int = 10 * 2**30  # past it, the oldest captures go
    capture_queue: int = 64           # captures waiting for the writer; beyond: dropped
    feedback_token: str | None = None  # POST /v1/feedback's bearer token (default: the admin's)


class Conflict(SvloraError):
    """The request conflicts with the server's state now (HTTP 409): a name already taken,
    another adapter load or unload under way."""


class ModelBusy(Conflict):
    """An adapter cannot be unloaded or evicted now (requests in flight, or a pipeline uses it)."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a model, else None."""
    import torch

    if not MODEL_NAME.fullmatch(name):
        return f"model name {name[:80]!r} is not {MODEL_NAME_RULE}"
    if hasattr(torch.nn.ModuleDict(), name):  # PEFT keeps each adapter in such dicts
        return f"model name {name!r} is reserved (a PyTorch module attribute); choose another"
    return None


@dataclass
class LoadedAdapter:
    path: str
    base_sha256: str | None
    adapter_sha256: str  # adapter_identity: weights and adapter_config.json
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
    identity: dict = field(default_factory=dict)  # the rules file's / cascade's path and sha256


class ModelPool:
    def __init__(self, settings: ServeSettings):
        self.settings = settings
        for name in [*settings.adapters, *settings.rules, *settings.cascades]:  # before the load
            if problem := name_problem(name):
                raise SvloraError(problem)
        check_search_settings(settings.hotword_score, settings.beam)  # requests' hotwords use them
        terms = read_terms(settings.hotwords) if settings.hotwords else None  # before the load
        # decoding only: on a bf16 GPU the base's matmul weights are stored in bf16 once; adapters
        # loaded later keep fp32 factors (PEFT's autocast_adapter_dtype)
        self.base: BaseModel = load_base_model(settings.model, device=settings.device, bf16_weights=True)
        self.base_sha256 = weights_sha256(self.base.model_dir)
        self.layout = ModelLayout.of(self.base.model)  # what every adapter is checked against
        self.peft_model = None
        self.adapters: dict[str, LoadedAdapter] = {}
        self.pipelines: dict[str, Route] = {}
        self.model_lock = threading.Lock()       # the PEFT model: a forward pass vs load/unload
        self.registry = threading.Condition()   # names, in-flight counts, LRU; unload waits on it
        self.admin_lock = threading.Lock()       # one load/unload at a time, check to register
        self.vad_model = LazyVad()  # Silero VAD, loaded on the first long file
        self.hotwords = build_hotwords(self.base.tokenizer, terms, settings.hotword_score,
                                       settings.beam) if terms else None
        self.request_graphs: dict[str, Hotwords] = {}  # a few recent requests' own hotwords
        self.graph_lock = threading.Lock()
        # one label schema per server: the base dir's own (a merged export), else the first
        # adapter's; every later adapter must have the same (its output rows mean the same)
        self.labels_fixed = not self.base.labels.is_default
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
        with self.registry:
            adapters = [n for n, a in self.adapters.items() if not a.draining]
        return [self.settings.base_name, *adapters, *self.pipelines]

    def model_entries(self) -> list[dict]:
        entry = {"object": "model", "owned_by": "svlora"}
        rows = [{"id": self.settings.base_name, **entry, "kind": "base", "base_sha256": self.base_sha256}]
        with self.registry:
            rows += [{"id": n, **entry, "kind": "adapter", "adapter": a.path, "base_sha256": a.base_sha256,
                      "adapter_sha256": a.adapter_sha256}
                     for n, a in self.adapters.items() if not a.draining]
            stage1 = {n: a.adapter_sha256 for n, a in self.adapters.items()}
        rows += [{"id": n, **entry, "kind": "rules" if r.rules else "cascade", "stage1": r.stage1,
                  "base_sha256": self.base_sha256, "adapter_sha256": stage1.get(r.stage1)}
                 for n, r in self.pipelines.items()]
        return rows

    def served_by(self, name: str) -> tuple[str, dict]:
        """What a model name is (base | adapter | pipeline) and the hashes of what it decodes
        with: the base's weights, the adapter's identity, the rules file's or cascade's, and
        the label schema it answers in (resolved, as labels.json holds it)."""
        route = self.route(name)  # KeyError: not (or no longer) loaded
        with self.registry:
            adapter = self.adapters.get(route.stage1)
        hashes = {"base_sha256": self.base_sha256,
                  **({"adapter_sha256": adapter.adapter_sha256} if adapter else {}),
                  "labels": self.labels_of(name).to_dict()}
        if name in self.pipelines:
            return "pipeline", {"stage1": route.stage1, **hashes, **route.identity}
        return ("adapter" if adapter else "base"), hashes

    def labels_of(self, name: str) -> LabelSchema:
        """The label schema `name` speaks. One per server (every adapter and cascade is checked
        against it at load), extra heads included, so any name — even one unloaded since — has it."""
        return self.base.labels

    def check_new_name(self, name: str) -> None:
        """A valid name (else SvloraError: 400) that no model has (else Conflict: 409)."""
        problem = name_problem(name)
        if problem:
            raise SvloraError(problem)
        if name == self.settings.base_name or name in self.adapters or name in self.pipelines:
            raise Conflict(f"model name {name!r} is already taken; unload it first or choose another")

    # ---- adapters ---------------------------------------------------------------------------
    def adapter_dir(self, path: str) -> Path:
        """An admin-requested adapter path, which must lie under --adapter-root."""
        root = self.settings.adapter_root
        if root is None:
            raise PermissionError("loading adapters at run time needs --adapter-root")
        if "\0" in path:  # the OS refuses it deep inside resolve()
            raise AdapterError(f"{path!r}: an adapter path cannot hold a NUL byte")
        root_dir = Path(root).resolve()
        candidate = (root_dir / path).resolve()
        if not candidate.is_relative_to(root_dir):
            raise PermissionError(f"{path}: outside --adapter-root {root_dir}")
        if not candidate.is_dir():
            raise AdapterError(f"{path}: no adapter directory under --adapter-root")
        return candidate

    @contextmanager
    def admin_change(self):
        """Hold the admin lock, or Conflict: concurrent loads would each pass the name and
        --max-adapters checks before any registered (all 201, limit bypassed); serialised they
        would evict each other's adapters in turn. So one runs, the others hear 409 and retry."""
        if not self.admin_lock.acquire(blocking=False):
            raise Conflict("another adapter load or unload is under way; retry when it has finished")
        try:
            yield
        finally:
            self.admin_lock.release()

    def load_adapter(self, name: str, path: str, admin: bool = True) -> dict:
        """Attach an adapter as `name`: name, path, metadata, base sha256 and weights checked,
        LRU eviction, injection and registration as one admin change; an adapter the checks
        refuse evicts nothing, and one PEFT fails on leaves the model as it was."""
        with self.admin_change():
            self.check_new_name(name)
            directory = self.adapter_dir(path) if admin else Path(path)
            # refuse a bad adapter before anything is evicted for it
            meta = checked_adapter_meta(directory, self.base_sha256, self.settings.allow_base_mismatch,
                                        module=self.layout,
                                        labels=self.base.labels if self.labels_fixed else None)
            identity = adapter_identity(directory)
            if self.settings.max_adapters is not None:
                while len(self.adapters) >= self.settings.max_adapters:
                    self.evict_one()
            self.inject(name, directory)
            if not self.labels_fixed:
                with self.model_lock:
                    self.base.use_labels(adapter_labels(meta, directory, None))
                self.labels_fixed = True
            with self.registry:
                self.adapters[name] = LoadedAdapter(str(directory), meta.get("base_sha256"), identity)
        return {"id": name, "adapter": str(directory), "base_sha256": meta.get("base_sha256"),
                "adapter_sha256": identity}

    def inject(self, name: str, directory: Path) -> None:
        with self.model_lock:
            active = self.peft_model.active_adapter if self.peft_model is not None else None
            try:
                self.peft_model = inject_adapter(self.peft_model or self.base.model, directory, name)
            except Exception as error:  # PEFT's own errors: the model goes back to how it was
                self.drop_partial(name, active)
                raise AdapterError(f"{directory}: not a loadable adapter ({type(error).__name__}: "
                                   f"{error})") from error

    def drop_partial(self, name: str, active: str | None) -> None:
        """Remove what a failed injection left of `name` (PEFT wraps layers one by one, so a
        failure mid-way leaves some holding it) and make `active` PEFT's active adapter again,
        so that later loads and unloads find the model as it was before the attempt."""
        from peft.tuners.lora import LoraLayer

        if self.peft_model is None:  # the first adapter: PEFT wrapped the base's layers in place
            for module in self.base.model.modules():
                if isinstance(module, LoraLayer):
                    module.delete_adapter(name)
            return
        if name in self.peft_model.peft_config:
            self.peft_model.delete_adapter(name)
        for module in self.peft_model.modules():  # layers wrapped before the failure
            if isinstance(module, LoraLayer) and name in module.r:
                module.delete_adapter(name)
        if active is not None:
            self.peft_model.set_adapter(active)

    def evict_one(self) -> None:
        """Unload the least recently used adapter that is idle and no pipeline uses (the caller
        holds the admin lock)."""
        with self.registry:
            used = {route.stage1 for route in self.pipelines.values()}
            idle = [(a.last_used, n) for n, a in self.adapters.items()
                    if a.in_flight == 0 and not a.draining and n not in used]
        if not idle:
            raise ModelBusy(f"--max-adapters {self.settings.max_adapters} reached and every "
                            "loaded adapter is busy or used by a pipeline; retry later")
        self.drain_and_delete(min(idle)[1])

    def unload_adapter(self, name: str) -> None:
        """Stop routing to `name`, wait for its requests in flight, then delete it."""
        with self.admin_change():
            self.drain_and_delete(name)

    def drain_and_delete(self, name: str) -> None:
        with self.registry:
            adapter = self.adapters.get(name)
            if adapter is None or adapter.draining:
                raise KeyError(name)
            users = [n for n, r in self.pipelines.items() if r.stage1 == name]
            if users:
                raise ModelBusy(f"adapter {name!r} is used by pipeline(s) {', '.join(users)}")
            adapter.draining = True  # acquire() refuses it from now on
            if not self.registry.wait_for(lambda: adapter.in_flight == 0, self.settings.unload_timeout_s):
                adapter.draining = False
                raise ModelBusy(f"adapter {name!r} still has {adapter.in_flight} request(s) in flight "
                                f"after {self.settings.unload_timeout_s:g} s; retry later")
        with self.model_lock:
            self.peft_model.delete_adapter(name)
        with self.registry:
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

            route.rules = load_rules(rules_path(rules), self.base.labels)
            route.identity.update(rules=str(rules_path(rules)), rules_sha256=sha256_file(rules_path(rules)))
        if cascade:
            from svlora.postprocess import cascade_identity, load_cascade

            adapter_sha256 = (None if source == self.settings.base_name else
                              self.adapters[source].adapter_sha256)
            route.cascade = load_cascade(cascade, self.base_sha256, adapter_sha256,
                                         self.settings.allow_base_mismatch, labels=self.base.labels)
            route.identity.update(cascade=str(cascade), cascade_sha256=cascade_identity(cascade))
        self.pipelines[name] = route

    # ---- requests ---------------------------------------------------------------------------
    def acquire(self, name: str) -> Route:
        """A request's hold on a model name (unknown → KeyError): an adapter stays loaded until
        release(route)."""
        route = self.route(name)
        if route.stage1 != self.settings.base_name:
            with self.registry:
                adapter = self.adapters.get(route.stage1)
                if adapter is None or adapter.draining:
                    raise KeyError(name)
                adapter.in_flight += 1
                adapter.last_used = time.monotonic()
        return route

    def release(self, route: Route) -> None:
        if route.stage1 != self.settings.base_name:
            with self.registry:
                self.adapters[route.stage1].in_flight -= 1
                self.registry.notify_all()  # an unload may be waiting for the count to reach 0

    def route(self, name: str) -> Route:
        if name == self.settings.base_name:
            return Route(name)
        if name in self.pipelines:
            return self.pipelines[name]
        with self.registry:
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

    def hotwords_for(self, terms: str | None) -> Hotwords | None:
        """What a request decodes with: the server's --hotwords, plus the request's own terms
        (one per line or comma-separated; TermsError names what is wrong)."""
        if not terms or not terms.strip():
            return self.hotwords
        with self.graph_lock:  # requests arrive on several threads
            return self.cached_request_hotwords(terms)

    def cached_request_hotwords(self, terms: str) -> Hotwords:
        if terms not in self.request_graphs:
            requested = request_terms(terms)
            # the server's terms are known good: a spelling error names the request's line
            merged = TermList((self.hotwords.terms.terms if self.hotwords else ()) + requested.terms,
                              requested.source)
            while len(self.request_graphs) >= REQUEST_GRAPHS:
                self.request_graphs.pop(next(iter(self.request_graphs)))
            self.request_graphs[terms] = build_hotwords(self.base.tokenizer, merged,
                                                        self.settings.hotword_score, self.settings.beam)
        return self.request_graphs[terms]

    def decode(self, files: list[PreparedFile], stage1: list[str], language: str, itn: str,
               with_pooled: bool, hotwords: list[Hotwords | None] | None = None,
               timestamps: list[bool] | bool = False) -> list[dict]:
        """One shared decoding of files from several requests, each row with its own adapter
        (and its own hotwords, and word timestamps or not)."""
        with self.model_lock:
            return decode_prepared(self.base, files, self.settings.max_batch_seconds, language, itn,
                                   with_pooled=with_pooled,
                                   batch_context=lambda owners: self.mixed_adapters(
                                       [stage1[i] for i in owners]),
                                   hotwords=hotwords if hotwords is not None else self.hotwords,
                                   timestamps=timestamps)

    @staticmethod
    def finish(routes: list[Route], results: list[dict]) -> list[dict | Exception]:
        """Each decoded result after its route's cascade, then its rules (as `svlora eval`'s
        arms order them). The server's decode worker calls this, so a slow post-processing step delays decoding but never the event loop
        (/health, uploads, admin); a step that fails fails its own request only."""
        from svlora.postprocess import results_with_cascade, result_with_rules

        finished: list[dict | Exception] = list(results)
        by_cascade: dict[int, list[int]] = {}  # one cascade forward pass per cascade in the batch
        for index, route in enumerate(routes):
            if route is not None and route.cascade is not None:
                by_cascade.setdefault(id(route.cascade), []).append(index)
        for members in by_cascade.values():
            try:
                relabelled = results_with_cascade(routes[members[0]].cascade,
                                                  [results[i] for i in members])
            except Exception as error:  # noqa: BLE001 — returned to those requests as their error
                relabelled = [error] * len(members)
            for index, result in zip(members, relabelled):
                finished[index] = result
        for index, route in enumerate(routes):
            if route is None or route.rules is None or isinstance(finished[index], Exception):
                continue
            try:
                finished[index] = result_with_rules(route.rules, finished[index])
            except Exception as error:  # noqa: BLE001 — returned to that request as its error
                finished[index] = error
        return finished
