"""Training throughput and peak memory on the full-size SenseVoiceSmall architecture (random
init), three ways a user could train, on the same synthetic clips (3–15 s of noise with random
transcripts), the same padded seconds per batch, the same precision and no augmentation:

1. "FunASR trainer": FunASR's own entry point `funasr/bin/train_ds.py` as SenseVoice's
   finetune.sh runs it (full fine-tuning, its SenseVoiceCTCDataset dataloader, batch_type
   token = padded 10 ms frames per batch). Its per-step `total_time` log lines are read.
2. "plain PEFT-LoRA loop": what a user would hand-write: FunASR's model, PEFT LoRA on the same
   layers, FunASR's own dataset and collator in a torch DataLoader, AdamW, fp32/bf16 autocast.
3. "svlora": the recipe's objective on features computed once, with and without gradient
   checkpointing.

    python benchmarks/train_bench.py [--device cuda] [--clips 40] [--seconds-per-batch 60]
        [--repeats 3] [--skip-funasr-trainer]

Each in-process arm runs one warm-up step, then every batch of one pass (at least --repeats);
best and median seconds per step and audio-seconds per second are printed with peak memory
(CUDA allocator peak on a GPU, process RSS on a CPU; the trainer's RSS is its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, record  # noqa: E402

WORDS = "the a patient said that we will go see it now later today maybe not".split()


def write_clips(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` noise clips of 3–15 s and a SenseVoice manifest of them."""
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        seconds = rng.uniform(3, 15)
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, (0.1 * generator.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        text = " ".join(rng.choice(WORDS) for _ in range(int(2.5 * seconds)))
        rows.append({"key": f"clip{i:03d}", "source": str(path), "source_len": int(seconds * 100),
                     "target": text, "target_len": len(text), "text_language": "<|en|>",
                     "emo_target": "<|NEUTRAL|>", "event_target": "<|Speech|>",
                     "with_or_wo_itn": "<|woitn|>"})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def summarise(name: str, step_seconds: list[float], audio_seconds: list[float], peak: str) -> dict:
    return {"arm": name, "best_step": min(step_seconds), "median_step": statistics.median(step_seconds),
            "audio_s_per_s": sum(audio_seconds) / sum(step_seconds), "steps": len(step_seconds),
            "peak": peak}


def run_steps(step, batches: list, device: torch.device, repeats: int) -> tuple[list, list, str]:
    """One warm-up step, then the batches (cycled to at least `repeats`), timed one by one."""
    from svlora.finetune.memory import PeakMemory

    step(batches[0])
    timed = [batches[i % len(batches)] for i in range(max(repeats, len(batches)))]
    seconds, audio = [], []
    with PeakMemory(device) as peak:
        for batch in timed:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - started)
            audio.append(batch["audio_seconds"])
    return seconds, audio, f"{peak.kind} {peak.gib:.2f} GiB"


def index_batches(frames: list[int], max_seconds: float, seed: int = 0) -> list[list[int]]:
    """Shuffled, length-bucketed batches under `max_seconds` padded: one plan for every arm."""
    from svlora.features import FRAME_SECONDS, pack_by_padded_seconds

    order = sorted(range(len(frames)), key=lambda i: frames[i])
    batches = [[order[p] for p in batch] for batch in
               pack_by_padded_seconds([frames[i] // 6 for i in order], max_seconds)]
    random.Random(seed).shuffle(batches)
    assert FRAME_SECONDS == 0.06
    return batches


def peft_loop_arm(model_dir: Path, manifest: Path, plan, device, precision, lora_r, repeats):
    """The loop a user would write on FunASR's model and FunASR's dataloader."""
    from peft import LoraConfig, get_peft_model

    from svlora.finetune.memory import autocast
    from svlora.model import import_automodel, quiet_funasr_logging, stdout_to_stderr

    AutoModel = import_automodel()
    from funasr.datasets.sense_voice_datasets.datasets import SenseVoiceCTCDataset

    with stdout_to_stderr(), quiet_funasr_logging():
        auto = AutoModel(model=str(model_dir), device=str(device), disable_update=True,
                         frontend_conf={"dither": 0.0})
    model = auto.model
    model.specaug = None  # no augmentation in any arm
    config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                        target_modules=r"encoder\..*\.(linear_q_k_v|linear_out|w_1|w_2)")
    peft_model = get_peft_model(model, config)
    dataset = SenseVoiceCTCDataset(path=str(manifest), index_ds="IndexDSJsonl",
                                   frontend=auto.kwargs["frontend"], tokenizer=auto.kwargs["tokenizer"],
                                   batch_size=10**9)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=plan, collate_fn=dataset.collator,
                                         num_workers=2)
    seconds_of = [json.loads(line)["source_len"] / 100 for line in manifest.read_text().splitlines()]
    batches = []
    for indices, batch in zip(plan, loader):
        batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        batches.append({**batch, "audio_seconds": sum(seconds_of[i] for i in indices)})
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    peft_model.train()

    def step(batch):
        with autocast(device, precision):
            loss, _, _ = peft_model(batch["speech"], batch["speech_lengths"], batch["text"],
                                    batch["text_lengths"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    result = run_steps(step, batches, device, repeats)
    print(f"  (FunASR dataloader produced the {len(batches)} batches in "
          f"{time.perf_counter() - started - sum(result[0]):.1f} s outside the timed steps)",
          file=sys.stderr)
    return result


def svlora_arm(model_dir: Path, manifest: Path, plan, device, precision, lora_r, checkpointing,
               repeats):
    from svlora.finetune.data import build_examples, collate
    from svlora.finetune.memory import autocast
    from svlora.finetune.recipe import Recipe
    from svlora.finetune.train import build_objective
    from svlora.manifest import read_manifest
    from svlora.model import load_base_model

    base = load_base_model(str(model_dir), device=str(device))
    recipe = Recipe(model=str(model_dir))
    recipe.lora.r, recipe.lora.alpha = lora_r, 2 * lora_r
    recipe.train.gradient_checkpointing = checkpointing
    recipe.train.precision = precision  # base_dtype auto: frozen weights in bf16 on a bf16 GPU
    objective, _, _ = build_objective(base, recipe, device, precision)
    examples = build_examples(base, read_manifest(manifest), "features")
    batches = [{**collate([examples[i] for i in indices], device),
                "audio_seconds": sum(examples[i].row.audio_seconds for i in indices)}
               for indices in plan]
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=device.type == "cuda")  # as svlora train
    objective.train()

    def step(batch):
        with autocast(device, precision):
            loss, _ = objective(batch["speech"], batch["speech_lengths"], batch["text"],
                                batch["text_lengths"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 5.0)
        optimizer.step()

    return run_steps(step, batches, device, repeats)


def funasr_trainer_arm(model_dir: Path, manifest: Path, work: Path, device, precision,
                       seconds_per_batch: float, threads: int) -> dict | str:
    """FunASR's train_ds.py for one epoch; its own per-step log lines give the step times."""
    import funasr

    script = Path(funasr.__file__).parent / "bin" / "train_ds.py"
    output = work / "funasr-trainer"
    command = [sys.executable, str(script), f"++model={model_dir}",
               f"++train_data_set_list={manifest}", f"++valid_data_set_list={manifest}",
               "++dataset=SenseVoiceCTCDataset", "++dataset_conf.index_ds=IndexDSJsonl",
               "++dataset_conf.batch_sampler=BatchSampler", "++dataset_conf.batch_type=token",
               f"++dataset_conf.batch_size={int(seconds_per_batch * 100)}",
               "++dataset_conf.sort_size=1024", "++dataset_conf.num_workers=2",
               "++train_conf.max_epoch=1", "++train_conf.log_interval=1",
               "++train_conf.validate_interval=100000", "++train_conf.save_checkpoint_interval=100000",
               "++train_conf.use_deepspeed=false", f"++train_conf.use_bf16={precision == 'bf16'}",
               "++optim_conf.lr=0.0002", f"++output_dir={output}", f"++device={device.type}",
               "++specaug=null", f"++ncpu={threads}", "++disable_update=true"]
    env = {**os.environ, "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)
    log = completed.stdout + completed.stderr
    steps = [float(value) for value in re.findall(r"total_time[\"']?:\s*[\"']?([0-9.]+)", log)]
    if completed.returncode != 0 or not steps:
        last = [line for line in log.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return f"did not run on {device.type} (exit {completed.returncode}): {last[0][:200]}"
    audio = sum(json.loads(line)["source_len"] / 100 for line in manifest.read_text().splitlines())
    return {"arm": f"FunASR trainer (train_ds.py, full fine-tuning, {precision})",
            "best_step": min(steps[1:] or steps), "median_step": statistics.median(steps[1:] or steps),
            "audio_s_per_s": audio / sum(steps), "steps": len(steps),
            "peak": f"process RSS {peak_gib:.2f} GiB (its own process)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=24, help="synthetic 3–15 s clips")
    parser.add_argument("--seconds-per-batch", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps at least")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--skip-funasr-trainer", action="store_true")
    parser.add_argument("--model", help="a full-size model dir (default: written here)")
    args = parser.parse_args()

    from svlora.finetune.memory import resolve_precision
    from svlora.tiny_model import full_size_spec, make_tiny_model

    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    work = Path(tempfile.mkdtemp(prefix="svlora-train-bench-"))
    results = []
    try:
        model_dir = Path(args.model) if args.model else make_tiny_model(work / "model",
                                                                          spec=full_size_spec())
        manifest = write_clips(work, args.clips)
        frames = [json.loads(line)["source_len"] for line in manifest.read_text().splitlines()]
        plan = index_batches(frames, args.seconds_per_batch)
        print(machine_line(args.device))
        print(f"full-size architecture (random init), {args.clips} clips "
              f"({sum(frames) / 100:.0f} s), {len(plan)} batches of ≤ {args.seconds_per_batch:.0f} s "
              f"padded, {statistics.mean(len(b) for b in plan):.1f} clips per batch, {precision}, "
              "no augmentation")
        for checkpointing in (True, False):
            name = f"svlora LoRA r{args.lora_r} ({'with' if checkpointing else 'no'} checkpointing)"
            results.append(summarise(name, *svlora_arm(model_dir, manifest, plan, device, precision,
                                                       args.lora_r, checkpointing, args.repeats)))
        results.append(summarise(f"plain PEFT-LoRA loop, FunASR dataloader (r{args.lora_r})",
                                 *peft_loop_arm(model_dir, manifest, plan, device, precision,
                                                args.lora_r, args.repeats)))
        if not args.skip_funasr_trainer:
            results.append(funasr_trainer_arm(model_dir, manifest, work, device, precision,
                                              args.seconds_per_batch, torch.get_num_threads()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for result in results:
        if isinstance(result, str):
            print(f"{'FunASR trainer (train_ds.py)':60s} {result}")
            continue
        record(result["arm"], "audio-s/s", result["audio_s_per_s"], peak=str(result["peak"]),
               step_best_s=result["best_step"], step_median_s=result["median_step"])
        print(f"{result['arm']:60s} step best {result['best_step']:7.2f} s median "
              f"{result['median_step']:7.2f} s  {result['audio_s_per_s']:8.1f} audio-s/s  "
              f"peak {result['peak']}  ({result['steps']} steps)")


if __name__ == "__main__":
    main()
