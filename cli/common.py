"""Arguments several commands share, and the server/demo settings built from them."""

from __future__ import annotations

import argparse

from svlora.errors import SvloraError

def add_model_args(parser: argparse.ArgumentParser, device: str = "auto") -> None:
    """--model, --hub, --device (resolved by svlora.model.resolve_device; `auto`: CUDA when
    available, else the CPU) and the load-time safety switches."""
    parser.add_argument("--model", required=True, help="SenseVoiceSmall dir or hub id")
    parser.add_argument("--hub", default="ms", choices=["ms", "hf"], help="hub for a hub id")
    parser.add_argument("--device", default=device,
                        help=f"auto (CUDA when available), cpu, cuda or cuda:N (default {device})")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="load an adapter even if it was trained on other base weights")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let FunASR import code the model dir names (config.yaml "
                        "remote_code); off by default: a model dir is data")


def add_hotword_args(parser: argparse.ArgumentParser, with_file: bool = True) -> None:
    """--hotwords FILE (when `with_file`), --hotword-score and --beam."""
    from svlora.hotwords import DEFAULT_BEAM, DEFAULT_HOTWORD_SCORE

    if with_file:
        parser.add_argument("--hotwords", metavar="TERMS.txt",
                            help="bias decoding towards these terms (one per line, "
                            "term<TAB>alias|alias): CTC prefix beam search with a context graph")
    parser.add_argument("--hotword-score", type=float, default=DEFAULT_HOTWORD_SCORE,
                        help=f"bonus per matched term token, log-prob units (default {DEFAULT_HOTWORD_SCORE:g})")
    parser.add_argument("--beam", type=int, default=DEFAULT_BEAM,
                        help=f"prefixes kept by the hotword beam search (default {DEFAULT_BEAM})")


def add_arm_args(parser: argparse.ArgumentParser, port: int, max_seconds: float) -> None:
    """The base, adapters and pipelines a server or the demo holds, and where it listens."""
    add_model_args(parser)
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
    add_hotword_args(parser)


def add_stage1_args(parser: argparse.ArgumentParser, data_help: str, out_help: str) -> None:
    """Stage 1 (base, or base + adapter), the labelled data and the output of a lighter path."""
    add_model_args(parser)
    parser.add_argument("--adapter", help="stage 1 is base + this adapter")
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--ban-emo-unknown", action="store_true",
                        help="stage 1 never predicts <|EMO_UNKNOWN|>")
    parser.add_argument("--labels", help="the label schema (labels.json or YAML; default: the "
                        "labels.json beside --data)")


def arm_settings(args, **extra):
    """ServeSettings from the arguments add_arm_args defines."""
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
        max_audio_seconds=args.max_seconds, allow_base_mismatch=args.allow_base_mismatch,
        hotwords=args.hotwords, hotword_score=args.hotword_score, beam=args.beam, **extra)
