"""Batched greedy CTC decoding exactly as FunASR's SenseVoiceSmall.inference builds its input,
and audio files to results (long files cut into bounded segments first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from tqdm import tqdm

from svlora.audio import TARGET_RATE
from svlora.errors import AudioFileError, SvloraError
from svlora.features import pack_by_padded_seconds, pad_features
from svlora.frontend import batch_features
from svlora.prefetch import prefetched
from svlora.hotwords import Hotwords
from svlora.label_schema import LabelSchema
from svlora.model import BaseModel, bf16_device
from svlora.segments import MAX_SEGMENT_SECONDS, Segment, load_vad, speech_segments


def inference_log_probs(sensevoice: torch.nn.Module, features: torch.Tensor, lengths: torch.Tensor,
                        language: str = "auto", itn: str = "woitn") -> tuple[torch.Tensor, torch.Tensor]:
    """CTC log-probabilities [B, T+4, V] with the [language, event, emotion, itn] queries prepended."""
    encoder_out, encoder_lengths = encoder_output(sensevoice, features, lengths, language, itn)
    return sensevoice.ctc.log_softmax(encoder_out), encoder_lengths


def encoder_output(sensevoice: torch.nn.Module, features: torch.Tensor, lengths: torch.Tensor,
                   language: str = "auto", itn: str = "woitn") -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's output [B, T+4, D] as SenseVoiceSmall.inference builds its input."""
    batch = features.size(0)
    device = features.device
    if language not in sensevoice.lid_dict:
        raise SvloraError(f"language {language!r}: use auto or one of "
                          f"{', '.join(k for k in sensevoice.lid_dict if k != 'auto')}")
    language_id = sensevoice.lid_dict[language]
    queries = torch.tensor([[language_id, 1, 2, sensevoice.textnorm_dict[itn]]], device=device)
    query_embeddings = sensevoice.embed(queries).repeat(batch, 1, 1).to(features.dtype)
    # FunASR order: language, then the event/emotion pair, then text-norm, then speech.
    speech = torch.cat((query_embeddings, features), dim=1)
    encoder_out, encoder_lengths = sensevoice.encoder(speech, lengths.to(device) + 4)
    if isinstance(encoder_out, tuple):
        encoder_out = encoder_out[0]
    return encoder_out, encoder_lengths


def pooled_speech(encoder_out: torch.Tensor, lengths: torch.Tensor) -> list[list[float]]:
    """Mean of the encoder output over each clip's speech frames (after the 4 query frames)."""
    pooled = []
    for row, length in zip(encoder_out.float(), lengths.tolist()):
        frames = row[4:max(5, int(length))]
        pooled.append([round(float(v), 5) for v in frames.mean(0)])
    return pooled


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """CTC greedy decoding: the best token per frame, repeats merged, blanks dropped. The best
    ids come to the host in one copy per batch (not one read per token)."""
    return merged_ids(log_probs.argmax(dim=-1).cpu().numpy(), lengths.cpu().tolist(), blank_id)


def merged_ids(best: np.ndarray, lengths: list[int], blank_id: int = 0) -> list[list[int]]:
    """Each row's best ids (frames × 1, on the host) up to its length, repeats merged, blanks
    dropped."""
    sequences = []
    for row, length in zip(best, lengths):
        row = row[:int(length)]
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        sequences.append([int(t) for t in row[keep] if t != blank_id])
    return sequences


QUERY_FRAMES = 4  # language, emotion, event, ITN: the frames the rich tags come from


def hotword_ids(log_probs: torch.Tensor, lengths: torch.Tensor,
                settings: list[Hotwords | None], blank_id: int = 0) -> list[list[int] | None]:
    """Token ids of the rows that have hotword settings (None for the others): the query
    frames decoded greedily (the tags, exactly as greedy_ids), the speech frames by a CTC
    prefix beam search with the settings' context graph. One device-to-host copy per batch."""
    from svlora.beam_search import ctc_prefix_beam_search

    rows = [i for i, h in enumerate(settings) if h is not None]
    if not rows:
        return [None] * len(settings)
    speech = log_probs[rows, QUERY_FRAMES:]
    width = min(max(settings[i].beam for i in rows), speech.size(-1))
    top = speech.topk(width, dim=-1) if speech.size(1) else None
    top_values = top.values.float().cpu().numpy() if top is not None else None
    top_ids = top.indices.cpu().numpy() if top is not None else None
    blanks = speech[..., blank_id].float().cpu().numpy()
    tags = greedy_ids(log_probs[rows, :QUERY_FRAMES], lengths[rows].clamp(max=QUERY_FRAMES), blank_id)
    result: list[list[int] | None] = [None] * len(settings)
    for position, row in enumerate(rows):
        frames = max(0, int(lengths[row]) - QUERY_FRAMES)
        hotwords = settings[row]
        text = [] if not frames else ctc_prefix_beam_search(
            top_ids[position, :frames, :hotwords.beam], top_values[position, :frames, :hotwords.beam],
            blanks[position, :frames], hotwords.beam, hotwords.graph, blank_id)
        result[row] = tags[position] + text
    return result


def clip_words(base: BaseModel, log_probs: torch.Tensor, length: torch.Tensor,
               ids: list[int]) -> list[dict]:
    """One clip's words and their seconds: its text tokens (those after the leading tags)
    aligned to its speech frames."""
    from svlora.labels import FIRST_SPECIAL_ID
    from svlora.timestamps import token_spans, word_timings

    tags = next((i for i, token in enumerate(ids) if token < FIRST_SPECIAL_ID), len(ids))
    text_ids = ids[tags:]
    spans = token_spans(log_probs[QUERY_FRAMES:int(length)], text_ids)
    pieces = [base.tokenizer.sp.IdToPiece(token) for token in text_ids]
    return [w.to_dict() for w in word_timings(pieces, spans)]


def duration_batches(lengths: list[int], max_seconds: float) -> list[list[int]]:
    """Indices sorted by length, cut so padded seconds per batch stay within `max_seconds`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [[order[p] for p in batch]
            for batch in pack_by_padded_seconds([lengths[i] for i in order], max_seconds)]


def query_batches(lengths: list[int], itns: list[str], max_seconds: float) -> list[tuple[str, list[int]]]:
    """(ITN query, clip indices) of each forward pass: clips grouped by their ITN query (one
    query per pass), each group cut into duration_batches. Eval plans its cache entries with it."""
    batches = []
    for style in sorted(set(itns)):
        members = [i for i, value in enumerate(itns) if value == style]
        batches += [(style, [members[p] for p in batch])
                    for batch in duration_batches([lengths[i] for i in members], max_seconds)]
    return batches


def default_batch_seconds(device: torch.device) -> float:
    """Padded audio seconds per decoding batch: on a CPU, batches beyond ~60 s only add padding
    (its matmuls are already efficient; benchmarks/eval_bench.py); a GPU wants larger ones."""
    return 240.0 if device.type == "cuda" else 60.0


def decoding_precision(device: torch.device, module: torch.nn.Module | None = None) -> str:
    """bf16 on GPUs that have it (or for a model whose weights are stored in bf16, e.g. by
    training's train.base_dtype), else fp32: what transcribe_features runs in."""
    if bf16_device(device):
        return "bf16"
    stored_bf16 = module is not None and any(p.dtype == torch.bfloat16 for p in module.parameters())
    return "bf16" if stored_bf16 else "fp32"


@dataclass
class Decoded:
    """One clip's greedy decoding and the tag distributions of its first output frames
    (SenseVoice emits language, emotion and event there), each restricted to that tag set."""

    raw: str
    language_probs: dict[str, float]
    emotion_probs: dict[str, float]
    event_probs: dict[str, float]
    pooled: list[float] | None = None  # mean encoder output over the speech (for a cascade)
    head_probs: dict | None = None     # a cascade's extra heads: {head: {label: probability}}
    words: list[dict] | None = None    # timestamps: [{word, start, end}] in seconds of the clip

    def to_dict(self) -> dict:
        data = {"raw": self.raw, "language_probs": self.language_probs,
                "emotion_probs": self.emotion_probs, "event_probs": self.event_probs}
        optional = {"pooled": self.pooled, "head_probs": self.head_probs, "words": self.words}
        return {**data, **{k: v for k, v in optional.items() if v is not None}}

    @classmethod
    def from_dict(cls, data: dict) -> "Decoded":
        return cls(data["raw"], data["language_probs"], data["emotion_probs"], data["event_probs"],
                   data.get("pooled"), data.get("head_probs"), data.get("words"))


# output frame of each tag, in SenseVoice's target order
TAG_FRAMES = {"language": 0, "emotion": 1, "event": 2}
EMO_UNKNOWN = "<|EMO_UNKNOWN|>"


def tag_probabilities(log_probs: torch.Tensor, kind: str, schema: LabelSchema,
                      banned: tuple[str, ...] = ()) -> tuple[list[str], torch.Tensor]:
    """Per clip, the softmax over one of the schema's tag sets at that tag's frame (sums to 1),
    on log_probs' device: (the tags, clips × tags)."""
    frame, vocabulary = TAG_FRAMES[kind], schema.tags(kind)
    tags = [tag for tag in vocabulary if tag not in banned]
    ids = torch.tensor([vocabulary[tag] for tag in tags], device=log_probs.device)
    return tags, torch.softmax(log_probs[:, frame, ids].float(), dim=-1)


def distribution_dicts(tags: list[str], probabilities: np.ndarray) -> list[dict]:
    return [{tag: round(float(p), 6) for tag, p in zip(tags, row)} for row in probabilities]


@dataclass
class HostBatch:
    """What greedy decoding needs of one batch on the host, brought over in one copy: each tag
    kind's distributions, each frame's best id, each clip's output length."""

    distributions: dict[str, list[dict]]
    best: np.ndarray      # clips × frames
    lengths: list[int]


def to_host(log_probs: torch.Tensor, lengths: torch.Tensor, schema: LabelSchema,
            banned: tuple[str, ...] = ()) -> HostBatch:
    """One device→host copy per batch (on a GPU every copy is a sync): the tag softmaxes, the
    argmax ids (exact in float32: ids < 2^24) and the lengths packed into one float tensor."""
    kinds = {kind: tag_probabilities(log_probs, kind, schema, banned if kind == "emotion" else ())
             for kind in TAG_FRAMES}
    best = log_probs.argmax(dim=-1)
    parts = [probabilities.reshape(-1) for _, probabilities in kinds.values()]
    parts += [best.reshape(-1).float(), lengths.reshape(-1).float()]
    host = torch.cat([part.to(log_probs.device) for part in parts]).cpu().numpy()
    pieces = np.split(host, np.cumsum([part.numel() for part in parts])[:-1])
    clips = best.size(0)
    distributions = {kind: distribution_dicts(tags, piece.reshape(clips, len(tags)))
                     for (kind, (tags, _)), piece in zip(kinds.items(), pieces)}
    return HostBatch(distributions, pieces[-2].reshape(best.shape).astype(np.int64),
                     [int(n) for n in pieces[-1]])


@torch.inference_mode()
def decode_features(base: BaseModel, features: list[torch.Tensor],
                    max_seconds_per_batch: float | None = None, language: str = "auto",
                    itn: str | list[str] = "woitn", ban_emo_unknown: bool = False,
                    with_pooled: bool = False, batch_context=None,
                    progress: bool | None = None,
                    hotwords: Hotwords | list[Hotwords | None] | None = None,
                    timestamps: bool | list[bool] = False, bucket_frames: int = 0) -> list[Decoded]:
    """Greedy outputs ('<|en|><|HAPPY|><|Speech|><|woitn|>text') with tag distributions.

    Clips are batched by duration (padded seconds per batch bounded); `itn` may be one value or
    one per clip (each clip decoded with its manifest's with/without-ITN query); bf16 on GPUs
    that have it. `ban_emo_unknown` forbids <|EMO_UNKNOWN|>, as SenseVoice's published emotion
    results do (FunASR's ban_emo_unk). Outputs speak the model's label schema (base.labels):
    SenseVoice tags it leaves out are banned the same way, spare tokens carry the user's
    names and the distributions cover its classes. `with_pooled` keeps each clip's mean encoder output.
    `batch_context(indices)`, if given, wraps each forward pass over those clips (the server
    routes each row to its own adapter this way). `progress`: a bar on stderr (default: for
    50 clips or more). `hotwords` (one for all clips, or one or None per clip): the text decoded
    by a prefix beam search biased towards its terms (svlora.hotwords); tags and their
    distributions are unchanged. `timestamps` (for all clips, or one per clip): each clip's words
    with start/end seconds (svlora.timestamps: the decoded text tokens aligned to the CTC
    posteriors). `bucket_frames` > 0 pads each batch to a multiple of that many frames (a
    compiled encoder's shapes repeat; training's validation under train.compile).
    """
    max_seconds_per_batch = max_seconds_per_batch or default_batch_seconds(base.device)
    module = base.model
    was_training = module.training
    module.eval()
    itns = [itn] * len(features) if isinstance(itn, str) else list(itn)
    per_clip = hotwords if isinstance(hotwords, list) else [hotwords] * len(features)
    timed = timestamps if isinstance(timestamps, list) else [timestamps] * len(features)
    outputs: list[Decoded | None] = [None] * len(features)
    use_bf16 = decoding_precision(base.device, module) == "bf16"
    schema = base.labels
    banned = (EMO_UNKNOWN,) if ban_emo_unknown and EMO_UNKNOWN in schema.emotion else ()
    banned_ids = schema.banned_ids() + [schema.emotion[tag] for tag in banned]
    bar = tqdm(total=len(features), desc="decoding", unit="clip", leave=False,
               disable=not progress if progress is not None else len(features) < 50)
    for style, chunk in query_batches([f.shape[0] for f in features], itns, max_seconds_per_batch):
        padded, lengths = pad_features([features[i] for i in chunk], bucket_frames)
        with (batch_context(chunk) if batch_context else nullcontext()), \
                torch.autocast(base.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            encoder_out, out_lengths = encoder_output(module, padded.to(base.device), lengths,
                                                      language, style)
            log_probs = module.ctc.log_softmax(encoder_out)
        log_probs = log_probs.float()
        pooled = pooled_speech(encoder_out, out_lengths) if with_pooled else [None] * len(chunk)
        if banned_ids:
            log_probs[:, :, banned_ids] = -float("inf")
        host = to_host(log_probs, out_lengths, schema, banned)
        distributions = host.distributions
        biased = hotword_ids(log_probs, out_lengths, [per_clip[i] for i in chunk])
        greedy = merged_ids(host.best, host.lengths) if None in biased else []  # rows without hotwords
        for row, index in enumerate(chunk):
            ids = biased[row] if biased[row] is not None else greedy[row]
            outputs[index] = Decoded(schema.rename(base.decode(ids)), distributions["language"][row],
                                     distributions["emotion"][row], distributions["event"][row],
                                     pooled[row], words=clip_words(base, log_probs[row], out_lengths[row], ids)
                                     if timed[index] else None)
        bar.update(len(chunk))
    bar.close()
    module.train(was_training)
    return outputs


def transcribe_features(base: BaseModel, features: list[torch.Tensor],
                        max_seconds_per_batch: float | None = None, language: str = "auto",
                        itn: str | list[str] = "woitn", ban_emo_unknown: bool = False,
                        bucket_frames: int = 0) -> list[str]:
    """The raw outputs of decode_features."""
    return [d.raw for d in decode_features(base, features, max_seconds_per_batch, language, itn,
                                           ban_emo_unknown, bucket_frames=bucket_frames)]


PROGRESS_AUDIO_SECONDS = 300.0  # a group of files with this much audio shows a decoding bar

# Version of the transcription result's keys (TranscriptionResult below): bump it when a key is
# renamed, removed or changes meaning; adding an optional key keeps it.
RESULT_SCHEMA_VERSION = 1


class DecodedFields(TypedDict):
    """What every decoded clip or segment carries: Decoded's fields and the split tags."""

    raw: str
    text: str
    language: str | None
    emotion: str | None
    event: str | None
    itn: str | None
    language_probs: dict[str, float]
    emotion_probs: dict[str, float]
    event_probs: dict[str, float]


# Optional keys by total=False subclasses: NotRequired is not seen through this module's
# string annotations (from __future__ import annotations) on Python 3.11.
class _Segment(DecodedFields):
    start: float
    end: float


class SegmentResult(_Segment, total=False):
    """One segment of a long file: its span (seconds) and its decoding."""

    pooled: list[float]  # with_pooled only (a cascade's input)
    words: list[dict]    # timestamps only: [{word, start, end}] in seconds of the file
    rules_fired: list[str]  # post-processing adds these per segment, as to the file
    stage1_emotion: str | None
    stage1_event: str | None


class _File(DecodedFields):
    path: str
    schema_version: int  # RESULT_SCHEMA_VERSION


class TranscriptionResult(_File, total=False):
    """A file's result (schema RESULT_SCHEMA_VERSION), the record `transcribe --json` prints,
    the server answers from and post-processing rewrites. A file decoded whole carries the
    keys of one clip; a long file also `segmentation` and `segments`, with file-level tags
    and distributions weighted by segment duration."""

    pooled: list[float]
    words: list[dict]                 # timestamps: [{word, start, end}] in seconds of the file
    segmentation: str                 # how a long file was cut: "vad" or "fixed"
    segments: list[SegmentResult]
    rules_fired: list[str]            # added by a rules file (svlora.postprocess)
    stage1_emotion: str | None        # added by a cascade: stage 1's own tags
    stage1_event: str | None


class FileError(TypedDict):
    """In place of a result, for a file that could not be transcribed (keep_going)."""

    path: str
    error: str


@dataclass
class PreparedFile:
    """An audio file read, cut into segments and featurised: ready to decode."""

    path: str
    seconds: float
    segments: list[Segment]
    how: str                       # "whole", or how it was segmented
    features: list[torch.Tensor]   # one per segment


def prepare_file(base: BaseModel, path: str, max_segment_seconds: float = MAX_SEGMENT_SECONDS,
                 max_file_seconds: float | None = None, vad_loader=load_vad) -> PreparedFile:
    """Read `path`, refuse it past `max_file_seconds`, cut it when longer than
    `max_segment_seconds` (Silero VAD from `vad_loader()`, else fixed windows), featurise."""
    from svlora.audio import AudioDecodeError, load_audio

    try:
        waveform = load_audio(path)
    except AudioDecodeError as error:
        raise AudioFileError(str(path), str(error)) from error
    seconds = waveform.size / TARGET_RATE
    if max_file_seconds is not None and seconds > max_file_seconds:
        raise AudioFileError(str(path), f"{seconds:.1f} s is longer than --max-seconds "
                             f"{max_file_seconds:g}; raise the limit or cut the file")
    return prepare_waveform(base, waveform, str(path), max_segment_seconds, vad_loader)


def prepare_waveform(base: BaseModel, waveform: np.ndarray, path: str,
                     max_segment_seconds: float = MAX_SEGMENT_SECONDS, vad_loader=load_vad) -> PreparedFile:
    """16 kHz samples (a file's, or a realtime turn's) cut and featurised as prepare_file does."""
    seconds = waveform.size / TARGET_RATE
    vad = vad_loader() if seconds > max_segment_seconds else None
    segments, how = speech_segments(waveform, max_segment_seconds, vad)
    pieces = [waveform[int(s.start * TARGET_RATE):int(s.end * TARGET_RATE)] for s in segments]
    return PreparedFile(path, seconds, segments, how, segment_features(base, pieces))


DEVICE_FRONTEND_SEGMENTS = 16  # segments (≤ 30 s each) per batched frontend call on a GPU


def segment_features(base: BaseModel, pieces: list[np.ndarray], on_device: bool | None = None) -> list[torch.Tensor]:
    """Features of a file's segments. Decoding on a GPU (`on_device` None: when base.device is
    one), fbank → LFR → CMVN run there for all of them in one batched call and stay there for
    the forward pass (svlora.frontend.batch_features; equal to the CPU frontend within 1e-3,
    tests/test_frontend.py); on a CPU, each segment through the model's own frontend."""
    if on_device if on_device is not None else base.device.type == "cuda":
        # in groups, so the frontend's temporary memory stays bounded however long the file
        return [features for start in range(0, len(pieces), DEVICE_FRONTEND_SEGMENTS)
                for features in batch_features(pieces[start:start + DEVICE_FRONTEND_SEGMENTS],
                                               base.frontend, base.device)]
    return [base.features(piece) for piece in pieces]


def decode_prepared(base: BaseModel, files: list[PreparedFile], max_seconds_per_batch: float | None = None,
                    language: str = "auto", itn: str = "woitn", ban_emo_unknown: bool = False,
                    with_pooled: bool = False, batch_context=None,
                    progress: bool | None = None,
                    hotwords: Hotwords | list[Hotwords | None] | None = None,
                    timestamps: bool | list[bool] = False) -> list[TranscriptionResult]:
    """One result per prepared file (see file_result), every segment of every file decoded in
    shared duration-sorted batches. `batch_context(file_indices)`, `progress`, `hotwords` and
    `timestamps` (one, or one per file) as in decode_features, given the files each forward
    pass covers."""
    owners = [index for index, item in enumerate(files) for _ in item.features]
    context = (lambda rows: batch_context([owners[r] for r in rows])) if batch_context else None
    per_segment = [hotwords[i] for i in owners] if isinstance(hotwords, list) else hotwords
    timed = [timestamps[i] for i in owners] if isinstance(timestamps, list) else timestamps
    outputs = iter(decode_features(base, [f for item in files for f in item.features],
                                   max_seconds_per_batch, language, itn, ban_emo_unknown,
                                   with_pooled, context, progress, per_segment, timed))
    return [file_result(item.path, item.segments, item.how, [next(outputs) for _ in item.segments],
                        base.labels)
            for item in files]


def iter_transcribe_files(base: BaseModel, paths: list[str],
                          max_seconds_per_batch: float | None = None, language: str = "auto",
                          itn: str = "woitn", max_segment_seconds: float = MAX_SEGMENT_SECONDS,
                          max_file_seconds: float | None = None, vad_loader=load_vad,
                          pending_seconds: float = 600.0, ban_emo_unknown: bool = False,
                          with_pooled: bool = False, keep_going: bool = False,
                          hotwords: Hotwords | None = None,
                          timestamps: bool = False) -> Iterator[TranscriptionResult | FileError]:
    """One result per audio file, in order: the raw output and its tags and text; a file longer
    than `max_segment_seconds` is cut (Silero VAD, else fixed windows) and decoded per segment,
    with `segments` listing each one and file-level tags weighted by duration. Files are decoded
    in groups of about `pending_seconds` of audio, so memory stays bounded however many or how
    long the files are, and results come out group by group. `max_file_seconds` refuses longer
    files; `vad_loader()` gives the VAD (called on the first long file; None: fixed windows).
    A file that cannot be read (or is too long) raises AudioFileError, or with `keep_going`
    gives a FileError record in its place and the rest go on. `hotwords`: the text decoded
    with hotword biasing (svlora.hotwords)."""
    pending: list[PreparedFile | FileError] = []
    pending_total = 0.0

    def decode_pending() -> list[TranscriptionResult | FileError]:
        prepared = [item for item in pending if isinstance(item, PreparedFile)]
        long_audio = pending_total >= PROGRESS_AUDIO_SECONDS  # minutes to decode on a CPU
        decoded = iter(decode_prepared(base, prepared, max_seconds_per_batch, language, itn,
                                       ban_emo_unknown, with_pooled,
                                       progress=True if long_audio else None, hotwords=hotwords,
                                       timestamps=timestamps))
        return [next(decoded) if isinstance(item, PreparedFile) else item for item in pending]

    def prepare(path: str) -> PreparedFile:
        return prepare_file(base, path, max_segment_seconds, max_file_seconds, vad_loader)

    # the next files are read and featurised while a group decodes
    for path, prepared in prefetched(prepare, list(paths)):
        if isinstance(prepared, AudioFileError):
            if not keep_going:
                raise prepared
            pending.append(FileError(path=prepared.path, error=prepared.reason))
            continue
        if isinstance(prepared, Exception):
            raise prepared
        pending.append(prepared)
        pending_total += sum(s.seconds for s in prepared.segments)
        if pending_total >= pending_seconds:
            yield from decode_pending()
            pending, pending_total = [], 0.0
    if pending:
        yield from decode_pending()


def file_result(path: str, segments: list[Segment], how: str, outputs: list[Decoded],
                schema: LabelSchema) -> TranscriptionResult:
    """A file's result: as one clip when it was decoded whole; else its segments, the joined
    text, the duration-weighted emotion, event and language, and duration-weighted
    distributions. Tags are split by `schema`."""
    if how == "whole":
        return {"path": path, "schema_version": RESULT_SCHEMA_VERSION, **outputs[0].to_dict(),
                **schema.split(outputs[0].raw)}
    return result_from_segments(path, how, segment_rows(segments, outputs, schema))


def segment_rows(segments: list[Segment], outputs: list[Decoded], schema: LabelSchema) -> list[SegmentResult]:
    """Each segment's result: its span and decoding, words in seconds of the file."""
    rows = [{"start": round(s.start, 3), "end": round(s.end, 3), **d.to_dict(), **schema.split(d.raw)}
            for s, d in zip(segments, outputs)]
    for segment, row in zip(segments, rows):
        if row.get("words") is not None:
            row["words"] = [{**w, "start": round(w["start"] + segment.start, 3),
                             "end": round(w["end"] + segment.start, 3)} for w in row["words"]]
    return rows


def result_from_segments(path: str, how: str, rows: list[SegmentResult]) -> TranscriptionResult:
    """A long file's result from its segments' (file_result; a stream assembles it this way
    from segments decoded one by one)."""
    weights = [row["end"] - row["start"] for row in rows]
    decisions = {kind: weighted_decision([row[f"{kind}_probs"] for row in rows], weights)
                 for kind in TAG_FRAMES}
    words = {"words": [w for row in rows for w in row["words"]]} if "words" in rows[0] else {}
    return {"path": path, "schema_version": RESULT_SCHEMA_VERSION, **joined_output(rows), **words,
            **{kind: tag for kind, (_, tag) in decisions.items()},
            "itn": rows[0]["itn"], "segmentation": how, "segments": rows,
            **{f"{kind}_probs": probs for kind, (probs, _) in decisions.items()}}


def joined_output(segments: list[dict]) -> dict:
    """A long file's raw output and text from its segments' (raw concatenated, texts spaced)."""
    return {"raw": "".join(s["raw"] for s in segments),
            "text": " ".join(s["text"] for s in segments if s["text"])}


def weighted_decision(distributions: list[dict], weights: list[float]) -> tuple[dict, str]:
    """A long file's distribution (its segments' weighted by duration) and its tag, the argmax:
    a file's tag is the argmax of its own probabilities, as a segment's is."""
    probabilities = weighted_distribution(distributions, weights)
    return probabilities, max(probabilities, key=probabilities.get)


def weighted_distribution(distributions: list[dict], weights: list[float]) -> dict:
    total = sum(weights) or 1.0
    return {tag: round(sum(d[tag] * w for d, w in zip(distributions, weights)) / total, 6)
            for tag in distributions[0]}
