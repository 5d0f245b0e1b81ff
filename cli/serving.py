"""`svlora export`, `transcribe`, `serve` and `demo`: the serving commands."""

from __future__ import annotations

import json

from svlora.cli.common import add_arm_args, add_hotword_args, add_model_args, arm_settings
from svlora.errors import SvloraError


def register(commands) -> None:
    export = commands.add_parser("export", help="adapter package, or a merged model dir with --merge")
    add_model_args(export, device="cpu")  # the files written do not depend on the machine
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
    export.set_defaults(handler=run_export)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files")
    add_model_args(transcribe)
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
                            help="the language query: auto, zh, en, yue, ja, ko, nospeech, or one "
                            "the adapter's label schema adds (e.g. a dialect)")
    add_hotword_args(transcribe)
    transcribe.add_argument("--timestamps", action="store_true",
                            help="word start/end seconds (`words`, with --json; per segment too)")
    transcribe.add_argument("audio", nargs="+")
    transcribe.set_defaults(handler=run_transcribe)

    served = commands.add_parser("serve", help="an OpenAI-style transcription server (base + adapters)")
    add_arm_args(served, port=8000, max_seconds=3600.0)
    served.add_argument("--max-upload-mb", type=float, default=25.0,
                        help="larger uploads get 413 (default: OpenAI's 25 MiB)")
    served.add_argument("--adapter-root", help="admin loads adapters only from under this directory")
    served.add_argument("--admin-token", help="bearer token of the admin API (or env "
                        "SVLORA_ADMIN_TOKEN); without one the admin API is off")
    served.add_argument("--max-adapters", type=int, help="LRU bound on loaded adapters")
    served.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="wait this long for more requests to decode together (0: no wait)")
    served.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most")
    served.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting or decoding; beyond it: 503 with Retry-After")
    served.add_argument("--subtitle-seconds", type=float, default=7.0,
                        help="srt/vtt: no cue longer than this (cut at word boundaries)")
    served.add_argument("--realtime-max-connections", type=int, default=16,
                        help="/v1/realtime: WebSocket sessions at once; more are refused")
    served.add_argument("--realtime-max-session-seconds", type=float, default=1800.0,
                        help="/v1/realtime: a session is closed after this long (OpenAI's: 30 min)")
    served.add_argument("--realtime-idle-seconds", type=float, default=60.0,
                        help="/v1/realtime: a session silent (no client event) this long is closed")
    add_capture_args(served)
    served.set_defaults(handler=run_serve)

    demo = commands.add_parser("demo", help="a Gradio A/B page: one clip, every arm side by side")
    add_arm_args(demo, port=7860, max_seconds=600.0)
    demo.add_argument("--examples", metavar="MANIFEST", help="pre-fill example clips from a manifest")
    demo.set_defaults(handler=run_demo)


def add_capture_args(parser) -> None:
    parser.add_argument("--capture", metavar="DIR", help="keep a sample of requests (audio as sent, "
                        "the response, what served it) in DIR for review; off by default")
    parser.add_argument("--capture-rate", type=float, default=0.1,
                        help="with --capture: the share of requests kept (default 0.1)")
    parser.add_argument("--capture-max-gb", type=float, default=10.0,
                        help="with --capture: past this size the oldest captures are removed (default 10)")
    parser.add_argument("--feedback-token", help="bearer token of POST /v1/feedback (or env "
                        "SVLORA_FEEDBACK_TOKEN); when set, the only one it takes (default: the admin token)")


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


PROGRESS_MIN_FILES = 20  # more files than this: a progress bar on stderr


def missing_inputs(paths: list[str]) -> str | None:
    """Why some inputs cannot be read at all (checked before the model loads), else None."""
    from svlora.audio import missing_file_reason

    problems = [f"{path}: {reason}" for path in paths if (reason := missing_file_reason(path))]
    if not problems:
        return None
    if len(problems) == 1:
        return problems[0]
    shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
    return f"{len(problems)} of {len(paths)} audio inputs cannot be read: {shown}"


def result_lines(result: dict, as_json: bool) -> list[str]:
    """What `transcribe` prints for one file: a JSON object, or tab-separated text (one line per
    segment of a long file; PATH, ERROR and the reason for a file that failed)."""
    if as_json:
        return [json.dumps(result, ensure_ascii=False)]
    if "error" in result:
        return [f"{result['path']}\tERROR\t{result['error']}"]
    if "segments" in result:
        return [f"{result['path']}\t{segment['start']:.2f}-{segment['end']:.2f}\t{segment['raw']}"
                for segment in result["segments"]]
    return [f"{result['path']}\t{result['raw']}"]


def run_transcribe(args) -> None:
    import sys

    from tqdm import tqdm

    from svlora.adapters import load_model

    problem = missing_inputs(args.audio)
    if problem:
        raise SvloraError(problem)
    runtime = load_model(args.model, args.adapter, device=args.device, hub=args.hub,
                         trust_remote_code=args.trust_remote_code, int8=args.int8,
                         cascade=args.cascade, rules=args.rules,
                         allow_base_mismatch=args.allow_base_mismatch, hotwords=args.hotwords,
                         hotword_score=args.hotword_score, beam=args.beam)
    failed = []
    results = runtime.iter_transcribe(args.audio, language=args.language,
                                      max_segment_seconds=args.segment_seconds,
                                      max_file_seconds=args.max_seconds,
                                      ban_emo_unknown=args.ban_emo_unknown, keep_going=True,
                                      timestamps=args.timestamps)
    with tqdm(total=len(args.audio), desc="transcribing", unit="file", file=sys.stderr,
              disable=len(args.audio) <= PROGRESS_MIN_FILES) as progress:
        for result in results:
            for line in result_lines(result, args.json):
                progress.write(line, file=sys.stdout)  # keeps the bar below the output
            if "error" in result:
                failed.append(result)
            progress.update(1)
    if failed:
        raise SvloraError(f"{len(failed)} of {len(args.audio)} file(s) could not be transcribed "
                          f"(ERROR records on stdout), e.g. {failed[0]['path']}: "
                          f"{failed[0]['error']}")


def run_serve(args) -> None:
    from svlora.adapters.capture import checked_capture_dir
    from svlora.adapters.serve import serve

    settings = arm_settings(
        args, max_upload_bytes=int(args.max_upload_mb * 2**20), adapter_root=args.adapter_root,
        admin_token=args.admin_token, max_adapters=args.max_adapters,
        batch_window_ms=args.batch_window_ms, max_batch_requests=args.max_batch, max_queue=args.max_queue,
        subtitle_seconds=args.subtitle_seconds, realtime_max_connections=args.realtime_max_connections,
        realtime_max_session_seconds=args.realtime_max_session_seconds,
        realtime_idle_seconds=args.realtime_idle_seconds, capture_dir=args.capture,
        capture_rate=args.capture_rate, capture_max_bytes=int(args.capture_max_gb * 2**30),
        feedback_token=args.feedback_token)
    checked_capture_dir(settings.capture_dir, settings.capture_rate, settings.capture_max_bytes)
    print(f"serving {args.name}, {len(settings.adapters)} adapter(s), "
          f"{len(settings.rules) + len(settings.cascades)} pipeline(s) on "
          f"http://{args.host}:{args.port}"
          + (f", capturing {args.capture_rate:.0%} of requests to {args.capture}" if args.capture else ""),
          flush=True)
    serve(settings, args.host, args.port)


def run_demo(args) -> None:
    from svlora.adapters.demo import launch_demo

    settings = arm_settings(args)
    print(f"svlora demo on http://{args.host}:{args.port}", flush=True)
    launch_demo(settings, args.host, args.port, args.examples)
