"""Batched decoding: svlora (fp32, and opt-in int8) against `funasr.AutoModel.generate` at each
batch size of a sweep, on the same files, weights, threads and precision.

    python benchmarks/eval_bench.py [--data ../shared/data/esd_en_0020_dev | --manifest M.jsonl]
        [--model DIR | --full-size] [--device cuda] [--limit 200] [--batch-sizes 1,16,64]
        [--repeats 3] [--threads N] [--int8] [--profile]

Every side decodes files end to end (audio decoding, features, encoder, greedy CTC), warmed up
once, then timed `--repeats` times: best and median are printed. FunASR runs with dither off
(`frontend_conf={"dither": 0.0}`) so its outputs are comparable token for token. `--manifest`
with labels adds CER and emotion accuracy of each svlora side (the int8 change); `--profile`
splits svlora's time into audio, features, encoder and CTC/tokenizer, and prints the padding
each batching leaves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, row, timed  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esd_en_0020_dev"


def input_files(args) -> tuple[list[str], list[dict] | None]:
    if args.manifest:
        rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()]
        rows = rows[: args.limit]
        return [r["source"] for r in rows], rows
    files = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix in (".wav", ".flac"))
    return files[: args.limit], None


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the decoded frames that are padding."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


def profile_svlora(runtime, files: list[str], max_seconds: float) -> None:
    """One pass of svlora's path with each phase timed."""
    from svlora.audio import load_audio
    from svlora.decoding import (decoding_precision, default_batch_seconds, duration_batches, greedy_ids,
                                 inference_log_probs)
    from svlora.features import pad_features

    phases = dict.fromkeys(("audio decode", "features", "encoder+CTC head", "greedy+tokenizer"), 0.0)
    started = time.perf_counter()
    waves = [load_audio(f) for f in files]
    phases["audio decode"] = time.perf_counter() - started
    started = time.perf_counter()
    features = [runtime.base.features(w) for w in waves]
    phases["features"] = time.perf_counter() - started
    lengths = [f.shape[0] for f in features]
    batches = duration_batches(lengths, max_seconds or default_batch_seconds(runtime.base.device))
    with torch.inference_mode():
        for batch in batches:
            padded, lens = pad_features([features[i] for i in batch])
            started = time.perf_counter()
            device = runtime.base.device
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=decoding_precision(device, runtime.base.model) == "bf16"):
                log_probs, out_lengths = inference_log_probs(runtime.base.model, padded.to(device), lens)
            phases["encoder+CTC head"] += time.perf_counter() - started
            started = time.perf_counter()
            [runtime.base.decode(ids) for ids in greedy_ids(log_probs, out_lengths)]
            phases["greedy+tokenizer"] += time.perf_counter() - started
    total = sum(phases.values())
    print("svlora profile (one pass): " + ", ".join(
        f"{name} {seconds:.2f} s ({100 * seconds / total:.0f}%)" for name, seconds in phases.items()))
    for size in (1, 16, 64):
        in_order = [list(range(i, min(i + size, len(lengths)))) for i in range(0, len(lengths), size)]
        print(f"padding share: FunASR batch_size={size} (input order) "
              f"{100 * padding_share(lengths, in_order):.1f}%", end="; ")
    print(f"svlora duration-sorted {100 * padding_share(lengths, batches):.1f}%")


def quality(outputs: list[dict], rows: list[dict]) -> str:
    from svlora.metrics import corpus_cer

    languages = [r["text_language"].strip("<|>") for r in rows]
    cer = corpus_cer([r["target"] for r in rows], [o["text"] for o in outputs], languages)
    labelled = [(o, r) for o, r in zip(outputs, rows) if r.get("emo_target")]
    accuracy = sum(o["emotion"] == r["emo_target"] for o, r in labelled) / max(1, len(labelled))
    return f"  CER {cer:.4f}, emotion accuracy {accuracy:.4f}"


class FunasrPrecision:
    """How FunASR ran: its own fp32, its `bf16=True` (the whole model cast), or — where its
    SenseVoice cannot take bf16 weights with fp32 features — its fp32 model under bf16 autocast."""

    def __init__(self, label: str, autocast_device: str | None = None):
        self.label, self.autocast_device = label, autocast_device

    def __call__(self):
        from contextlib import nullcontext
        if self.autocast_device is None:
            return nullcontext()
        return torch.autocast(self.autocast_device, dtype=torch.bfloat16)


def funasr_at(AutoModel, model_dir, args, precision: str, files):
    """FunASR's AutoModel at svlora's precision, at its best available way of running it."""
    from svlora.model import quiet_funasr_logging, stdout_to_stderr

    def build(**extra):
        with stdout_to_stderr(), quiet_funasr_logging():
            return AutoModel(model=model_dir, device=args.device, disable_update=True,
                             disable_pbar=True, log_level="ERROR", ncpu=args.threads,
                             frontend_conf={"dither": 0.0}, **extra)

    if precision != "bf16":
        return build(), FunasrPrecision("fp32")
    model = build(bf16=True)
    try:
        with stdout_to_stderr(), quiet_funasr_logging():
            model.generate(input=files[:2], batch_size=2)
        return model, FunasrPrecision("bf16 (bf16=True)")
    except RuntimeError as error:
        print(f"FunASR bf16=True failed ({str(error).splitlines()[0][:80]}); timing its fp32 model "
              "under bf16 autocast instead")
        return build(), FunasrPrecision("bf16 autocast", args.device.split(":")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a folder of audio files")
    parser.add_argument("--manifest", help="a SenseVoice manifest instead (labels give CER/accuracy)")
    parser.add_argument("--model", help="a model dir (default: a new tiny one, or --full-size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full-size", action="store_true", help="the 234M architecture, random init")
    parser.add_argument("--limit", type=int, default=200, help="clips to decode")
    parser.add_argument("--batch-sizes", default="1,16,64", help="AutoModel.generate batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-seconds-per-batch", type=float, default=None,
                        help="svlora's batch budget (default: its own, 60 s on a CPU)")
    parser.add_argument("--int8", action="store_true", help="also time svlora's int8 path (CPU)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from svlora.adapters import load_model
    from svlora.audio import load_audio
    from svlora.model import import_automodel, quiet_funasr_logging, stdout_to_stderr
    from svlora.tiny_model import full_size_spec, make_tiny_model

    files, rows = input_files(args)
    if not files:
        raise SystemExit(f"{args.data}: no audio files; pass --data or --manifest")
    audio_seconds = sum(load_audio(f).size for f in files) / 16000
    work = Path(tempfile.mkdtemp(prefix="svlora-eval-bench-"))
    try:
        model_dir = args.model or str(make_tiny_model(
            work / "model", spec=full_size_spec() if args.full_size else None))
        kind = args.model or ("full-size (random init)" if args.full_size else "tiny (random init)")
        print(machine_line(args.device))
        print(f"{len(files)} clips, {audio_seconds:.0f} s of audio, model {kind}, "
              f"{args.repeats} timed runs after 1 warm-up")
        results = {}
        runtime = load_model(model_dir, device=args.device)
        if args.profile:
            profile_svlora(runtime, files, args.max_seconds_per_batch)
        timing, ours = timed(lambda: runtime.transcribe(files, args.max_seconds_per_batch),
                             args.repeats)
        from svlora.decoding import decoding_precision
        precision = decoding_precision(torch.device(args.device))
        results[f"svlora {precision} (duration-sorted batches)"] = (timing, ours)
        if args.int8:
            quantized = load_model(model_dir, device=args.device, int8=True)
            timing, ours_int8 = timed(lambda: quantized.transcribe(files, args.max_seconds_per_batch),
                                      args.repeats)
            results["svlora int8 (dynamic quantisation, opt-in)"] = (timing, ours_int8)

        AutoModel = import_automodel()
        funasr_model, how = funasr_at(AutoModel, model_dir, args, precision, files)
        torch.set_num_threads(args.threads)
        for size in (int(s) for s in args.batch_sizes.split(",")):
            with stdout_to_stderr(), quiet_funasr_logging(), how():
                timing, theirs = timed(lambda: funasr_model.generate(input=files, batch_size=size),
                                       args.repeats)
            results[f"funasr AutoModel.generate {how.label} batch_size={size}"] = (timing, theirs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = [o["raw"] for o in ours]
    print(f"precision: svlora {precision}; FunASR {how.label}")
    for name, (timing, outputs) in results.items():
        raws = [o.get("raw", o.get("text")) for o in outputs]
        extra = f"  identical to svlora fp32 on {sum(a == b for a, b in zip(raws, reference))}/{len(files)}"
        if rows is not None and name.startswith("svlora"):
            extra += quality(outputs, rows)
        print(row(name, timing, audio_seconds, "audio-s", extra))
    funasr_best = min((t["best"], n) for n, (t, _) in results.items() if n.startswith("funasr"))
    funasr_default = results.get("funasr AutoModel.generate batch_size=1")
    for name, (timing, _) in results.items():
        if name.startswith("svlora"):
            line = f"{name}: {funasr_best[0] / timing['best']:.2f}x FunASR's best ({funasr_best[1]})"
            if funasr_default:
                line += f", {funasr_default[0]['best'] / timing['best']:.2f}x its default batch_size=1"
            print(line)


if __name__ == "__main__":
    main()
