"""`svlora make-tiny-model`, `prepare` and `check`: the data commands."""

from __future__ import annotations

import json

# constants only: `svlora --help` must not import torch, FunASR or the stages
from svlora.data_prep.formats import FORMATS, SPLIT_KEYS
from svlora.errors import SvloraError


def register(commands) -> None:
    tiny = commands.add_parser("make-tiny-model", help="write a tiny SenseVoiceSmall-layout model dir")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--full-size", action="store_true",
                      help="SenseVoiceSmall's real sizes (~234M random parameters; benchmarks)")
    tiny.set_defaults(handler=run_make_tiny_model)

    prep = commands.add_parser("prepare", help="validate clips and labels into SenseVoice manifests")
    prep.add_argument("input", help="a CSV/JSONL file, a manifest, or a folder (folder, kaldi, presets)")
    prep.add_argument("--format", required=True, choices=list(FORMATS))
    prep.add_argument("--out", required=True, help="directory for the manifests and the report")
    prep.add_argument("--split-by", default="auto", choices=list(SPLIT_KEYS),
                      help="keys no two splits may share (auto: speaker+text with ≥ 3 speakers, else text)")
    prep.add_argument("--val", type=float, default=0.1, help="share of clips for validation")
    prep.add_argument("--test", type=float, default=0.1, help="share of clips for test")
    prep.add_argument("--folds", type=int, default=0, help="K > 1: write K grouped folds instead")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--labels", metavar="LABELS.yaml",
                      help="your label schema: emotion/event/language lists and heads (new names "
                      "get spare tokens); written to OUT/labels.json for train, eval and cascades")
    prep.add_argument("--label-map", help="YAML {your label: an emotion class (SenseVoice's or --labels')}")
    prep.add_argument("--language", help="language of rows without one (overrides a preset's): "
                      "zh, en, yue, ja, ko, or one --labels declares")
    prep.add_argument("--transcripts", help="folder/casia: transcript file (id<TAB>text)")
    prep.add_argument("--encoding", default="utf-8", help="text encoding, e.g. gb18030")
    prep.add_argument("--event", default="Speech", help="event tag for rows without one")
    prep.add_argument("--itn", default="woitn", choices=["woitn", "withitn"])
    prep.add_argument("--min-seconds", type=float, default=0.1)
    prep.add_argument("--max-seconds", type=float, default=30.0)
    prep.add_argument("--silence-rms", type=float, default=1e-4)
    prep.add_argument("--max-clipped", type=float, default=0.02,
                      help="reject clips with more than this share of samples at full scale")
    prep.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    prep.add_argument("--features", metavar="MODEL",
                      help="also cache MODEL's frontend features (training/eval read them)")
    prep.add_argument("--feature-cache", help="feature cache dir (default OUT/features)")
    for column in ("audio", "text", "emotion", "speaker", "language"):
        prep.add_argument(f"--{column}-column", default=column, help=f"hf: the {column} column")
    prep.add_argument("--hf-split", help="hf: which split of a DatasetDict")
    prep.add_argument("--word-times", metavar="JSONL",
                      help="reference word timings ({audio, words: [{word, start, end}]} per line, "
                      "audio relative to the file): eval then reports timestamp error")
    prep.add_argument("--max-rejected", metavar="N|P%",
                      help="exit 1 (after writing the manifests and rejected.csv) when more than "
                      "N rows, or P%% of the rows read, are rejected (default: no limit)")
    prep.add_argument("--no-emotion", action="store_true",
                      help="a text-only corpus (e.g. a retention set): rows without an emotion "
                      "are kept with emo_target null; training and eval skip their emotion")
    prep.set_defaults(handler=run_prepare)

    check = commands.add_parser("check", help="lint SenseVoice jsonl manifests")
    check.add_argument("manifests", nargs="+")
    check.add_argument("--json", action="store_true", help="machine-readable findings")
    check.add_argument("--no-audio", action="store_true", help="skip decoding the audio")
    check.add_argument("--labels", metavar="LABELS", help="validate against this schema (YAML or "
                       "labels.json; default: the labels.json beside each manifest)")
    check.set_defaults(handler=run_check)


def run_make_tiny_model(args) -> None:
    from svlora.tiny_model import full_size_spec, make_tiny_model, saved_parameter_count

    out = make_tiny_model(args.out_dir, seed=args.seed,
                          spec=full_size_spec() if args.full_size else None)
    print(f"wrote {out} ({saved_parameter_count(out):,} parameters)")


def run_prepare(args) -> None:
    from svlora.data_prep import (AudioLimits, HfColumns, PrepareOptions, RejectLimit,
                                  load_label_map, prepare_corpus, rejected_line, summary)

    from pathlib import Path

    from svlora.label_schema import DEFAULT_SCHEMA, SCHEMA_FILE, load_schema, read_schema_file

    limit = RejectLimit.parse(args.max_rejected) if args.max_rejected is not None else None
    labels = DEFAULT_SCHEMA
    if args.labels:  # an earlier run's OUT/labels.json keeps the tokens it gave
        earlier = Path(args.out) / SCHEMA_FILE
        labels = load_schema(args.labels, read_schema_file(earlier) if earlier.is_file() else None)
    options = PrepareOptions(
        input=args.input, out=args.out, format=args.format, split_by=args.split_by, val=args.val,
        test=args.test, folds=args.folds, seed=args.seed, labels=labels,
        label_map=load_label_map(args.label_map, labels),
        language=args.language, event=args.event, itn=args.itn, transcripts=args.transcripts,
        encoding=args.encoding, workers=args.workers, features_model=args.features,
        feature_cache=args.feature_cache, no_emotion=args.no_emotion, word_times=args.word_times,
        hf=HfColumns(audio=args.audio_column, text=args.text_column, emotion=args.emotion_column,
                     speaker=args.speaker_column, language=args.language_column,
                     split=args.hf_split),
        limits=AudioLimits(min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                           silence_rms=args.silence_rms, max_clipped_fraction=args.max_clipped))
    report = prepare_corpus(options)
    print(summary(report))
    print(f"wrote manifests, prepare_report.json and rejected.csv to {args.out}")
    problem = limit and limit.problem(report["rows_rejected"], report["rows_read"], args.out)
    if problem:
        raise SvloraError(problem)
    print(rejected_line(report, args.out))  # last, where a scrolling terminal leaves it


def run_check(args) -> int:
    from svlora.data_prep import check_manifests, render_findings

    from svlora.label_schema import load_schema

    findings = check_manifests(args.manifests, decode_audio=not args.no_audio,
                               labels=load_schema(args.labels) if args.labels else None)
    if args.json:
        print(json.dumps(findings, indent=2, ensure_ascii=False))
    else:
        print(render_findings(findings))
    return 1 if findings["errors"] else 0
