"""Load a SenseVoiceSmall base (a local dir or a hub id) through FunASR, and turn audio and
labels into the tensors it trains and decodes on. Every stage loads its model here."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svlora.errors import ModelError
from svlora.frontend import FrontendConfig, compute_features, frontend_config
from svlora.io import sha256_file
from svlora.label_schema import (DEFAULT_SCHEMA, SCHEMA_FILE, SENSEVOICE_QUERY_ROWS, LabelSchema,
                                 read_schema_file)
from svlora.labels import ITN_TAGS

RICH_PREFIX_LENGTH = 4  # [language, emotion, event, itn] precede the text in SenseVoice targets
IGNORE_ID = -1  # SenseVoiceSmall's ignore_id: its rich-tag loss skips this target position


@contextlib.contextmanager
def stdout_to_stderr():
    """FunASR prints notices on import and load; keep stdout clean for --json output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def quiet_funasr_logging():
    """FunASR logs hub and checkpoint lines on every load, even for local dirs."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))  # also loggers that bring their own handlers
    try:
        yield
    finally:
        logging.disable(previous)


FUNASR_IMPORT_NOTICES = ("Notice: ffmpeg is not installed", "If you want to use ffmpeg",
                         "sudo apt install ffmpeg", "# brew install ffmpeg")


def import_automodel():
    """FunASR's AutoModel; its import-time ffmpeg notice (svlora decodes audio itself) is
    dropped, anything else it prints goes to stderr."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        # pydub (a gradio dependency FunASR imports when present) warns about ffmpeg likewise
        warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
        from funasr import AutoModel
    for line in printed.getvalue().splitlines():
        if line.strip() and not any(n in line for n in FUNASR_IMPORT_NOTICES):
            print(line, file=sys.stderr)
    return AutoModel


@dataclass
class BaseModel:
    """A SenseVoiceSmall nn.Module with its tokenizer, frontend settings and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    frontend: FrontendConfig
    model_dir: Path
    config: dict = field(repr=False)
    labels: LabelSchema = DEFAULT_SCHEMA  # the classes it decodes into (use_labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weights_path(self) -> Path:
        return self.model_dir / "model.pt"

    def features(self, waveform: np.ndarray) -> torch.Tensor:
        """LFR+CMVN fbank features [frames, 560] of a 16 kHz mono float waveform, as the
        model's WavFrontend computes them (without dither)."""
        return compute_features(waveform, self.frontend)

    def use_labels(self, schema: LabelSchema) -> None:
        """Decode into `schema`'s classes from now on: its new languages get their query rows
        in the model's lid_dict (the `language` query) and lid_int_dict (FunASR's training
        encode maps a target's language token to its query through it). A model that already
        has labels of its own (its dir's labels.json, or an adapter's) keeps them: another
        schema is refused, its output rows mean other classes."""
        if not self.labels.is_default and schema != self.labels:
            own = ", ".join(t[2:-2] for t in self.labels.emotion)
            raise ModelError(f"{self.model_dir} decodes into its own label schema (emotions {own}), "
                             "not this data's; use data prepared with its labels.json (prepare "
                             "--labels), or the base it was merged from")
        module = self.model
        for name in [n for n in module.lid_dict if n not in SENSEVOICE_QUERY_ROWS]:
            module.lid_int_dict = {t: r for t, r in module.lid_int_dict.items()
                                   if r != module.lid_dict[name]}
            del module.lid_dict[name]
        for name in schema.new_languages():
            module.lid_dict[name] = schema.query_rows[name]
            module.lid_int_dict[schema.language[f"<|{name}|>"]] = schema.query_rows[name]
        self.labels = schema

    def target_ids(self, text: str, language: str, emotion: str | None, event: str,
                   itn: str) -> list[int]:
        """The training target: [lang, emotion, event, itn] tag ids (of the model's label
        schema) then the text's ids. A text-only row (emotion None) gets IGNORE_ID there: no
        emotion loss for it."""
        spelling = {tag: token for token, tag in self.labels.token_names.items()}
        prefix = []
        for tag, vocabulary in ((language, self.labels.language), (emotion, self.labels.emotion),
                                (event, self.labels.event), (itn, ITN_TAGS)):
            if tag is None and vocabulary is self.labels.emotion:
                prefix.append(IGNORE_ID)
                continue
            ids = self.tokenizer.encode(spelling.get(tag, tag))
            if ids != [vocabulary[tag]]:
                raise ModelError(f"tokenizer of {self.model_dir} encodes {spelling.get(tag, tag)} "
                                 f"as {ids}, expected [{vocabulary[tag]}]: not a SenseVoiceSmall "
                                 "tokenizer")
            prefix += ids
        return prefix + self.tokenizer.encode(text)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)


def resolve_device(name: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' as given ('auto': cuda when available); one clear error when the
    device is not there, instead of a traceback from deep inside torch."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" or (name.startswith("cpu:") and name[4:].isdigit()):  # accelerate: cpu:0
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ModelError(f"device {name!r} asked for, but this torch has no CUDA device "
                             f"(torch {torch.__version__}); use --device cpu")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise ModelError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return name
    raise ModelError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto")


def _funasr_failure(printed: str) -> str:
    """The reason FunASR printed (and swallowed) when a hub download failed."""
    for line in printed.splitlines():
        if "failed!:" in line:
            return line.split("failed!:", 1)[1].strip()[:400]
    return printed.strip().splitlines()[-1][:400] if printed.strip() else "no reason given"


# ModelScope and Hugging Face ids: "name" or "namespace/name". Anything else (./x, /abs, a/b/c,
# ~/x, a\b) can only be a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


LOG = logging.getLogger("svlora")


def log_note(message: str) -> None:
    """A progress note on the "svlora" logger: silent in library use (Python's default for an
    unconfigured logger below WARNING); the CLI shows it on stderr as "svlora: MESSAGE"."""
    LOG.info(message)


def resolve_model_dir(model: str, hub: str = "ms",
                      log: Callable[[str], None] | None = log_note) -> Path:
    """A local model dir as is; a hub id (e.g. iic/SenseVoiceSmall) downloaded by FunASR.

    A relative dir (e.g. a recipe's `model: runs/base` run from another folder) has the shape
    of a hub id too, so a miss says so on `log` before the download (which fails slowly);
    a string that cannot be a hub id is refused at once."""
    if hub not in ("ms", "hf"):
        raise ModelError(f"unknown hub {hub!r}: use ms (ModelScope) or hf (Hugging Face)")
    if os.path.isdir(model):
        return Path(model)
    where = f"resolved against the working directory {os.getcwd()}"
    if os.path.exists(model) or not HUB_ID.fullmatch(model):
        raise ModelError(f"{model}: no such model directory ({where})")
    if log:
        log(f"{model} not found locally ({where}); treated as a hub id ({hub})")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), quiet_funasr_logging(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
            from funasr.download.download_model_from_hub import download_model
            kwargs = download_model(model=model, hub=hub, disable_update=True,
                                    trust_remote_code=False)
    except Exception as error:  # FunASR raises many types for an unreachable hub
        raise ModelError(f"cannot download '{model}' from hub {hub}: {error}; pass a local "
                         "model directory instead") from error
    path = Path(kwargs.get("model_path", model))
    if not path.is_dir():
        raise ModelError(f"cannot download '{model}' from hub {hub}: {_funasr_failure(printed.getvalue())}; "
                         f"check the id and the network (`pip install 'svlora[hub]'`), or pass a "
                         "local SenseVoiceSmall directory")
    return path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.pt as a tensor state dict, read with torch.load(weights_only=True): a pickle that
    holds anything but tensors and plain containers is refused, never executed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (corrupt zip), EOFError, ...
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path}: refused: not a plain tensor state dict that "
                         f"torch.load(weights_only=True) can read ({reason}). svlora never unpickles "
                         "code; re-save the weights as a state dict of tensors") from None
    for wrapper in ("state_dict", "model"):  # the layouts FunASR's loader also accepts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy `state` into `module`; refuse a file that lacks weights or has wrong shapes (never
    run with random weights)."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in state]
    if missing:
        raise ModelError(f"{path} lacks {len(missing)} of the model's {len(expected)} weights "
                         f"(e.g. {', '.join(missing[:3])}): refusing to run with random weights")
    wrong = [f"{name} {tuple(state[name].shape)} vs {tuple(t.shape)}" for name, t in expected.items()
             if state[name].shape != t.shape]
    if wrong:
        raise ModelError(f"{path}: weights of the wrong shape for config.yaml: {'; '.join(wrong[:3])}")
    module.load_state_dict({name: state[name] for name in expected}, strict=True)
    extra = sorted(set(state) - set(expected))
    if extra:
        print(f"svlora: {path}: {len(extra)} tensor(s) not used by the model "
              f"(e.g. {', '.join(extra[:3])})", file=sys.stderr)


def load_base_model(model: str, device: str = "cpu", hub: str = "ms",
                    trust_remote_code: bool = False,
                    log: Callable[[str], None] | None = log_note,
                    bf16_weights: bool = False) -> BaseModel:
    """Build SenseVoiceSmall with FunASR's own machinery from the dir's config.yaml, then load
    model.pt ourselves with torch.load(weights_only=True).

    Code a model dir names (config.yaml's trust_remote_code/remote_code, requirements.txt) is
    never imported or installed unless `trust_remote_code` is set. `log` hears what is being
    loaded and how long it took (a hub download or a large model takes tens of seconds).
    `bf16_weights`, for a model that only decodes (serve, eval): on a bf16 GPU the matmul
    weights are stored in bf16 once (store_matmul_weights_in_bf16); elsewhere nothing changes.
    """
    device = resolve_device(device)
    started = time.perf_counter()
    if log:
        log(f"loading {model} on {device} …")
    base = build_base_model(model, device, hub, trust_remote_code, log)
    if log:
        log(f"loaded {model} in {time.perf_counter() - started:.1f} s")
    if bf16_weights and bf16_device(base.device):
        store_matmul_weights_in_bf16(base.model)
    return base


def build_base_model(model: str, device: str, hub: str, trust_remote_code: bool,
                     log: Callable[[str], None] | None) -> BaseModel:
    model_dir = resolve_model_dir(model, hub, log)
    for name in ("config.yaml", "model.pt", "am.mvn"):
        if not (model_dir / name).is_file():
            raise ModelError(f"{model_dir} is not a SenseVoiceSmall model dir: {name} is missing "
                             "(it needs config.yaml, model.pt, am.mvn and the .bpe.model; run "
                             "`svlora make-tiny-model DIR` for a test model)")
    frontend = frontend_config(model_dir)
    state = read_weights(model_dir / "model.pt")
    AutoModel = import_automodel()
    threads = torch.get_num_threads()
    with stdout_to_stderr(), quiet_funasr_logging():
        from funasr.download.download_model_from_hub import download_model
        kwargs = download_model(model=str(model_dir), hub=hub, disable_update=True,
                                trust_remote_code=trust_remote_code)
        if kwargs.get("model") != "SenseVoiceSmall" and not trust_remote_code:
            raise ModelError(f"{model_dir}/config.yaml names model {kwargs.get('model')!r}, not "
                             "SenseVoiceSmall; svlora runs no code from a model dir unless "
                             "--trust-remote-code is given")
        kwargs.pop("init_param", None)  # weights are loaded below, safely
        kwargs.setdefault("model_conf", {})  # already resolved: build_model must not re-download
        try:
            module, kwargs = AutoModel.build_model(**{**kwargs, "device": device, "ncpu": threads})
        except (RuntimeError, TypeError, KeyError, AssertionError) as error:
            raise ModelError(f"{model_dir}: FunASR cannot build the model from config.yaml "
                             f"({str(error).strip().splitlines()[0][:200]})") from None
    torch.set_num_threads(threads)
    if type(module).__name__ != "SenseVoiceSmall":
        raise ModelError(f"{model_dir} holds a {type(module).__name__}, not SenseVoiceSmall")
    load_weights(module, state, model_dir / "model.pt")
    module.to(device)
    # svlora's vectorised WavFrontend, without dither: eval is repeatable, features cacheable.
    base = BaseModel(module, kwargs["tokenizer"], frontend, model_dir, dict(kwargs))
    if (model_dir / SCHEMA_FILE).is_file():  # a merged export of an adapter with its own labels
        base.use_labels(read_schema_file(model_dir / SCHEMA_FILE))
    return base


def quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Every nn.Linear as a dynamically quantised int8 Linear (weights int8, activations
    quantised per batch): PyTorch's CPU path, as ONNX runtimes ship int8 MatMuls."""
    if next(module.parameters()).device.type != "cpu":
        raise ModelError("int8 decoding runs on the CPU; use --device cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (torchao later)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def store_matmul_weights_in_bf16(module: torch.nn.Module) -> int:
    """Cast every Linear and Conv1d weight and bias to bf16, once: what bf16 autocast casts
    them to on every forward, so decoding under autocast gives the same outputs without the
    per-batch copies. Embeddings and norms stay fp32 (autocast leaves them so), and so do LoRA
    factors (a later merge adds them in fp32). Returns the number of tensors cast. For
    inference only (training keeps LoRA weights fp32 itself)."""
    cast = 0
    for name, layer in module.named_modules():
        if ".lora_" in f".{name}":
            continue
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv1d)):
            for parameter in layer.parameters(recurse=False):
                if parameter.dtype == torch.float32:
                    parameter.data = parameter.data.to(torch.bfloat16)
                    cast += 1
    return cast


def bf16_device(device: torch.device) -> bool:
    """A GPU that computes in bf16 (where svlora decodes in bf16)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def weights_sha256(model_dir: str | Path) -> str:
    """Identity of a base model: sha256 of its model.pt."""
    return sha256_file(Path(model_dir) / "model.pt")


def write_model_dir(state_dict: dict, source_dir: str | Path, out_dir: str | Path) -> Path:
    """A model dir in the base's layout: the base's files with model.pt replaced by `state_dict`.

    model.pt stays a plain tensor state dict because FunASR's loader reads that file name;
    it loads with torch.load(weights_only=True).
    """
    import shutil

    from svlora.io import atomic_path

    source, out = Path(source_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "model.pt" or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / item.name)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    with atomic_path(out / "model.pt") as temporary:
        torch.save(tensors, temporary)
    return out
