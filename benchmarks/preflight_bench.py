"""Peak training memory on the full-size SenseVoiceSmall architecture (random init): what
`svlora train sensevoice_small_lora --preflight` reports for the largest batch at each
--seconds-per-batch, with the recipe's `gradient_checkpointing: auto` deciding (on only when
the step without it would pass train.max_memory_gb). The issue's target: ≤ 4 GiB at 60 s.

    python benchmarks/preflight_bench.py [--device cuda] [--seconds-per-batch 60 240]

Peak is the CUDA allocator's on a GPU, the process RSS on a CPU (weights and Python included).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, record  # noqa: E402
from train_bench import write_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds-per-batch", type=float, nargs="+", default=[60.0, 240.0])
    parser.add_argument("--clips", type=int, default=24, help="synthetic 3–15 s clips")
    parser.add_argument("--model", help="a full-size model dir (default: written here)")
    args = parser.parse_args()

    from svlora.finetune import load_recipe
    from svlora.finetune.train import preflight
    from svlora.recipes import recipe_path
    from svlora.tiny_model import full_size_spec, make_tiny_model

    work = Path(tempfile.mkdtemp(prefix="svlora-preflight-bench-"))
    try:
        model_dir = Path(args.model) if args.model else make_tiny_model(work / "model", spec=full_size_spec())
        manifest = write_clips(work, args.clips)
        print(machine_line(args.device))
        for seconds in args.seconds_per_batch:
            recipe = load_recipe(recipe_path("sensevoice_small_lora"), [
                f"model={model_dir}", f"data.train={manifest}", f"data.val={manifest}",
                f"data.max_seconds_per_batch={seconds}", f"train.device={args.device}",
                f"out={work / 'run'}"])
            result = preflight(recipe, log=lambda line: None)
            name = f"LoRA preflight, {seconds:.0f} s batches"
            record(name, "peak GiB", result["peak_gib"], memory=result["memory"],
                   checkpointing=result["gradient_checkpointing"], precision=result["precision"],
                   base_dtype=str(result["base_dtype"]), step_s=result["step_seconds"])
            print(f"{name:40s} peak {result['memory']} {result['peak_gib']:.2f} GiB, "
                  f"{result['batch_clips']} clips ({result['batch_audio_seconds']} s padded), "
                  f"checkpointing {result['gradient_checkpointing']}, {result['precision']}, "
                  f"frozen weights {result['base_dtype']}, one step {result['step_seconds']:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
