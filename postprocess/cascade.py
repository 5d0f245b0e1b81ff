"""Cascade: a light emotion classifier after stage 1 (the base or an adapter), trained on what
stage 1 already computed for each clip: its pooled encoder output, its emotion distribution,
and the transcript (hashed character n-grams, or a Hugging Face sequence-classification
model's pooled embedding, frozen). Minutes on a CPU for a thousand clips; saved as safetensors
and a JSON config that records the base (and adapter) it was trained on."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from svlora.adapter_format import Stage1Identity, schema_difference
from svlora.errors import AdapterError, SvloraError
from svlora.io import sha256_of_files
from svlora.label_schema import DEFAULT_SCHEMA, LabelSchema, schema_of_meta
from svlora.metrics import unweighted_average_recall

# version 2: adapter_sha256 is adapter_identity (weights and adapter_config.json); version 1
# hashed the weights only, so a changed lora_alpha went unnoticed
CASCADE_SCHEMA, CASCADE_VERSION = "svlora-cascade", 2
WEIGHTS, CONFIG = "cascade.safetensors", "cascade.json"
HASH_BUCKETS = 512


@dataclass
class CascadeConfig:
    base_sha256: str                   # the stage 1 it was trained on (.stage1)
    adapter_sha256: str | None         # adapter_identity, None for the base alone
    classes: list[str]                 # the emotion tags it predicts
    text: str = "hashed"               # none | hashed | a Hugging Face model dir
    hidden: int = 64                   # 0: a linear (logistic) head
    feature_dims: dict = field(default_factory=dict)
    trained: dict = field(default_factory=dict)   # data, clips, seconds, val metrics
    event_classes: list[str] = field(default_factory=list)  # with an event head: the events
    heads: dict[str, list[str]] = field(default_factory=dict)  # extra heads (role, ...): labels
    labels: dict = field(default_factory=dict)  # the label schema it was trained in (empty: SenseVoice's)
    schema: str = CASCADE_SCHEMA
    version: int = CASCADE_VERSION

    @property
    def stage1(self) -> Stage1Identity:
        return Stage1Identity(self.base_sha256, self.adapter_sha256)

    @cached_property
    def label_schema(self) -> LabelSchema:
        """`labels` read once (the cascade asks for it on every batch it re-decides)."""
        return schema_of_meta({"labels": self.labels}, CONFIG)


def hashed_ngrams(text: str, buckets: int = HASH_BUCKETS) -> np.ndarray:
    """Character 1- and 2-gram counts hashed into `buckets`, L2-normalised."""
    vector = np.zeros(buckets, np.float32)
    text = text.lower()
    for n in (1, 2):
        for i in range(len(text) - n + 1):
            vector[zlib.crc32(text[i:i + n].encode()) % buckets] += 1
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


class TextEncoder:
    """Transcript → vector: hashed n-grams, a frozen Hugging Face model's mean-pooled last
    hidden state, or nothing."""

    def __init__(self, kind: str):
        self.kind, self.model, self.tokenizer = kind, None, None
        if kind not in ("none", "hashed"):
            from transformers import AutoModel, AutoTokenizer

            if not (Path(kind) / "config.json").is_file():
                raise SvloraError(f"--text {kind}: not a Hugging Face model dir (config.json)")
            self.tokenizer = AutoTokenizer.from_pretrained(kind)
            self.model = AutoModel.from_pretrained(kind, use_safetensors=None).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.kind == "none":
            return np.zeros((len(texts), 0), np.float32)
        if self.kind == "hashed":
            return np.stack([hashed_ngrams(t) for t in texts]) if texts else np.zeros((0, HASH_BUCKETS))
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=128,
                                 return_tensors="pt")
        hidden = self.model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy().astype(np.float32)


def clip_features(stage1: list[dict], text: TextEncoder,
                  emotions: dict[str, int] = DEFAULT_SCHEMA.emotion) -> np.ndarray:
    """[clips, features]: pooled encoder output, stage-1 distribution over the schema's
    emotions, text vector."""
    acoustic = np.stack([np.asarray(s["pooled"], np.float32) for s in stage1])
    probabilities = np.array([[s["emotion_probs"].get(tag, 0.0) for tag in emotions]
                              for s in stage1], np.float32)
    return np.concatenate([acoustic, probabilities, text([s["text"] for s in stage1])], axis=1)


class Head(torch.nn.Module):
    def __init__(self, inputs: int, classes: int, hidden: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = torch.nn.Linear(inputs, classes) if hidden == 0 else torch.nn.Sequential(
            torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2),
            torch.nn.Linear(hidden, classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std)


def train_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
               classes: int, hidden: int = 64, epochs: int = 300, seed: int = 0) -> tuple[Head, dict]:
    """Full-batch AdamW with class-balanced cross-entropy; the epoch with the best validation
    UA (accuracy breaks ties) is kept."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
    head = Head(x.shape[1], classes, hidden, mean, std)
    counts = torch.bincount(y, minlength=classes).float()
    weights = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros(()))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-2)
    loss_of = torch.nn.CrossEntropyLoss(weight=weights)
    best, state = (-1.0, -1.0), None
    for epoch in range(epochs):
        head.train()
        optimizer.zero_grad()
        loss_of(head(x), y).backward()
        optimizer.step()
        head.eval()
        with torch.no_grad():
            predicted = head(torch.from_numpy(val_x)).argmax(1).numpy()
        score = (unweighted_average_recall(val_y, predicted), float(np.mean(predicted == val_y)))
        if score > best:
            best, state = score, {k: v.clone() for k, v in head.state_dict().items()}
            best_epoch = epoch
    head.load_state_dict(state)
    head.eval()
    return head, {"val_ua": best[0], "val_accuracy": best[1], "best_epoch": best_epoch}


def save_cascade(out: Path, head: Head, config: CascadeConfig, event_head: Head | None = None,
                 extra_heads: dict[str, Head] | None = None) -> None:
    from safetensors.torch import save_file

    from svlora.adapter_format import replace_dir
    from svlora.io import staging_dir, write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f".{out.name}.")
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    if event_head is not None:
        tensors.update({f"event.{k}": v.contiguous() for k, v in event_head.state_dict().items()})
    for name, extra in (extra_heads or {}).items():
        tensors.update({f"head.{name}.{k}": v.contiguous() for k, v in extra.state_dict().items()})
    save_file(tensors, str(staging / WEIGHTS))
    write_json_atomic(staging / CONFIG, asdict(config))
    replace_dir(staging, out)


@dataclass
class Cascade:
    config: CascadeConfig
    head: Head
    text: TextEncoder
    event_head: Head | None = None
    extra_heads: dict[str, Head] = field(default_factory=dict)

    def predict(self, stage1: list[dict]) -> list[dict[str, float]]:
        """Emotion distributions (over the trained classes) for stage-1 results."""
        return self.predict_all(stage1)[0]

    def predict_both(self, stage1: list[dict]) -> tuple[list[dict], list[dict] | None]:
        """Emotion distributions, and event distributions when the cascade has an event head."""
        return self.predict_all(stage1)[:2]

    def predict_all(self, stage1: list[dict]) -> tuple[list[dict], list[dict] | None, dict]:
        """Emotion distributions, event distributions (with an event head, else None) and
        {head: distributions} of the extra heads."""
        features = torch.from_numpy(clip_features(stage1, self.text,
                                                  self.config.label_schema.emotion))

        def distributions(head: Head, classes: list[str]) -> list[dict[str, float]]:
            with torch.no_grad():
                probabilities = torch.softmax(head(features), dim=-1).numpy()
            return [{tag: round(float(p), 6) for tag, p in zip(classes, row)} for row in probabilities]

        events = distributions(self.event_head, self.config.event_classes) if self.event_head else None
        heads = {name: distributions(head, self.config.heads[name])
                 for name, head in self.extra_heads.items()}
        return distributions(self.head, self.config.classes), events, heads

    def redecide(self, stage1: list[dict]) -> list[dict]:
        """Per stage-1 result ({raw, pooled, emotion_probs, text}): the raw output with the
        emotion (and, with an event head, the event) tag replaced by the cascade's decision,
        the new distributions, and each extra head's label and distribution (`role`,
        `role_probs`)."""
        emotions, events, heads = self.predict_all(stage1)
        schema = self.config.label_schema
        decided = []
        for index, (item, distribution) in enumerate(zip(stage1, emotions)):
            parts, raw = schema.split(item["raw"]), item["raw"]
            emotion = max(distribution, key=distribution.get)
            raw = raw.replace(parts["emotion"], emotion, 1) if parts["emotion"] else raw
            change = {"emotion": emotion, "emotion_probs": distribution}
            if events:
                event = max(events[index], key=events[index].get)
                raw = raw.replace(parts["event"], event, 1) if parts["event"] else raw
                change.update(event=event, event_probs=events[index])
            for name, head_distributions in heads.items():
                probabilities = head_distributions[index]
                change.update({name: max(probabilities, key=probabilities.get),
                               f"{name}_probs": probabilities})
            decided.append({**change, "raw": raw})
        return decided


def load_cascade(directory: str | Path, base_sha256: str, adapter_sha256: str | None,
                 allow_base_mismatch: bool = False, labels: LabelSchema | None = None) -> Cascade:
    """A saved cascade, refused (like an adapter) when trained on another stage 1: base
    model.pt sha256 and, with an adapter, its adapter_identity (Stage1Identity.of); and,
    given `labels` (the run's), when trained in another label schema."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise AdapterError(f"{directory}: not an svlora cascade ({CONFIG} and {WEIGHTS} needed); "
                           "`svlora cascade train` writes one")
    data = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    if data.get("schema") != CASCADE_SCHEMA:
        raise AdapterError(f"{directory / CONFIG}: schema {data.get('schema')!r} is not {CASCADE_SCHEMA}")
    config = CascadeConfig(**data)
    check_stage1(directory, config, Stage1Identity(base_sha256, adapter_sha256), allow_base_mismatch)
    if labels is not None and config.label_schema != labels:
        raise AdapterError(f"{directory}: trained in another label schema than this run's "
                           f"({schema_difference(labels, config.label_schema)}); train a "
                           "cascade on data prepared with this schema")
    state = load_file(str(directory / WEIGHTS))
    inputs = int(sum(config.feature_dims.values()))

    def build(prefix: str, classes: int) -> Head:
        part = {k.removeprefix(prefix): v for k, v in state.items()
                if k.startswith(prefix) and (prefix or not k.startswith(("event.", "head.")))}
        head = Head(inputs, classes, config.hidden, part["mean"], part["std"])
        head.load_state_dict(part)
        return head.eval()

    event_head = build("event.", len(config.event_classes)) if config.event_classes else None
    extra = {name: build(f"head.{name}.", len(classes)) for name, classes in config.heads.items()}
    return Cascade(config, build("", len(config.classes)), TextEncoder(config.text), event_head,
                   extra)


def check_stage1(directory: Path, config: CascadeConfig, stage1: Stage1Identity,
                 allow_base_mismatch: bool) -> None:
    if config.version < 2 and config.adapter_sha256 is not None and not allow_base_mismatch:
        raise AdapterError(f"{directory}: trained by an older svlora, which identified its adapter "
                           "by the weights alone (not adapter_config.json); train the cascade "
                           "again, or pass --allow-base-mismatch")
    if config.stage1 != stage1 and not allow_base_mismatch:
        trained, given = config.stage1, stage1
        raise AdapterError(
            f"{directory}: trained on stage 1 base {trained.base_sha256[:12]}… adapter "
            f"{(trained.adapter_sha256 or 'none')[:12]}, but this is base {given.base_sha256[:12]}… "
            f"adapter {(given.adapter_sha256 or 'none')[:12]} (an adapter is its weights and its "
            "adapter_config.json); train a cascade on this stage 1, or pass --allow-base-mismatch")


def elapsed(started: float) -> float:
    return round(time.time() - started, 1)


def stage1_results(base, rows, ban_emo_unknown: bool = False, cache: Path | None = None,
                   identity: dict | None = None) -> list[dict]:
    """What stage 1 computes for each manifest row: pooled encoder output, emotion
    distribution and transcript (one decoding pass). With `cache`, kept on disk under the
    hash of `identity` (stage-1 hashes, manifest hash, options): a re-run decodes nothing."""
    import hashlib

    from svlora.decoding import decode_features
    from svlora.features import row_features
    from svlora.io import write_json_atomic

    path = None
    if cache is not None:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        path = cache / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
    decoded = decode_features(base, row_features(base, rows, "features"),
                              itn=[row.itn_query for row in rows],
                              ban_emo_unknown=ban_emo_unknown, with_pooled=True)
    results = [{"raw": d.raw, "text": base.labels.split(d.raw)["text"], "emotion_probs": d.emotion_probs,
                "pooled": d.pooled} for d in decoded]
    if path is not None:
        write_json_atomic(path, results)
    return results


def stage1_model(model: str, adapter: str | None, device: str, hub: str,
                 allow_base_mismatch: bool, trust_remote_code: bool,
                 labels: LabelSchema = DEFAULT_SCHEMA):
    """The stage-1 model (base, or base + adapter of the same label schema), decoding into
    `labels`, and its Stage1Identity."""
    from svlora.adapter_format import attach_adapter
    from svlora.model import load_base_model, weights_sha256

    base = load_base_model(model, device=device, hub=hub, trust_remote_code=trust_remote_code)
    base.use_labels(labels)
    stage1 = Stage1Identity.of(weights_sha256(base.model_dir), adapter)
    if adapter:
        attach_adapter(base.model, adapter, stage1.base_sha256, allow_base_mismatch, labels=labels)
    return base, stage1


def train_cascade(model: str, data: str, val: str, out: str, adapter: str | None = None,
                  text: str = "hashed", hidden: int = 64, device: str = "cpu", hub: str = "ms",
                  allow_base_mismatch: bool = False, ban_emo_unknown: bool = False,
                  trust_remote_code: bool = False, cache_dir: str | None = None,
                  log=print, labels: str | None = None) -> CascadeConfig:
    """Train a cascade on `data` (best epoch by UA on `val`) and write it to `out`. Stage 1's
    outputs are cached in `cache_dir` (default: `.stage1-cache` beside `out`), so retraining
    with other head settings decodes nothing."""
    from svlora.io import sha256_file
    from svlora.manifest import read_manifest

    from svlora.label_schema import load_schema, schema_beside

    started = time.time()
    # its classes and heads are what the cascade learns
    labels = load_schema(labels) if labels else schema_beside(data)
    train_rows = [r for r in read_manifest(data, labels) if r.has_emotion]
    val_rows = [r for r in read_manifest(val, labels) if r.has_emotion]
    if not train_rows or not val_rows:
        raise SvloraError(f"{data if not train_rows else val}: no clip has an emotion label")
    base, stage1 = stage1_model(model, adapter, device, hub, allow_base_mismatch, trust_remote_code,
                                labels)
    encoder = TextEncoder(text)
    cache = Path(cache_dir) if cache_dir else Path(out).resolve().parent / ".stage1-cache"
    identity = {**stage1.to_dict(), "device": base.device.type, "ban_emo_unknown": ban_emo_unknown,
                "labelled_only": True, "version": 1}
    if not labels.is_default:
        identity["labels"] = labels.to_dict()
    train_stage1, val_stage1 = (
        stage1_results(base, rows, ban_emo_unknown, cache, {**identity, "manifest": sha256_file(path)})
        for rows, path in ((train_rows, data), (val_rows, val)))
    classes = [tag for tag in labels.emotion if tag in {r.emo_target for r in train_rows}]
    unknown = sorted({r.emo_target for r in val_rows} - set(classes))
    if unknown:
        raise SvloraError(f"{val}: emotion(s) {', '.join(unknown)} never occur in {data}")
    index = {tag: i for i, tag in enumerate(classes)}
    train_x = clip_features(train_stage1, encoder, labels.emotion)
    val_x = clip_features(val_stage1, encoder, labels.emotion)
    train_y = np.array([index[r.emo_target] for r in train_rows])
    val_y = np.array([index[r.emo_target] for r in val_rows])
    features_s = elapsed(started)
    head, metrics = train_head(train_x, train_y, val_x, val_y, len(classes), hidden)
    event_classes = [tag for tag in labels.event if tag in {r.event_target for r in train_rows}]
    event_head = None
    if len(event_classes) > 1 and {r.event_target for r in val_rows} <= set(event_classes):
        event_index = {tag: i for i, tag in enumerate(event_classes)}
        event_head, event_metrics = train_head(
            train_x, np.array([event_index[r.event_target] for r in train_rows]), val_x,
            np.array([event_index[r.event_target] for r in val_rows]), len(event_classes), hidden)
        metrics.update({f"event_{k}": v for k, v in event_metrics.items()})
    else:
        event_classes = []
    extra_heads, head_classes = {}, {}
    for name, allowed in labels.heads.items():
        trained = train_extra_head(name, allowed, train_rows, val_rows, train_x, val_x, hidden, data)
        if trained:
            extra_heads[name], head_classes[name], head_metrics = trained
            metrics.update({f"{name}_{k}": v for k, v in head_metrics.items()})
    stage1_val = np.array([index.get(max(s["emotion_probs"], key=s["emotion_probs"].get), -1)
                           for s in val_stage1])
    dims = {"acoustic": len(train_stage1[0]["pooled"]), "emotion_probs": len(labels.emotion),
            "text": train_x.shape[1] - len(train_stage1[0]["pooled"]) - len(labels.emotion)}
    config = CascadeConfig(stage1.base_sha256, stage1.adapter_sha256, classes, text, hidden, dims,
                           event_classes=event_classes, heads=head_classes,
                           labels={} if labels.is_default else labels.to_dict(), trained={
        "data": str(data), "val": str(val), "clips": len(train_rows), "val_clips": len(val_rows),
        "stage1": {"model": str(model), "adapter": adapter},
        "stage1_val_ua": unweighted_average_recall(val_y, stage1_val), **metrics,
        "feature_seconds": features_s, "seconds": elapsed(started)})
    save_cascade(Path(out), head, config, event_head, extra_heads)
    heads_note = "".join(f", {name} val UA {metrics[f'{name}_val_ua']:.3f}" for name in head_classes)
    log(f"cascade: {len(train_rows)} clips, {len(classes)} emotions, val UA {metrics['val_ua']:.3f} "
        f"(stage 1 alone {config.trained['stage1_val_ua']:.3f}){heads_note}; "
        f"{config.trained['seconds']}s ({features_s}s computing features)")
    return config


def train_extra_head(name: str, allowed: tuple[str, ...], train_rows, val_rows, train_x: np.ndarray,
                     val_x: np.ndarray, hidden: int, data: str) -> tuple[Head, list[str], dict] | None:
    """One extra head (e.g. role) on the clips labelled for it: (head, its labels, val
    metrics); None, with nothing trained, when no training clip carries the head."""
    train_keep = [i for i, r in enumerate(train_rows) if r.head(name) is not None]
    val_keep = [i for i, r in enumerate(val_rows) if r.head(name) is not None]
    if not train_keep:
        return None
    classes = [label for label in allowed if label in {train_rows[i].head(name) for i in train_keep}]
    if len(classes) < 2:
        from svlora.model import log_note

        log_note(f"{data}: head {name!r} has only the label {classes[0]!r}: not trained (a head "
                 "needs clips of at least two labels)")
        return None
    if not val_keep:
        raise SvloraError(f"{data}: head {name!r} is labelled in training but on no validation "
                          "clip; the cascade picks its best epoch on validation")
    unknown = sorted({val_rows[i].head(name) for i in val_keep} - set(classes))
    if unknown:
        raise SvloraError(f"head {name!r}: validation label(s) {', '.join(unknown)} never occur in {data}")
    index = {label: i for i, label in enumerate(classes)}
    head, metrics = train_head(train_x[train_keep], np.array([index[train_rows[i].head(name)] for i in train_keep]),
                               val_x[val_keep], np.array([index[val_rows[i].head(name)] for i in val_keep]),
                               len(classes), hidden)
    return head, classes, metrics


def cascade_identity(directory: str | Path) -> str:
    """One sha256 over a cascade's config and weights (as adapter_identity is an adapter's)."""
    return sha256_of_files(directory, (CONFIG, WEIGHTS))
