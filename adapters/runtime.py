"""The serving runtime: a SenseVoiceSmall base with an optional adapter attached, which
transcribes audio files, and can merge the adapter into the base weights."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from svlora.adapter_format import adapter_identity, adapter_labels, attach_adapter
from svlora.decoding import FileError, TranscriptionResult, iter_transcribe_files
from svlora.segments import MAX_SEGMENT_SECONDS, LazyVad
from svlora.errors import AdapterError
from svlora.hotwords import (DEFAULT_BEAM, DEFAULT_HOTWORD_SCORE, Hotwords, build_hotwords,
                             check_search_settings)
from svlora.terms import read_terms
from svlora.model import (BaseModel, bf16_device, load_base_model, quantize_int8,
                          store_matmul_weights_in_bf16, weights_sha256)


@dataclass
class SenseVoiceRuntime:
    base: BaseModel
    base_sha256: str
    adapter_path: str | None = None
    adapter_meta: dict | None = None
    peft_model: object | None = None  # the PeftModel while an adapter is attached, unmerged
    vad: LazyVad = field(default_factory=LazyVad)  # Silero VAD, loaded on the first long file
    rules: object | None = None       # a svlora.postprocess.RuleSet applied to every output
    cascade: object | None = None     # a svlora.postprocess Cascade that re-decides the emotion
    hotwords: Hotwords | None = None  # decode the text with hotword biasing (svlora.hotwords)

    def transcribe(self, paths: list[str | Path], max_seconds_per_batch: float | None = None,
                   language: str = "auto", itn: str = "woitn",
                   max_segment_seconds: float = MAX_SEGMENT_SECONDS,
                   max_file_seconds: float | None = None,
                   ban_emo_unknown: bool = False, timestamps: bool = False) -> list[TranscriptionResult]:
        """One result per file (svlora.decoding.TranscriptionResult): path, raw output, text,
        language, emotion and event tags; files longer than `max_segment_seconds` also carry
        `segments` (VAD-cut, each decoded alone). `language_probs`, `emotion_probs`,
        `event_probs`: the decoder's distribution over each tag set (duration-weighted over
        segments). `timestamps`: `words` [{word, start, end}] in seconds of the file (and per
        segment). An unreadable file raises AudioFileError."""
        return list(self.iter_transcribe(paths, max_seconds_per_batch, language, itn,
                                         max_segment_seconds, max_file_seconds, ban_emo_unknown,
                                         timestamps=timestamps))

    def iter_transcribe(self, paths: list[str | Path], max_seconds_per_batch: float | None = None,
                        language: str = "auto", itn: str = "woitn",
                        max_segment_seconds: float = MAX_SEGMENT_SECONDS,
                        max_file_seconds: float | None = None, ban_emo_unknown: bool = False,
                        keep_going: bool = False,
                        timestamps: bool = False) -> Iterator[TranscriptionResult | FileError]:
        """transcribe's results as they are decoded (about 10 minutes of audio at a time);
        with `keep_going` an unreadable file gives a FileError record and the rest go on."""
        for result in iter_transcribe_files(self.base, [str(p) for p in paths],
                                            max_seconds_per_batch, language, itn,
                                            max_segment_seconds, max_file_seconds, self.vad_model,
                                            ban_emo_unknown=ban_emo_unknown,
                                            with_pooled=self.cascade is not None,
                                            keep_going=keep_going, hotwords=self.hotwords,
                                            timestamps=timestamps):
            if "error" not in result:
                result = self.apply_cascade(result) if self.cascade is not None else result
                result = self.apply_rules(result) if self.rules else result
            yield result

    def apply_cascade(self, result: TranscriptionResult) -> TranscriptionResult:
        from svlora.postprocess import result_with_cascade

        return result_with_cascade(self.cascade, result)

    def apply_rules(self, result: TranscriptionResult) -> TranscriptionResult:
        from svlora.postprocess import result_with_rules

        return result_with_rules(self.rules, result)

    def vad_model(self):
        """Silero VAD, loaded once, on the first long file (None where it is not installed)."""
        return self.vad()

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
               rules: str | None = None, cascade: str | None = None,
               hotwords: str | Hotwords | None = None, hotword_score: float = DEFAULT_HOTWORD_SCORE,
               beam: int = DEFAULT_BEAM, bf16_weights: bool | None = None) -> SenseVoiceRuntime:
    """A runtime for base `model` (dir or hub id), with `adapter` attached (and merged) if given.

    `hotwords` (a terms file, or svlora.hotwords.Hotwords): the text is decoded by a CTC prefix
    beam search of `beam` prefixes, biased by `hotword_score` per token towards the terms; the
    tags are decoded as without.

    An adapter trained on different base weights is refused unless allow_base_mismatch.
    `int8`: merge the adapter, then quantise every Linear layer to int8 (dynamic, CPU): faster,
    outputs may differ slightly (benchmarks/eval_bench.py --int8 reports by how much).
    `bf16_weights` (default: on a bf16 GPU, where decoding runs in bf16): the base's matmul
    weights stored in bf16 once instead of cast by autocast every batch (same outputs); off for
    anything that writes weights (export).
    """
    # bad search settings or a bad terms file fail before the model loads
    check_search_settings(hotword_score, beam)
    terms = read_terms(hotwords) if hotwords is not None and not isinstance(hotwords, Hotwords) else None
    base = load_base_model(model, device=device, hub=hub, trust_remote_code=trust_remote_code)
    runtime = SenseVoiceRuntime(base, weights_sha256(base.model_dir))
    if adapter is not None:
        # a base dir with its own labels (a merged export) takes adapters of those labels only
        runtime.peft_model, runtime.adapter_meta = attach_adapter(
            base.model, adapter, runtime.base_sha256, allow_base_mismatch,
            labels=None if base.labels.is_default else base.labels)
        base.use_labels(adapter_labels(runtime.adapter_meta, adapter, None))
        runtime.adapter_path = str(adapter)
        if merge or int8:
            runtime.merge()
    if int8:
        runtime.base.model = quantize_int8(runtime.base.model)
    elif bf16_weights if bf16_weights is not None else bf16_device(base.device):
        store_matmul_weights_in_bf16(runtime.base.model)
    if cascade:
        from svlora.postprocess import load_cascade

        adapter_sha256 = adapter_identity(adapter) if adapter else None
        # on the base alone, a cascade brings its labels (as an adapter does); else they must match
        fixed = adapter is not None or not runtime.base.labels.is_default
        runtime.cascade = load_cascade(cascade, runtime.base_sha256, adapter_sha256,
                                       allow_base_mismatch, labels=runtime.base.labels if fixed else None)
        if not fixed:
            runtime.base.use_labels(runtime.cascade.config.label_schema)
    if hotwords is not None:
        runtime.hotwords = hotwords if terms is None else \
            build_hotwords(base.tokenizer, terms, hotword_score, beam)
    if rules:
        from svlora.postprocess import load_rules
        from svlora.recipes.rules import rules_path

        runtime.rules = load_rules(rules_path(rules), runtime.base.labels)
    return runtime
