"""What one LoRA training step asks of the machine, counted on a CPU with torch.profiler (the
evidence for issue 23 that needs no GPU): operator calls, tensor copies (autocast re-casting
weights shows up as aten::_to_copy / aten::copy_) and host reads of device values
(aten::_local_scalar_dense: each one a device→host sync on a GPU) of one step's forward,
backward and gradient clipping (the optimizer step is timed, not counted), for

1. "FunASR forward": SenseVoiceSmall.forward's loss (what svlora trained with before),
   fp32 frozen weights under bf16 autocast;
2. "svlora objective, fp32 frozen weights": the sync-free objective, same weights;
3. "svlora objective, bf16 frozen weights": train.base_dtype=bf16 (the default on a bf16 GPU).

Same model (full-size architecture, random init, LoRA r8 on attention+ffn), the same batch,
bf16 autocast; one warm-up step, then the counts of the
next step and the best/median wall time of --repeats steps (CPU bf16 time is not GPU time).

    python benchmarks/step_profile.py [--clips 4] [--seconds 6] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

COPIES = ("aten::copy_", "aten::_to_copy")
HOST_READS = ("aten::_local_scalar_dense",)


def batch_of(base, clips: int, seconds: float) -> dict:
    from svlora.finetune.memory import worst_case_batch
    from svlora.manifest import ManifestRow

    row = ManifestRow(key="k", source="unused", source_len=int(seconds * 100), target="x" * 40,
                      target_len=int(2.5 * seconds), text_language="<|en|>", emo_target="<|HAPPY|>",
                      event_target="<|Speech|>", with_or_wo_itn="<|woitn|>")
    return worst_case_batch([row], clips * seconds * 1.01, torch.device("cpu"))


def arm(model_dir: Path, batch: dict, name: str, base_dtype: str, funasr_loss: bool, repeats: int) -> dict:
    from svlora.finetune.memory import autocast
    from svlora.finetune.recipe import Recipe
    from svlora.finetune.train import build_objective
    from svlora.model import load_base_model

    device = torch.device("cpu")
    base = load_base_model(str(model_dir))
    recipe = Recipe(model=str(model_dir))
    recipe.train.precision, recipe.train.base_dtype = "bf16", base_dtype
    recipe.train.gradient_checkpointing = False
    objective, _, _ = build_objective(base, recipe, device, "bf16")
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    objective.train()
    inputs = [batch[k] for k in ("speech", "speech_lengths", "text", "text_lengths")]

    def loss_and_gradients() -> None:
        with autocast(device, "bf16"):
            if funasr_loss:
                loss = base.model(inputs[0], inputs[1].clone(), inputs[2], inputs[3])[0]
            else:
                loss = objective(*inputs)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 5.0)

    def step() -> None:
        loss_and_gradients()
        optimizer.step()  # on a CPU AdamW reads its step counters (svlora trains fused on a GPU)

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        loss_and_gradients()
    counts = Counter({e.key: e.count for e in profiler.key_averages()})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"arm": name, "ops": sum(c for k, c in counts.items() if k.startswith("aten::")),
            "copies": sum(counts[k] for k in COPIES), "host_reads": sum(counts[k] for k in HOST_READS),
            "best_s": min(times), "median_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the tiny architecture (a quick look)")
    args = parser.parse_args()
    from svlora.model import load_base_model
    from svlora.tiny_model import full_size_spec, make_tiny_model

    with tempfile.TemporaryDirectory(prefix="svlora-step-profile-") as work:
        model_dir = make_tiny_model(Path(work) / "model", **({} if args.tiny else {"spec": full_size_spec()}))
        batch = batch_of(load_base_model(str(model_dir)), args.clips, args.seconds)
        print(machine_line("cpu"))
        print(f"{'tiny' if args.tiny else 'full-size'} architecture, {batch['clips']} clips x "
              f"{args.seconds:g} s, LoRA r8, bf16 autocast, AdamW + clipping; counts of one step")
        results = [arm(model_dir, batch, "FunASR forward, fp32 frozen weights", "fp32", True, args.repeats),
                   arm(model_dir, batch, "svlora objective, fp32 frozen weights", "fp32", False, args.repeats),
                   arm(model_dir, batch, "svlora objective, bf16 frozen weights", "bf16", False, args.repeats)]
    print(f"{'arm':42s} {'aten ops':>9s} {'copies':>7s} {'host reads':>10s} {'best s':>7s} {'median s':>8s}")
    for r in results:
        print(f"{r['arm']:42s} {r['ops']:9d} {r['copies']:7d} {r['host_reads']:10d} "
              f"{r['best_s']:7.2f} {r['median_s']:8.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
