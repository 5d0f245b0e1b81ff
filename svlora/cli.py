"""The `svlora` command: one subcommand per stage. Errors print one line and exit 1."""

from __future__ import annotations

import argparse
import errno
import json
import sys

from svlora.errors import SvloraError
# constants only: `svlora --help` must not import torch, FunASR or the stages
from svlora.data_prep.formats import FORMATS, SPLIT_KEYS


FILE_ERRNOS = {errno.ENOSPC: "free some space and run again (training: --resume)",
               errno.EDQUOT: "free some space and run again (training: --resume)",
               errno.EROFS: "choose a writable output directory",
               errno.EACCES: "check the permissions or choose another directory",
               errno.ENOTDIR: "a file stands where a directory is needed; choose another path"}


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="SenseVoiceSmall dir or hub id")
    parser.add_argument("--hub", default="ms", choices=["ms", "hf"], help="hub for a hub id")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load an adapter even if it was trained on other base weights")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let FunASR import code the model dir names (config.yaml "
                        "remote_code); off by default: a model dir is data")


def _add_arm_args(parser: argparse.ArgumentParser, port: int, max_seconds: float) -> None:
    """The base, adapters and pipelines a server or the demo holds, and where it listens."""
    _add_model_args(parser)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="an adapter selected as model NAME; repeatable")
    parser.add_argument("--rules", action="append", default=[], metavar="NAME=MODEL:RULES",
                        help="a pipeline: MODEL (the base or an --adapter name) then rules "
                        "(a YAML path or a shipped example); repeatable")
    parser.add_argument("--cascade", action="append", default=[], metavar="NAME=MODEL:DIR",
                        help="a pipeline: MODEL then a cascade trained on it; repeatable")
    parser.add_argument("--name", default="sensevoice-small", help="the base model's name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--max-seconds", type=float, default=max_seconds, help="longest audio accepted")


def _add_stage1_args(parser: argparse.ArgumentParser, data_help: str, out_help: str) -> None:
    """Stage 1 (base, or base + adapter), the labelled data and the output of a lighter path."""
    _add_model_args(parser)
    parser.add_argument("--adapter", help="stage 1 is base + this adapter")
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--ban-emo-unknown", action="store_true",
                        help="stage 1 never predicts <|EMO_UNKNOWN|>")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svlora", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("make-tiny-model", help="write a tiny SenseVoiceSmall-layout model dir")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--full-size", action="store_true",
                      help="SenseVoiceSmall's real sizes (~234M random parameters; benchmarks)")

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
    prep.add_argument("--label-map", help="YAML {your label: SenseVoice emotion}")
    prep.add_argument("--language", choices=["zh", "en", "yue", "ja", "ko"],
                      help="language of rows without one (overrides a preset's)")
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
    prep.add_argument("--no-emotion", action="store_true",
                      help="a text-only corpus (e.g. a retention set): rows without an emotion "
                      "are kept with emo_target null; training and eval skip their emotion")

    check = commands.add_parser("check", help="lint SenseVoice jsonl manifests")
    check.add_argument("manifests", nargs="+")
    check.add_argument("--json", action="store_true", help="machine-readable findings")
    check.add_argument("--no-audio", action="store_true", help="skip decoding the audio")

    train = commands.add_parser("train", help="train a LoRA adapter from a YAML recipe")
    train.add_argument("recipe", help="a YAML recipe path or a shipped recipe name (svlora recipes)")
    train.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.lr=1e-4")
    train.add_argument("--print-config", action="store_true", help="print the resolved recipe, exit")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in `out`")
    train.add_argument("--resume", action="store_true", help="continue the run in `out` from "
                       "its last checkpoint")
    train.add_argument("--preflight", action="store_true", help="one step on the largest batch: "
                       "print peak memory, fail above train.max_memory_gb")

    evaluate = commands.add_parser("eval", help="A/B: base vs adapters on the same clips")
    _add_model_args(evaluate)
    evaluate.add_argument("--data", required=True, help="test manifest (SenseVoice jsonl)")
    evaluate.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                          help="an adapter arm; repeat for several")
    evaluate.add_argument("--rules-arm", action="append", default=[], metavar="NAME=ARM:RULES",
                          help="an arm that applies a rules file to ARM's outputs (base or an "
                          "--adapter arm's name), e.g. base+rules=base:rules.yaml; repeatable")
    evaluate.add_argument("--cascade-arm", action="append", default=[], metavar="NAME=ARM:DIR",
                          help="an arm whose emotion a cascade (trained on ARM) re-decides, e.g. "
                          "base+cascade=base:runs/cascade; repeatable")
    evaluate.add_argument("--general", help="a general-domain manifest: retention of every arm")
    evaluate.add_argument("--gate", help="thresholds on changes vs base, e.g. "
                          "'emotion_ua>=+0.02,cer<=+0.005,general_cer<=+0.01'; exit 2 if missed")
    evaluate.add_argument("--out", required=True, help="report directory")
    evaluate.add_argument("--max-seconds-per-batch", type=float, default=None,
                          help="padded audio seconds per decoding batch (default 60 on a CPU, "
                          "240 on a GPU)")
    evaluate.add_argument("--feature-cache", help="feature cache dir from `prepare --features`")
    evaluate.add_argument("--ban-emo-unknown", action="store_true",
                          help="never predict <|EMO_UNKNOWN|> (as SenseVoice's published emotion "
                          "results are decoded)")
    evaluate.add_argument("--max-seconds", type=float, default=None,
                          help="refuse clips longer than this (default: any length)")
    evaluate.add_argument("--cache-dir", help="prediction cache (default OUT/cache)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    export = commands.add_parser("export", help="adapter package, or a merged model dir with --merge")
    _add_model_args(export)
    export.add_argument("--adapter", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--merge", action="store_true", help="fold the adapter into the base weights")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.add_argument("--onnx", choices=["sherpa", "funasr"],
                        help="merge and write ONNX in sherpa-onnx's or FunASR ONNX's contract")
    export.add_argument("--int8", action="store_true", help="with --onnx: also a MatMul-int8 model")
    export.add_argument("--verify", metavar="MANIFEST",
                        help="with --onnx: decode these clips through the runtime; fail below 99%% parity")
    export.add_argument("--runtime-python", metavar="PYTHON",
                        help="with --verify: the interpreter that has the runtime (e.g. a venv "
                        "with funasr-onnx, which pins numpy<=1.26.4)")

    transcribe = commands.add_parser("transcribe", help="transcribe audio files")
    _add_model_args(transcribe)
    transcribe.add_argument("--adapter")
    transcribe.add_argument("--json", action="store_true", help="one JSON object per line")
    transcribe.add_argument("--max-seconds", type=float, default=None,
                            help="refuse files longer than this (default: any length)")
    transcribe.add_argument("--segment-seconds", type=float, default=30.0,
                            help="files longer than this are cut at speech pauses (Silero VAD) "
                            "into segments of at most this length, each reported")
    transcribe.add_argument("--ban-emo-unknown", action="store_true",
                            help="never predict <|EMO_UNKNOWN|>")
    transcribe.add_argument("--rules", help="a rules file (or a shipped example name) applied to "
                            "every output")
    transcribe.add_argument("--cascade", help="a cascade dir (svlora cascade train) that re-decides "
                            "the emotion")
    transcribe.add_argument("--int8", action="store_true",
                            help="int8 dynamic quantisation (CPU): faster, outputs may differ slightly")
    transcribe.add_argument("--language", default="auto",
                            choices=["auto", "zh", "en", "yue", "ja", "ko", "nospeech"])
    transcribe.add_argument("audio", nargs="+")

    rules = commands.add_parser("rules", help="post-processing rules: fit offsets, check a file")
    rule_actions = rules.add_subparsers(dest="rules_action", required=True)
    fit = rule_actions.add_parser("fit", help="fit emotion offsets and mine confusions on labelled clips")
    _add_stage1_args(fit, "a labelled manifest (validation split)", "the rules file to write (YAML)")
    check_rules = rule_actions.add_parser("check", help="validate a rules file")
    check_rules.add_argument("rules_file")

    cascade = commands.add_parser("cascade", help="a light emotion classifier after stage 1")
    cascade_actions = cascade.add_subparsers(dest="cascade_action", required=True)
    ctrain = cascade_actions.add_parser("train", help="train a cascade on stage 1's outputs")
    _add_stage1_args(ctrain, "labelled training manifest", "the cascade directory to write")
    ctrain.add_argument("--val", required=True, help="labelled validation manifest (best epoch)")
    ctrain.add_argument("--text", default="hashed", help="text branch: hashed (character n-grams), "
                        "none, or a Hugging Face sequence-classification model dir (frozen)")
    ctrain.add_argument("--hidden", type=int, default=64, help="hidden units (0: logistic)")
    ctrain.add_argument("--cache-dir", help="stage-1 outputs cache (default: .stage1-cache beside --out)")

    served = commands.add_parser("serve", help="an OpenAI-style transcription server (base + adapters)")
    _add_arm_args(served, port=8000, max_seconds=3600.0)
    served.add_argument("--max-upload-mb", type=float, default=25.0)
    served.add_argument("--adapter-root", help="admin loads adapters only from under this directory")
    served.add_argument("--admin-token", help="bearer token of the admin API (or env "
                        "SVLORA_ADMIN_TOKEN); without one the admin API is off")
    served.add_argument("--max-adapters", type=int, help="LRU bound on loaded adapters")
    served.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="wait this long for more requests to decode together (0: no wait)")
    served.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most")
    served.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting or decoding; beyond it: 503 with Retry-After")

    demo = commands.add_parser("demo", help="a Gradio A/B page: one clip, every arm side by side")
    _add_arm_args(demo, port=7860, max_seconds=600.0)
    demo.add_argument("--examples", metavar="MANIFEST", help="pre-fill example clips from a manifest")

    quick = commands.add_parser("quickstart", help="the whole pipeline on a tiny model and demo data")
    quick.add_argument("--out", default="svlora-quickstart")
    quick.add_argument("--seed", type=int, default=0)

    commands.add_parser("recipes", help="list the shipped recipes")
    return parser


def run_make_tiny_model(args) -> None:
    from svlora.tiny_model import full_size_spec, make_tiny_model, saved_parameter_count

    out = make_tiny_model(args.out_dir, seed=args.seed,
                          spec=full_size_spec() if args.full_size else None)
    print(f"wrote {out} ({saved_parameter_count(out):,} parameters)")


def run_prepare(args) -> None:
    from svlora.data_prep import (AudioLimits, HfColumns, PrepareOptions, load_label_map, prepare,
                                  summary)

    options = PrepareOptions(
        input=args.input, out=args.out, format=args.format, split_by=args.split_by, val=args.val,
        test=args.test, folds=args.folds, seed=args.seed, label_map=load_label_map(args.label_map),
        language=args.language, event=args.event, itn=args.itn, transcripts=args.transcripts,
        encoding=args.encoding, workers=args.workers, features_model=args.features,
        feature_cache=args.feature_cache, no_emotion=args.no_emotion,
        hf=HfColumns(audio=args.audio_column, text=args.text_column, emotion=args.emotion_column,
                     speaker=args.speaker_column, language=args.language_column,
                     split=args.hf_split),
        limits=AudioLimits(min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                           silence_rms=args.silence_rms, max_clipped_fraction=args.max_clipped))
    report = prepare(options)
    print(summary(report))
    print(f"wrote manifests, prepare_report.json and rejected.csv to {args.out}")


def run_check(args) -> int:
    from svlora.data_prep import check_manifests, render_findings

    findings = check_manifests(args.manifests, decode_audio=not args.no_audio)
    if args.json:
        print(json.dumps(findings, indent=2, ensure_ascii=False))
    else:
        print(render_findings(findings))
    return 1 if findings["errors"] else 0


def run_train(args) -> None:
    import yaml
    from dataclasses import asdict

    from svlora.finetune import load_recipe, train
    from svlora.recipes import recipe_path

    recipe = load_recipe(recipe_path(args.recipe), args.overrides)
    if args.print_config:
        print(yaml.safe_dump(asdict(recipe), sort_keys=False), end="")
        return
    if args.preflight:
        from svlora.finetune import preflight

        print(json.dumps(preflight(recipe, log=lambda m: print(m, file=sys.stderr))))
        return
    result = train(recipe, overwrite=args.overwrite, resume=args.resume)
    if result.is_main_process:
        print(f"best: {json.dumps(result.best)}")
        print(f"wrote {result.output}")


def run_eval(args) -> int:
    from svlora.eval import evaluate, verdict

    report = evaluate(args.model, args.data, args.out, adapters=args.adapter,
                      general=args.general, gate=args.gate, device=args.device, hub=args.hub,
                      max_seconds_per_batch=args.max_seconds_per_batch,
                      allow_base_mismatch=args.allow_base_mismatch,
                      feature_cache=args.feature_cache, cache_dir=args.cache_dir,
                      resamples=args.resamples, seed=args.seed,
                      trust_remote_code=args.trust_remote_code, max_clip_seconds=args.max_seconds,
                      ban_emo_unknown=args.ban_emo_unknown, rules_arms=args.rules_arm,
                      cascade_arms=args.cascade_arm)
    print(verdict(report))
    print(f"report: {args.out}/report.html (report.md, report.json, predictions.jsonl, confusion*.png)")
    if not report["gates_passed"]:
        failed = [f"{arm}: {c['gate']} ({c['value']:+.4f})" for arm, checks in report["gates"].items()
                  for c in checks if not c["passed"]]
        print("gates failed: " + "; ".join(failed), file=sys.stderr)
        return 2


def run_export(args) -> None:
    from svlora.adapters import export_adapter

    if args.onnx:
        from svlora.adapters.export import export_onnx

        out, report = export_onnx(args.model, args.adapter, args.out, args.onnx, args.int8, args.hub,
                                  args.allow_base_mismatch, args.trust_remote_code, args.overwrite,
                                  args.verify, args.runtime_python)
        print(f"wrote ONNX ({args.onnx} contract{', int8' if args.int8 else ''}) {out}")
        if report:
            print(f"parity through {report['runtime']}: {report['fp32_identical']}/{report['clips']} "
                  f"clips identical (text and tags); CER torch {report['torch_fp32']['cer']} "
                  f"onnx {report['onnx_fp32']['cer']}")
            if "onnx_int8" in report:
                print(f"int8: CER {report['onnx_int8']['cer']} (change {report['int8_change']['cer']:+}), "
                      f"emotion accuracy {report['onnx_int8']['emotion_accuracy']} (change "
                      f"{report['int8_change']['emotion_accuracy']}), identical "
                      f"{report['int8_identical_to_fp32']}/{report['clips']}")
        return
    if args.int8 or args.verify or args.runtime_python:
        raise SvloraError("--int8, --verify and --runtime-python go with --onnx")

    out = export_adapter(args.model, args.adapter, args.out, merge=args.merge, hub=args.hub,
                         allow_base_mismatch=args.allow_base_mismatch, device=args.device,
                         trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    print(f"wrote {'merged model' if args.merge else 'adapter package'} {out}")


def run_transcribe(args) -> None:
    from svlora.adapters import load_model

    runtime = load_model(args.model, args.adapter, device=args.device, hub=args.hub,
                         trust_remote_code=args.trust_remote_code, int8=args.int8,
                         cascade=args.cascade, rules=args.rules,
                         allow_base_mismatch=args.allow_base_mismatch)
    for result in runtime.transcribe(args.audio, language=args.language,
                                     max_segment_seconds=args.segment_seconds,
                                     max_file_seconds=args.max_seconds,
                                     ban_emo_unknown=args.ban_emo_unknown):
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        elif "segments" in result:
            for segment in result["segments"]:
                print(f"{result['path']}\t{segment['start']:.2f}-{segment['end']:.2f}\t{segment['raw']}")
        else:
            print(f"{result['path']}\t{result['raw']}")


def run_rules(args) -> None:
    from svlora.postprocess import load_rules
    from svlora.recipes.rules import rules_path

    if args.rules_action == "check":
        rules = load_rules(rules_path(args.rules_file))
        print(f"{args.rules_file}: {len(rules.rules)} rule(s), offsets for "
              f"{', '.join(rules.emotion_offsets) or 'no emotion'}: valid")
        return
    from svlora.postprocess import fit_rules_file

    content = fit_rules_file(args.model, args.data, args.out, adapter=args.adapter,
                             device=args.device, hub=args.hub,
                             allow_base_mismatch=args.allow_base_mismatch,
                             ban_emo_unknown=args.ban_emo_unknown,
                             trust_remote_code=args.trust_remote_code)
    offsets = ", ".join(f"{k} {v:+.2f}" for k, v in content["emotion_offsets"].items()) or "none"
    print(f"emotion offsets: {offsets}; {len(content['miner'])} confusion(s) mined; wrote {args.out}")


def run_cascade(args) -> None:
    from svlora.postprocess import train_cascade

    train_cascade(args.model, args.data, args.val, args.out, adapter=args.adapter, text=args.text,
                  hidden=args.hidden, device=args.device, hub=args.hub,
                  allow_base_mismatch=args.allow_base_mismatch,
                  ban_emo_unknown=args.ban_emo_unknown, trust_remote_code=args.trust_remote_code,
                  cache_dir=args.cache_dir)
    print(f"wrote {args.out}")


def _arm_settings(args, **extra):
    """ServeSettings from the arguments _add_arm_args defines."""
    from svlora.adapters.pool import ServeSettings
    from svlora.config import parse_named_target

    adapters = {}
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        if not name or not path or name in adapters:
            raise SvloraError(f"--adapter {spec!r}: expected a unique NAME=PATH")
        adapters[name] = path

    def pipelines(specs: list[str], flag: str, example: str) -> dict:
        parsed = [parse_named_target(spec, flag, example) for spec in specs]
        return {name: (source, target) for name, source, target in parsed}

    return ServeSettings(
        model=args.model, adapters=adapters, base_name=args.name, device=args.device,
        rules=pipelines(args.rules, "--rules", "clinic+rules=clinic:soft_particles"),
        cascades=pipelines(args.cascade, "--cascade", "clinic+cascade=clinic:runs/cascade"),
        max_audio_seconds=args.max_seconds, allow_base_mismatch=args.allow_base_mismatch, **extra)


def run_serve(args) -> None:
    from svlora.adapters.serve import serve

    settings = _arm_settings(
        args, max_upload_bytes=int(args.max_upload_mb * 2**20), adapter_root=args.adapter_root,
        admin_token=args.admin_token, max_adapters=args.max_adapters,
        batch_window_ms=args.batch_window_ms, max_batch_requests=args.max_batch, max_queue=args.max_queue)
    print(f"serving {args.name}, {len(settings.adapters)} adapter(s), "
          f"{len(settings.rules) + len(settings.cascades)} pipeline(s) on "
          f"http://{args.host}:{args.port}", flush=True)
    serve(settings, args.host, args.port)


def run_demo(args) -> None:
    from svlora.adapters.demo import launch_demo

    settings = _arm_settings(args)
    print(f"svlora demo on http://{args.host}:{args.port}", flush=True)
    launch_demo(settings, args.host, args.port, args.examples)


def run_quickstart(args) -> None:
    from svlora.quickstart import run_quickstart as quickstart

    quickstart(args.out, seed=args.seed)


def run_recipes(args) -> None:
    from svlora.recipes import recipe_path, shipped_recipes

    for name in shipped_recipes():
        first_line = recipe_path(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        print(f"{name:28s} {first_line}")


HANDLERS = {"make-tiny-model": run_make_tiny_model, "prepare": run_prepare, "check": run_check,
            "train": run_train,
            "eval": run_eval, "export": run_export, "transcribe": run_transcribe,
            "quickstart": run_quickstart, "recipes": run_recipes, "rules": run_rules,
            "cascade": run_cascade, "serve": run_serve,
            "demo": run_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Recipe overrides may follow flags (`train R --print-config a.b=1`), which argparse's
    # positional nargs cannot take once a flag intervenes.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or not all("=" in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        code = HANDLERS[args.command](args)
    except SvloraError as error:
        print(f"svlora {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, read-only or missing folder, permissions
        if error.errno not in FILE_ERRNOS:
            raise
        where = error.filename or "a file"
        print(f"svlora {args.command}: error: {where}: {error.strerror}; "
              f"{FILE_ERRNOS[error.errno]}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
