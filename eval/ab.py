"""`svlora eval`: decode the same test clips with the base and with every other arm (adapters),
score them with intervals and paired tests, add retention and gates, and write report.json,
predictions.jsonl, report.md, report.html and the confusion PNGs. Decoded outputs are cached
per batch of clips, by what produced them (base weights, adapter identity, decoding settings)
and the clips' audio content: a re-run recomputes nothing, an interrupted one resumes at the
batch it was decoding."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from svlora.adapter_format import adapter_identity, attach_adapter, read_adapter_meta
from svlora.config import parse_named_target
from svlora.decoding import (Decoded, decode_features, decoding_precision, default_batch_seconds,
                             query_batches)
from svlora.errors import ManifestError, SvloraError
from svlora.eval.gates import check_gates, parse_gates
from svlora.eval.records import REPORT_VERSION, EvalReport, ScoredClip
from svlora.eval.report import (render_html, render_markdown, write_confusion_pngs,
                                write_reliability_png)
from svlora.eval.scoring import arm_metrics, bootstrap_indices, metric_delta, score_clip
from svlora.eval.slices import changed_clips, slice_table
from svlora.eval.terms import per_term_table
from svlora.features import FRAME_SECONDS, row_features
from svlora.hotwords import DEFAULT_BEAM, DEFAULT_HOTWORD_SCORE, build_hotwords, check_search_settings
from svlora.label_schema import LabelSchema, load_schema, schema_beside
from svlora.io import (require_output_dir, sha256_file, write_json_atomic, write_jsonl_atomic,
                       write_text_atomic)
from svlora.manifest import ManifestRow, read_manifest
from svlora.model import BaseModel, load_base_model, log_note, weights_sha256
from svlora.postprocess import load_cascade
from svlora.terms import TermScorer, read_terms
from svlora.timestamps import timing_summary

DECODING_VERSION = 4  # bump when decoding or the cache layout changes (stale entries are never read)

# Arm names become file names (confusion_NAME.png) and predictions.jsonl columns.
ARM_NAME = re.compile(r"^[\w+-]{1,64}$")
RESERVED_NAMES = {"key", "source", "reference", "reference_emotion", "schema_version"}


@dataclass(frozen=True)
class Arm:
    name: str
    adapter: str | None = None  # None: the base model itself
    hotwords: str | None = None  # a terms file: the text decoded with hotword biasing
    stage1: str | None = None    # a hotwords arm: the base or adapter arm it decodes with


def check_arm_name(name: str, flag: str, spec: str) -> str:
    if not ARM_NAME.match(name) or name in RESERVED_NAMES:
        raise SvloraError(f"{flag} {spec!r}: arm name {name!r} cannot name a file or a report "
                          "column; use letters, digits, _, + and - (no '/', '.' or spaces, at "
                          f"most 64), not {', '.join(sorted(RESERVED_NAMES))}; name it NAME=...")
    return name


def parse_arms(adapters: list[str]) -> list[Arm]:
    """'base' plus one arm per --adapter PATH or NAME=PATH (names default to 'adapter' or the
    adapter's parent run folder)."""
    arms = [Arm("base")]
    for spec in adapters:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if not name:
            name = "adapter" if len(adapters) == 1 else Path(path).resolve().parent.name \
                if Path(path).name == "adapter" else Path(path).name
        check_arm_name(name, "--adapter", spec)
        if name in {a.name for a in arms}:
            raise SvloraError(f"--adapter {spec}: arm name {name!r} is used twice; name it NAME=PATH")
        arms.append(Arm(name, path))
    return arms


def read_unique_manifest(path: str, schema: LabelSchema | None = None) -> list[ManifestRow]:
    """A manifest whose keys are unique: predictions are keyed by clip key."""
    rows, first = read_manifest(path, schema), {}
    for number, row in enumerate(rows, start=1):
        if row.key in first:
            raise SvloraError(f"{path}: key {row.key!r} appears twice (rows {first[row.key]} and "
                              f"{number}); keys must be unique: re-run svlora prepare or rename one")
        first[row.key] = number
    return rows


def refuse_long_clips(path: str, rows: list[ManifestRow], limit: float | None) -> None:
    """--max-seconds: a clip over the limit is an error naming it (never silently skipped)."""
    longer = [row for row in rows if limit is not None and row.audio_seconds > limit]
    if longer:
        raise SvloraError(f"{path}: {len(longer)} clip(s) longer than --max-seconds {limit:g} "
                          f"(e.g. {longer[0].key}, {longer[0].audio_seconds:.1f} s); raise the limit "
                          "or cut them with svlora prepare --max-seconds")


class PredictionCache:
    """One JSON entry per decoded batch. Its name hashes the arm's identity and, for each clip
    of the batch in order, the audio's sha256 and its ITN query: a clip rewritten in place, an
    adapter whose weights or adapter_config.json changed, or other decoding settings read
    another entry. Entries are written atomically as each batch finishes."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @staticmethod
    def arm_identity(base_sha256: str, adapter: str | None, settings: dict) -> dict:
        """Everything about an arm that changes its outputs."""
        return {"model": base_sha256, "adapter": adapter_identity(adapter) if adapter else None,
                "settings": settings, "decoding": DECODING_VERSION}

    @staticmethod
    def key(arm_identity: dict, clips: list[tuple[str, str]]) -> str:
        """The entry of a batch: (audio sha256, itn) of each clip, in decoding order."""
        identity = {"arm": arm_identity, "clips": clips}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def load(self, key: str, clips: int) -> dict | None:
        path = self.directory / f"{key}.json" if self.directory else None
        if not path or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # unreadable: decode again (the new entry replaces it)
        return entry if len(entry.get("outputs", ())) == clips else None

    def store(self, key: str, entry: dict) -> None:
        if self.directory:
            write_json_atomic(self.directory / f"{key}.json", entry)


def planned_batches(rows: list[ManifestRow], itns: list[str], max_seconds: float) -> list[list[int]]:
    """Row indices per decoding batch: by ITN query, then by duration (the manifest's, so the
    plan, and the cache entries it names, are known before any audio is read)."""
    frames = [math.ceil(row.audio_seconds / FRAME_SECONDS) for row in rows]
    return [batch for _, batch in query_batches(frames, itns, max_seconds)]


class ArmDecoder:
    """Decodes manifests with the base and then each adapter, batch by batch through the
    prediction cache, loading features only for the batches it must decode."""

    def __init__(self, base: BaseModel, base_sha256: str, cache: PredictionCache,
                 max_seconds: float, feature_cache: str | None, allow_base_mismatch: bool,
                 ban_emo_unknown: bool = False, with_pooled: bool = False,
                 hotwords: dict | None = None, timestamps: bool = False, remote: dict | None = None):
        self.base, self.base_sha256, self.cache = base, base_sha256, cache
        self.remote = remote  # --ray: {ray, model, model_kwargs, workers}: batches decoded on actors
        self.timestamps = timestamps  # word times (the references have some)
        self.hotwords = hotwords or {}  # arm name -> svlora.hotwords.Hotwords
        self.ban_emo_unknown = ban_emo_unknown
        self.with_pooled = with_pooled  # keep pooled encoder outputs (a cascade arm needs them)
        self.max_seconds, self.feature_cache = max_seconds, feature_cache
        self.allow_base_mismatch = allow_base_mismatch
        self.peft_model = None
        self.audio_sha256: dict[str, str] = {}
        self.features: dict[str, object] = {}   # by audio sha256, shared by arms and manifests
        self.seconds: dict[str, float] = {}     # decoding time per arm (the data manifest)

    def activate(self, arm: Arm) -> None:
        if arm.adapter is None or arm.stage1 is not None:  # a hotwords arm: its stage 1 is active
            return
        # every arm decodes into the test set's label schema: an adapter of another is refused
        self.peft_model, _ = attach_adapter(self.peft_model or self.base.model, arm.adapter,
                                            self.base_sha256, self.allow_base_mismatch, arm.name,
                                            labels=self.base.labels)

    def settings(self, arm: Arm) -> dict:
        settings = {"device": self.base.device.type, "precision": decoding_precision(self.base.device, self.base.model),
                    "max_seconds_per_batch": self.max_seconds, "language": "auto",
                    "ban_emo_unknown": self.ban_emo_unknown, "pooled": self.with_pooled}
        if arm.name in self.hotwords:
            settings["hotwords"] = self.hotwords[arm.name].identity()
        if self.timestamps:
            settings["timestamps"] = True
        if not self.base.labels.is_default:  # it bans tags, names spare tokens, shapes the probs
            settings["labels"] = self.base.labels.to_dict()
        return settings

    def hash_audio(self, row: ManifestRow) -> str:
        if row.source not in self.audio_sha256:
            try:
                self.audio_sha256[row.source] = sha256_file(row.source)
            except OSError as error:
                raise ManifestError(f"clip {row.key} ({row.source}): {error.strerror or error}; "
                                    "fix or remove the row (svlora prepare reports such rows)") from None
        return self.audio_sha256[row.source]

    def load_features(self, rows: list[ManifestRow], label: str) -> None:
        missing = {self.hash_audio(row): row for row in rows
                   if self.hash_audio(row) not in self.features}
        if missing:
            computed = row_features(self.base, list(missing.values()), f"features {label}",
                                    self.feature_cache)
            self.features.update(zip(missing, computed))

    def decode(self, arm: Arm, manifest: str, rows: list[ManifestRow]) -> list[Decoded]:
        identity = PredictionCache.arm_identity(self.base_sha256, arm.adapter, self.settings(arm))
        itns = [row.itn_query for row in rows]
        hashes = [self.hash_audio(row) for row in rows]
        plan = [(self.cache.key(identity, [(hashes[i], itns[i]) for i in batch]), batch)
                for batch in planned_batches(rows, itns, self.max_seconds)]
        entries = {key: self.cache.load(key, len(batch)) for key, batch in plan}
        todo = [(key, batch) for key, batch in plan if entries[key] is None]
        if self.remote is not None and todo:
            self.decode_remotely(arm, [(key, [rows[i] for i in batch], itns[batch[0]]) for key, batch in todo],
                                 entries)
            todo = []
        self.load_features([rows[i] for _, batch in todo for i in batch], Path(manifest).name)
        progress = tqdm(total=sum(len(b) for _, b in todo), desc=f"decoding {arm.name}",
                        unit="clip", leave=False, disable=not todo)
        for key, batch in todo:
            started = time.perf_counter()
            decoded = decode_features(self.base, [self.features[hashes[i]] for i in batch],
                                      float("inf"), itn=itns[batch[0]],  # one batch, as planned
                                      ban_emo_unknown=self.ban_emo_unknown,
                                      with_pooled=self.with_pooled,
                                      hotwords=self.hotwords.get(arm.name), timestamps=self.timestamps)
            entries[key] = {"seconds": round(time.perf_counter() - started, 4),
                            "outputs": [d.to_dict() for d in decoded]}
            self.cache.store(key, entries[key])
            progress.update(len(batch))
        progress.close()
        outputs: list[Decoded | None] = [None] * len(rows)
        for key, batch in plan:
            for index, output in zip(batch, entries[key]["outputs"]):
                outputs[index] = Decoded.from_dict(output)
        self.seconds.setdefault(arm.name, round(sum(e["seconds"] for e in entries.values()), 4))
        return outputs

    def decode_remotely(self, arm: Arm, batches: list[tuple[str, list, str]], entries: dict) -> None:
        """--ray: the planned batches on Ray actors (svlora.eval.distributed), cached as local ones."""
        from svlora.eval.distributed import decode_on_ray

        options = {"ban_emo_unknown": self.ban_emo_unknown, "with_pooled": self.with_pooled,
                   "hotwords": self.hotwords.get(arm.name), "timestamps": self.timestamps}
        decoded = decode_on_ray(self.remote["ray"], self.remote["model"], self.remote["model_kwargs"], arm.adapter,
                                self.base.labels.to_dict(), self.allow_base_mismatch, self.feature_cache,
                                [(rows, itn) for _, rows, itn in batches], options, self.remote["workers"])
        for (key, _, _), entry in zip(batches, decoded):
            entries[key] = entry
            self.cache.store(key, entry)


@dataclass(frozen=True)
class RulesArm:
    source: str      # the arm whose decoded outputs the rules rewrite
    path: str        # the rules file
    rules: object    # its svlora.postprocess.RuleSet


def parse_hotword_arms(specs: list[str], arms: list[Arm]) -> list[Arm]:
    """Arms from 'NAME=ARM:TERMS.txt': ARM (base or an --adapter arm) decoded with hotwords."""
    result: list[Arm] = []
    for spec in specs:
        name, source, terms = parse_post_arm(spec, "--hotwords-arm", "base+hotwords=base:terms.txt",
                                             [a.name for a in arms], {a.name for a in result})
        stage1 = next(a for a in arms if a.name == source)
        result.append(Arm(name, stage1.adapter, terms, source))
    return result


def parse_post_arm(spec: str, flag: str, example: str, stage1: list[str],
                   taken: set[str]) -> tuple[str, str, str]:
    """(name, stage-1 arm, target) of a 'NAME=ARM:TARGET' post-processing arm spec."""
    name, source, target = parse_named_target(spec, flag, example)
    check_arm_name(name, flag, spec)
    if source not in stage1:
        raise SvloraError(f"{flag} {spec!r}: arm {source!r} is not base or an --adapter arm "
                          f"({', '.join(stage1)})")
    if name in stage1 or name in taken:
        raise SvloraError(f"{flag} {spec!r}: arm name {name!r} is used twice")
    return name, source, target


def parse_rules_arms(specs: list[str], stage1: list[str], schema: LabelSchema) -> dict[str, RulesArm]:
    """{name: RulesArm} from 'NAME=ARM:RULES' (RULES a path or a shipped example's name), read
    in the test set's label schema."""
    from svlora.postprocess import load_rules
    from svlora.recipes.rules import rules_path

    arms: dict[str, RulesArm] = {}
    for spec in specs:
        name, source, rules = parse_post_arm(spec, "--rules-arm", "base+rules=base:rules.yaml",
                                             stage1, set(arms))
        arms[name] = RulesArm(source, str(rules_path(rules)), load_rules(rules_path(rules), schema))
    return arms


def parse_cascade_arms(specs: list[str], arms: list[Arm], taken: set[str]) -> dict[str, tuple[str, str]]:
    """{name: (stage-1 arm, cascade dir)} from 'NAME=ARM:DIR'."""
    result: dict[str, tuple[str, str]] = {}
    for spec in specs:
        name, source, directory = parse_post_arm(spec, "--cascade-arm",
                                                 "base+cascade=base:runs/cascade",
                                                 [a.name for a in arms], taken | set(result))
        result[name] = (source, directory)
    return result


def adapter_training(adapter: str | None, hotwords: bool = False) -> dict:
    """What an arm's training cost: its trainable parameters and the time to its best
    checkpoint (from svlora.json); nothing for the base; a hotwords arm costs its stage 1's."""
    if hotwords:
        return {**adapter_training(adapter), "kind": "hotwords"}
    if adapter is None:
        return {"kind": "base", "seconds": None, "trainable": 0}
    meta = read_adapter_meta(adapter)
    return {"kind": "adapter", "trainable": meta.get("trainable_parameters"),
            "seconds": (meta.get("val_metrics") or {}).get("elapsed_s")}


def decision_table(report: EvalReport, training: dict, decode_seconds: dict, post_seconds: dict,
                   audio_seconds: float, schema: LabelSchema) -> list[dict]:
    """One row per arm: emotion UA and accuracy, error rate, retention, training cost and
    inference cost (ms of compute per second of audio: its stage 1's decoding plus its own
    post-processing, as measured in this run or when its outputs were cached); with a label
    schema, the recall of each class SenseVoice lacks and each extra head's UA."""
    rows = []
    for arm in report.arm_names:
        metrics = report.arms[arm]
        source, post = post_seconds.get(arm, (arm, 0.0))
        decode = decode_seconds.get(source)
        retention = (report.retention or {}).get("arms", {}).get(arm, {})
        rows.append({"arm": arm, "kind": training[arm]["kind"], "stage1": source,
                     "emotion_ua": metrics["emotion_ua"], "emotion_accuracy": metrics["emotion_accuracy"],
                     "error_rate": metrics["error_rate"],
                     "general_error_rate": retention.get("error_rate"),
                     "train_seconds": training[arm]["seconds"],
                     "trainable_parameters": training[arm]["trainable"],
                     "ms_per_audio_second": None if decode is None else
                     round(1000 * (decode + post) / max(audio_seconds, 1e-9), 3)})
        new = [tag for tag in schema.new_tags() if tag in metrics["per_class"]]
        if new:
            rows[-1]["new_class_recall"] = {tag: metrics["per_class"][tag]["recall"] for tag in new}
        if schema.heads:
            rows[-1]["head_ua"] = {head: (metrics["heads"].get(head) or {}).get("ua")
                                   for head in schema.heads}
        if "term_recall" in metrics:
            rows[-1].update(term_recall=metrics["term_recall"],
                            unbiased_error_rate=metrics["unbiased_error_rate"])
    return rows


def with_cascade(cascade, decoded: list[Decoded], schema: LabelSchema) -> list[Decoded]:
    """Another arm's outputs with the emotion (and event, and extra heads) re-decided by the
    cascade (no decoding)."""
    stage1 = [{"raw": d.raw, "pooled": d.pooled, "emotion_probs": d.emotion_probs,
               "text": schema.split(d.raw)["text"]} for d in decoded]
    return [Decoded(change["raw"], d.language_probs, change["emotion_probs"],
                    change.get("event_probs", d.event_probs),
                    head_probs={h: change[f"{h}_probs"] for h in cascade.config.heads} or None,
                    words=d.words)
            for d, change in zip(decoded, cascade.redecide(stage1))]


def with_rules(rules, decoded: list[Decoded], rows: list[ManifestRow]) -> list[Decoded]:
    """Another arm's outputs after the rules (no decoding)."""
    from svlora.postprocess import apply_rules

    result = []
    for d, row in zip(decoded, rows):
        applied = apply_rules(rules, d.raw, d.emotion_probs, row.audio_seconds)
        result.append(Decoded(applied["raw"], d.language_probs,
                              applied["emotion_probs"] or d.emotion_probs, d.event_probs,
                              head_probs=d.head_probs, words=d.words))  # rules leave the times
    return result


def best_arm(metrics: dict) -> str:
    """The arm with the highest emotion UA (then the lowest error rate): what the others are
    tested against besides base."""
    def key(arm: str) -> tuple:
        ua, error = metrics[arm]["emotion_ua"], metrics[arm]["error_rate"]
        return (ua if ua is not None else -1.0, -(error if error is not None else float("inf")))
    return max(metrics, key=key)


def score_manifest(rows: list[ManifestRow], decoded_by_arm: dict[str, list[Decoded]],
                   resamples: int, seed: int, schema: LabelSchema,
                   terms: TermScorer | None = None) -> tuple[dict, dict, dict]:
    """(clips by arm, metrics by arm, deltas vs base by arm); term metrics with `terms`."""
    clips = {arm: [score_clip(row, d.raw, d.emotion_probs, schema, d.head_probs, terms, d.words)
                   for row, d in zip(rows, decoded)]
             for arm, decoded in decoded_by_arm.items()}
    indices = bootstrap_indices(len(rows), resamples, seed)
    metrics = {arm: arm_metrics(rows, arm_clips, indices, schema) for arm, arm_clips in clips.items()}
    deltas = {arm: metric_delta(rows, clips["base"], arm_clips, indices, schema)
              for arm, arm_clips in clips.items() if arm != "base"}
    return clips, metrics, deltas


def add_post_arms(cascades: dict, post_arms: dict[str, RulesArm], arms: list[Arm],
                  base_sha256: str, allow_base_mismatch: bool, raw: dict, raw_general: dict,
                  rows: list[ManifestRow], general_rows: list[ManifestRow] | None,
                  schema: LabelSchema) -> tuple[dict, dict]:
    """Cascade, then rules arms from their stage 1's outputs (in `raw`, `raw_general`, filled in
    place); returns (post-processing seconds as (stage 1, seconds), training cost) per arm."""
    post_seconds = {}
    training = {a.name: adapter_training(a.adapter, a.hotwords is not None) for a in arms}
    for name, (source, directory) in cascades.items():
        started = time.perf_counter()
        adapter = next(a.adapter for a in arms if a.name == source)
        cascade = load_cascade(directory, base_sha256,
                               adapter_identity(adapter) if adapter else None,
                               allow_base_mismatch, labels=schema)
        raw[name] = with_cascade(cascade, raw[source], schema)
        post_seconds[name] = (source, time.perf_counter() - started)
        training[name] = {"kind": "cascade", "seconds": cascade.config.trained.get("seconds"),
                          "trainable": sum(p.numel() for p in cascade.head.parameters())}
        if general_rows:
            raw_general[name] = with_cascade(cascade, raw_general[source], schema)
    for name, arm in post_arms.items():
        started = time.perf_counter()
        raw[name] = with_rules(arm.rules, raw[arm.source], rows)
        stage1, before = post_seconds.get(arm.source, (arm.source, 0.0))
        post_seconds[name] = (stage1, before + time.perf_counter() - started)
        training[name] = {**training[arm.source], "kind": f"{training[arm.source]['kind']}+rules"
                          if training[arm.source]["kind"] in ("cascade", "hotwords") else "rules"}
        if general_rows:
            raw_general[name] = with_rules(arm.rules, raw_general[arm.source], general_rows)
    return post_seconds, training


def write_outputs(report: EvalReport, rows: list[ManifestRow], clips: dict[str, list[ScoredClip]],
                  out_dir: Path) -> None:
    """report.json and predictions.jsonl first (the data), then what is rendered from them."""
    write_json_atomic(out_dir / "report.json", report.to_dict())
    write_jsonl_atomic(out_dir / "predictions.jsonl", [
        {"schema_version": REPORT_VERSION, "key": row.key, "source": row.source,
         "reference": row.target, "reference_emotion": row.emo_target,
         **{arm: clips[arm][i].to_dict() for arm in clips}} for i, row in enumerate(rows)])
    images = write_confusion_pngs(report, out_dir)
    reliability = write_reliability_png(report, out_dir)
    if reliability:
        images["emotion calibration (reliability)"] = reliability
    write_text_atomic(out_dir / "report.md", render_markdown(report))
    write_text_atomic(out_dir / "report.html", render_html(report, images))


def evaluate(model: str, data: str, out: str, adapters: list[str] | None = None,
             general: str | None = None, gate: str | None = None, device: str = "cpu",
             hub: str = "ms", max_seconds_per_batch: float | None = None,
             allow_base_mismatch: bool = False, feature_cache: str | None = None,
             cache_dir: str | None = None, resamples: int = 1000, seed: int = 0,
             trust_remote_code: bool = False, max_clip_seconds: float | None = None,
             ban_emo_unknown: bool = False, rules_arms: list[str] | None = None,
             cascade_arms: list[str] | None = None, labels: str | None = None,
             terms: str | None = None, hotword_arms: list[str] | None = None,
             hotword_score: float = DEFAULT_HOTWORD_SCORE, beam: int = DEFAULT_BEAM,
             ray: str | None = None, ray_workers: int = 2) -> EvalReport:
    """Score every arm on every clip of `data` (and `general`); write and return the report.

    `rules_arms` ('NAME=ARM:RULES.yaml') add arms that apply a rules file to another arm's
    decoded outputs: each model (base, each adapter) is decoded once, rules reuse its outputs.
    `hotword_arms` ('NAME=ARM:TERMS.txt') decode ARM again with hotword biasing (`beam`,
    `hotword_score`). `terms` (a terms file) adds term recall/precision/F1 and biased/unbiased
    error rates. `labels` (a labels.json or YAML) overrides the schema found beside `data`.
    `ray` ("local", "auto" or a cluster address): each arm's batches are decoded on
    `ray_workers` Ray actors instead of here (the same batches and outputs; scoring stays here).
    """
    gates = parse_gates(gate, has_adapters=bool(adapters or rules_arms or cascade_arms or hotword_arms),
                        has_general=general is not None, has_terms=terms is not None)
    read: dict[str, object] = {}  # each terms file read (and warned about) once

    def terms_of(path: str):
        if str(path) not in read:
            read[str(path)] = read_terms(path)
        return read[str(path)]

    check_search_settings(hotword_score, beam)
    term_list = terms_of(terms) if terms is not None else None
    stage1_arms = parse_arms(adapters or [])
    extra_arms = parse_hotword_arms(hotword_arms or [], stage1_arms)
    # each stage 1 followed by its hotwords arms: an adapter stays active while they decode
    arms = [a for s in stage1_arms for a in [s, *(h for h in extra_arms if h.stage1 == s.name)]]
    for arm in extra_arms:  # a bad terms file fails before the model loads
        terms_of(arm.hotwords)
    # the test set's classes: what every arm is scored on
    schema = load_schema(labels) if labels else schema_beside(data)
    cascades = parse_cascade_arms(cascade_arms or [], stage1_arms, {a.name for a in extra_arms})
    # rules may follow any decoded arm or a cascade arm (e.g. adapter → cascade → rules)
    post_arms = parse_rules_arms(rules_arms or [], [a.name for a in arms] + list(cascades), schema)
    rows = read_unique_manifest(data, schema)
    general_rows = read_unique_manifest(general) if general else None
    for path, manifest_rows in ((data, rows), (general, general_rows or [])):
        refuse_long_clips(path, manifest_rows, max_clip_seconds)
    out_dir = require_output_dir(out)
    base = load_base_model(model, device=device, hub=hub, trust_remote_code=trust_remote_code,
                           bf16_weights=True)  # eval only decodes: bf16 matmul weights on a bf16 GPU
    base_sha256 = weights_sha256(base.model_dir)
    base.use_labels(schema)
    biasing = {a.name: build_hotwords(base.tokenizer, terms_of(a.hotwords), hotword_score, beam)
               for a in extra_arms}
    remote = None
    if ray is not None:
        from svlora.cluster import start_ray

        remote = {"ray": start_ray(None if ray == "local" else ray), "model": model, "workers": ray_workers,
                  "model_kwargs": {"device": device, "hub": hub, "trust_remote_code": trust_remote_code}}
    try:
        return evaluate_arms(model, data, out_dir, base, base_sha256, schema, arms, extra_arms, cascades,
                             post_arms, rows, general, general_rows, gates, term_list, terms, terms_of,
                             biasing, cache_dir, max_seconds_per_batch, feature_cache, allow_base_mismatch,
                             ban_emo_unknown, resamples, seed, remote)
    finally:
        if remote is not None:
            remote["ray"].shutdown()


def evaluate_arms(model, data, out_dir, base, base_sha256, schema, arms, extra_arms, cascades, post_arms,
                  rows, general, general_rows, gates, term_list, terms, terms_of, biasing, cache_dir,
                  max_seconds_per_batch, feature_cache, allow_base_mismatch, ban_emo_unknown, resamples,
                  seed, remote) -> EvalReport:
    """evaluate's decoding and scoring, once its inputs are checked and the model is loaded."""
    decoder = ArmDecoder(base, base_sha256,
                         PredictionCache(Path(cache_dir) if cache_dir else out_dir / "cache"),
                         max_seconds_per_batch or default_batch_seconds(base.device), feature_cache,
                         allow_base_mismatch, ban_emo_unknown, with_pooled=bool(cascades),
                         hotwords=biasing, timestamps=any(row.words is not None for row in rows),
                         remote=remote)
    raw, raw_general = {}, {}
    for arm in arms:  # base first: adapters are layered onto the same module afterwards
        decoder.activate(arm)
        raw[arm.name] = decoder.decode(arm, data, rows)
        if general_rows:
            raw_general[arm.name] = decoder.decode(arm, general, general_rows)
    post_seconds, training = add_post_arms(cascades, post_arms, arms, base_sha256,
                                           allow_base_mismatch, raw, raw_general, rows, general_rows,
                                           schema)

    scorer = TermScorer(term_list) if term_list else None
    clips, metrics, deltas = score_manifest(rows, raw, resamples, seed, schema, scorer)
    best = best_arm(metrics)
    indices = bootstrap_indices(len(rows), resamples, seed)
    report = EvalReport(
        model=str(model), base_sha256=base_sha256, data=str(data), data_sha256=sha256_file(data),
        n=len(rows), bootstrap={"resamples": resamples, "seed": seed},
        arm_names=[a.name for a in arms] + list(cascades) + list(post_arms),
        adapters={a.name: a.adapter for a in arms if a.adapter},
        cascade_arms={name: {"stage1": source, "cascade": str(directory)}
                      for name, (source, directory) in cascades.items()},
        rules_arms={name: {"stage1": arm.source, "rules": arm.path} for name, arm in post_arms.items()},
        hotword_arms={a.name: {"stage1": a.stage1, "hotwords": str(a.hotwords),
                               **biasing[a.name].identity(),
                               "warnings": list(terms_of(a.hotwords).warnings)} for a in extra_arms},
        arms=metrics, deltas=deltas, best_arm=best,
        deltas_vs_best={arm: metric_delta(rows, clips[best], arm_clips, indices, schema)
                        for arm, arm_clips in clips.items() if arm != best},
        labels=schema.to_dict())
    if general_rows:
        _, general_metrics, general_deltas = score_manifest(general_rows, raw_general, resamples,
                                                            seed, schema, scorer)
        report.retention = {"data": str(general), "n": len(general_rows),
                            "arms": general_metrics, "delta": general_deltas}
    report.decision = decision_table(report, training, decoder.seconds, post_seconds,
                                     sum(row.audio_seconds for row in rows), schema)
    if term_list:
        report.terms = {"file": str(terms), "sha256": term_list.sha256, "n_terms": len(term_list),
                        "warnings": list(term_list.warnings),
                        "per_term": per_term_table(term_list, {arm: [c.terms for c in arm_clips]
                                                               for arm, arm_clips in clips.items()})}
        report.terms["absent"] = [e["term"] for e in report.terms["per_term"] if not e["occurrences"]]
        if report.terms["absent"]:
            log_note(f"warning: {len(report.terms['absent'])} of {len(term_list)} terms never occur in "
                     f"{data}: {', '.join(report.terms['absent'][:10])}")
    timed = {arm: timing_summary([c.timing for c in arm_clips]) for arm, arm_clips in clips.items()}
    report.timing = timed if any(timed.values()) else None
    report.slices = slice_table(rows, clips)
    report.changed_clips = {arm: changed_clips(rows, clips["base"], arm_clips)
                            for arm, arm_clips in clips.items() if arm != "base"}
    report.gates = check_gates(gates, deltas, report.retention) if gates else {}
    report.gates_passed = all(c["passed"] for checks in report.gates.values() for c in checks)
    write_outputs(report, rows, clips, out_dir)
    return report
