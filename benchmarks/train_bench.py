"""Training throughput and memory of the full-size SenseVoiceSmall architecture (random
init): svlora's LoRA step (recipe defaults: bf16 on a bf16 GPU, gradient checkpointing) against
FunASR's own step (SenseVoiceSmall.forward with every weight trainable and AdamW, as its
finetune.sh trains), on the same synthetic 3–15 s batches.

    python benchmarks/train_bench.py [--device cuda] [--steps 10] [--seconds-per-batch 60]

Prints audio-seconds trained per second, step time and peak memory for both, and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time

import torch


def synthetic_batches(count: int, max_seconds: float, seed: int = 0) -> list[dict]:
    """Batches of 3–15 s clips packed to `max_seconds` of padded audio, ~4 tokens per second."""
    from svlora.features import FRAME_SECONDS

    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        seconds = []
        while True:
            candidate = rng.uniform(3, 15)
            if max(seconds + [candidate]) * (len(seconds) + 1) > max_seconds and seconds:
                break
            seconds.append(candidate)
        frames = [int(s / FRAME_SECONDS) for s in seconds]
        tokens = [4 + int(4 * s) for s in seconds]
        speech = torch.randn(len(seconds), max(frames), 560, generator=generator)
        text = torch.full((len(seconds), max(tokens)), -1, dtype=torch.long)
        for i, n in enumerate(tokens):
            text[i, :4] = torch.tensor([24885, 25004, 24993, 25017])
            text[i, 4:n] = torch.randint(3, 20000, (n - 4,), generator=generator)
        batches.append({"speech": speech, "speech_lengths": torch.tensor(frames, dtype=torch.int32),
                        "text": text, "text_lengths": torch.tensor(tokens, dtype=torch.int32),
                        "audio_seconds": sum(seconds)})
    return batches


def run_arm(name: str, step, batches: list[dict], device: torch.device, warmup: int) -> dict:
    from svlora.finetune.memory import PeakMemory

    for batch in batches[:warmup]:
        step(batch)
    times, audio = [], 0.0
    with PeakMemory(device) as peak:
        for batch in batches[warmup:]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
            audio += batch["audio_seconds"]
    return {"arm": name, "audio_s_per_s": audio / sum(times), "step_s": statistics.median(times),
            "peak_gib": peak.gib, "memory": peak.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seconds-per-batch", type=float, default=60.0)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--lora-r", type=int, default=8)
    args = parser.parse_args()

    from svlora.finetune.lora import attach_lora
    from svlora.finetune.memory import autocast, enable_gradient_checkpointing, resolve_precision
    from svlora.finetune.objective import SenseVoiceObjective
    from svlora.finetune.recipe import LoraSettings
    from svlora.tiny_model import build_model, full_size_config, parameter_count

    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    batches = synthetic_batches(args.warmup + args.steps, args.seconds_per_batch)
    moved = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    template = build_model(full_size_config(), seed=0)
    print(f"full-size SenseVoiceSmall architecture: {parameter_count(template) / 1e6:.1f}M parameters; "
          f"device {device}, {args.seconds_per_batch:.0f} s padded audio per batch, "
          f"{statistics.mean(len(b['speech_lengths']) for b in batches):.1f} clips per batch")

    # svlora: LoRA on attention + ffn, base frozen, checkpointing, recipe precision
    sensevoice = copy.deepcopy(template).to(device)
    peft_model = attach_lora(sensevoice, LoraSettings(r=args.lora_r, alpha=2 * args.lora_r))
    if not args.no_checkpointing:
        enable_gradient_checkpointing(sensevoice)
    objective = SenseVoiceObjective(peft_model, sensevoice, 1.0, 1.0).train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)

    def svlora_step(batch: dict) -> None:
        with autocast(device, precision):
            loss, _ = objective(batch["speech"], batch["speech_lengths"], batch["text"],
                                batch["text_lengths"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in objective.parameters() if p.requires_grad], 5.0)
        optimizer.step()

    ours = run_arm(f"svlora LoRA r{args.lora_r} ({precision}"
                   f"{', checkpointing' if not args.no_checkpointing else ''})", svlora_step,
                   moved, device, args.warmup)
    del objective, optimizer, peft_model, sensevoice
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # FunASR: its own forward, every weight trainable, fp32, AdamW (finetune.sh defaults)
    funasr_model = copy.deepcopy(template).to(device).train()
    funasr_optimizer = torch.optim.AdamW(funasr_model.parameters(), lr=1e-4)

    def funasr_step(batch: dict) -> None:
        loss, _, _ = funasr_model(batch["speech"], batch["speech_lengths"], batch["text"],
                                  batch["text_lengths"])
        funasr_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(funasr_model.parameters(), 5.0)
        funasr_optimizer.step()

    theirs = run_arm("FunASR SenseVoiceSmall.forward, all weights (fp32)", funasr_step, moved,
                     device, args.warmup)
    for arm in (ours, theirs):
        print(f"{arm['arm']:55s} {arm['audio_s_per_s']:9.1f} audio-s/s  step {arm['step_s']:.3f} s  "
              f"peak {arm['memory']} {arm['peak_gib']:.2f} GiB")
    print(f"svlora / FunASR throughput: {ours['audio_s_per_s'] / theirs['audio_s_per_s']:.2f}x")


if __name__ == "__main__":
    main()
