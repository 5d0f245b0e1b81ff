"""The serving runtime: a SenseVoiceSmall base with an optional adapter attached, which
transcribes audio files, and can merge the adapter into the base weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svlora.adapter_format import attach_adapter
from svlora.decoding import transcribe_files
from svlora.labels import split_output
from svlora.segments import MAX_SEGMENT_SECONDS, Segment, load_vad, weighted_tag
from svlora.errors import AdapterError
from svlora.model import BaseModel, load_base_model, quantize_int8, weights_sha256


@dataclass
class SenseVoiceRuntime:
    base: BaseModel
    base_sha256: str
    adapter_path: str | None = None
    adapter_meta: dict | None = None
    peft_model: object | None = None  # the PeftModel while an adapter is attached, unmerged
    vad: object | None = None         # Silero VAD, loaded on the first long file
    rules: object | None = None       # a svlora.postprocess.RuleSet applied to every output
    cascade: object | None = None     # a svlora.postprocess Cascade that re-decides the emotion

    def transcribe(self, paths: list[str | Path], max_seconds_per_batch: float | None = None,
                   language: str = "auto", itn: str = "woitn",
                   max_segment_seconds: float = MAX_SEGMENT_SECONDS,
                   max_file_seconds: float | None = None,
                   ban_emo_unknown: bool = False) -> list[dict]:
        """One dict per file: path, raw output, text, language, emotion and event tags; files
        longer than `max_segment_seconds` also carry `segments` (VAD-cut, each decoded alone).
        `language_probs`, `emotion_probs`, `event_probs`: the decoder's distribution over each
        tag set (duration-weighted over segments)."""
        results = transcribe_files(self.base, [str(p) for p in paths], max_seconds_per_batch,
                                   language, itn, max_segment_seconds, max_file_seconds,
                                   self.vad_model, ban_emo_unknown=ban_emo_unknown,
                                   with_pooled=self.cascade is not None)
        if self.cascade is not None:
            results = [self.apply_cascade(result) for result in results]
        return [self.apply_rules(result) for result in results] if self.rules else results

    def apply_cascade(self, result: dict) -> dict:
        """The emotion re-decided by the cascade from stage 1's pooled encoder output, emotion
        distribution and transcript (per segment for long files)."""
        def one(item: dict) -> dict:
            [emotions], events = self.cascade.predict_both([item])
            emotion = max(emotions, key=emotions.get)
            raw = item["raw"].replace(item["emotion"], emotion, 1) if item.get("emotion") else item["raw"]
            changed = {"emotion": emotion, "emotion_probs": emotions, "stage1_emotion": item.get("emotion")}
            if events:
                event = max(events[0], key=events[0].get)
                raw = raw.replace(item["event"], event, 1) if item.get("event") else raw
                changed.update(event=event, event_probs=events[0], stage1_event=item.get("event"))
            rest = {k: v for k, v in item.items() if k != "pooled"}
            return {**rest, **changed, "raw": raw}

        if "segments" not in result:
            return one(result)
        segments = [one(s) for s in result["segments"]]
        spans = [Segment(s["start"], s["end"]) for s in segments]
        return {**{k: v for k, v in result.items() if k != "pooled"}, "segments": segments,
                "emotion": weighted_tag([s["emotion"] for s in segments], spans)}

    def apply_rules(self, result: dict) -> dict:
        """The result with the rules applied (per segment for long files); `rules_fired` names
        the rules that changed something."""
        from svlora.postprocess import apply_rules

        def one(item: dict, seconds: float | None) -> dict:
            applied = apply_rules(self.rules, item["raw"], item.get("emotion_probs"), seconds)
            return {**item, **split_output(applied["raw"]), "raw": applied["raw"],
                    "emotion_probs": applied["emotion_probs"], "rules_fired": applied["fired"]}

        if "segments" not in result:
            return one(result, None)
        segments = [one(s, s["end"] - s["start"]) for s in result["segments"]]
        spans = [Segment(s["start"], s["end"]) for s in segments]
        return {**result, "segments": segments,
                "emotion": weighted_tag([s["emotion"] for s in segments], spans),
                "event": weighted_tag([s["event"] for s in segments], spans)}

    def vad_model(self):
        """Silero VAD, loaded once, on the first long file (None where it is not installed)."""
        if self.vad is None:
            self.vad = load_vad() or False
        return self.vad or None

    def merge(self) -> None:
        """Fold the LoRA weights into the base Linear layers (faster inference, no PEFT)."""
        if self.peft_model is None:
            raise AdapterError("no adapter attached: nothing to merge")
        self.base.model = self.peft_model.merge_and_unload()
        self.peft_model = None

    def state_dict(self) -> dict:
        """Weights under the base model's own parameter names (merged, or the plain base)."""
        if self.peft_model is not None:
            raise AdapterError("merge() the adapter before taking a plain state dict")
        return self.base.model.state_dict()


def load_model(model: str, adapter: str | None = None, device: str = "cpu", hub: str = "ms",
               allow_base_mismatch: bool = False, merge: bool = False,
               trust_remote_code: bool = False, int8: bool = False,
               rules: str | None = None, cascade: str | None = None) -> SenseVoiceRuntime:
    """A runtime for base `model` (dir or hub id), with `adapter` attached (and merged) if given.

    An adapter trained on different base weights is refused unless allow_base_mismatch.
    `int8`: merge the adapter, then quantise every Linear layer to int8 (dynamic, CPU): faster,
    outputs may differ slightly (benchmarks/eval_bench.py --int8 reports by how much).
    """
    base = load_base_model(model, device=device, hub=hub, trust_remote_code=trust_remote_code)
    runtime = SenseVoiceRuntime(base, weights_sha256(base.model_dir))
    if adapter is not None:
        runtime.peft_model, runtime.adapter_meta = attach_adapter(
            base.model, adapter, runtime.base_sha256, allow_base_mismatch)
        runtime.adapter_path = str(adapter)
        if merge or int8:
            runtime.merge()
    if int8:
        runtime.base.model = quantize_int8(runtime.base.model)
    if rules:
        from svlora.postprocess import load_rules

        runtime.rules = load_rules(rules)
    if cascade:
        from svlora.io import sha256_file
        from svlora.postprocess import load_cascade

        adapter_sha256 = sha256_file(Path(adapter) / "adapter_model.safetensors") if adapter else None
        runtime.cascade = load_cascade(cascade, runtime.base_sha256, adapter_sha256,
                                       allow_base_mismatch)
    return runtime
