"""Does choosing what to label pay? Emotion UA on a held-out test set after a user labels k
clips of an unlabelled pool, chosen at random or by `svlora select` (svlora.selection:
k-means clusters of the pooled embeddings, smallest emotion margin first in each cluster).

The learner is the cheapest honest one a user with k labels would ship: the cascade's
emotion head (svlora.postprocess, 64 hidden units) on what stage 1 computes per clip — its
pooled encoder output and its emotion distribution (no text branch) — trained on the k clips
alone: no validation labels exist, so its best epoch is chosen on those k clips too. Stage 1
(the embeddings and margins the selection sees, and the head's inputs) is the tiny model
trained on the demo "general" domain exactly as the quickstart trains it (`--model DIR` takes
an existing one, e.g. svlora-quickstart/tiny-base; a random-init model's embeddings are junk).

Corpora: the demo "clinic" domain (prepare's speaker-disjoint split: pool = train + val,
test = test) and, when present, the ESD English speaker 0020 dev set (../shared/data), split
by sentence so no text is in both pool and test.

    nice -n 10 python benchmarks/selection_bench.py [--model DIR] [--work DIR]
        [--ks 25,50,100,200] [--seeds 3] [--esd DIR] [--lora]

Prints mean ± sd over seeds per k and method, writes docs/selection_bench.json and
docs/selection_bench.png. `--lora` also trains a LoRA adapter (recipe tiny_demo) on each
clinic subset: about 45 s per run on 2 cores, 24 runs at the defaults (off by default).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ESD_DEFAULT = REPO.parent / "shared" / "data" / "esd_en_0020_dev"
ESD_TAGS = {"Neutral": "NEUTRAL", "Angry": "ANGRY", "Happy": "HAPPY", "Sad": "SAD", "Surprise": "SURPRISED"}
ESD_TEST_SENTENCES = 30  # of 120: 150 test clips, a pool of 450
METHODS = ("random", "selection")


@dataclass
class Corpus:
    """A pool to choose from and a test set, as stage 1 sees them."""

    name: str
    pool_paths: list[str]
    pool_x: np.ndarray          # head inputs: pooled output + stage-1 emotion distribution
    pool_y: np.ndarray          # class index per clip (the labels a labeller would give)
    embeddings: np.ndarray      # what the selection clusters
    margins: np.ndarray         # stage-1 emotion margin per pool clip
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    note: str


def trained_tiny_model(work: Path) -> Path:
    """The quickstart's base: make-tiny-model, prepare "general", recipe tiny_base (every
    weight, 900 steps). Reused when `work` already holds it."""
    model = work / "tiny-base"
    if (model / "model.pt").is_file():
        return model
    from svlora.data_prep import PrepareOptions, prepare_corpus
    from svlora.demo_data import generate_demo_corpora
    from svlora.finetune import load_recipe, train_recipe
    from svlora.recipes import recipe_path
    from svlora.tiny_model import make_tiny_model

    make_tiny_model(work / "tiny-random", seed=0)
    corpora = generate_demo_corpora(work / "demo", seed=0)
    prepare_corpus(PrepareOptions(input=str(corpora["general"]), out=str(work / "general"),
                                  format="csv", split_by="speaker", val=0.1, test=0.2))
    recipe = load_recipe(recipe_path("tiny_base"), [
        f"model={work / 'tiny-random'}", f"out={work / 'base-run'}",
        f"data.train={work / 'general/train.jsonl'}", f"data.val={work / 'general/val.jsonl'}",
        "train.seed=0", "train.device=cpu"])
    train_recipe(recipe, overwrite=True, log=lambda message: None)
    shutil.copytree(work / "base-run" / "model", model)
    return model


def stage1_view(base, paths: list[str]):
    """Head inputs, embeddings and margins of `paths` (every one must be readable)."""
    from svlora.postprocess.cascade import TextEncoder, clip_features
    from svlora.selection import emotion_margin, score_clips

    scores = score_clips(base, paths, progress=False)
    if scores.errors:
        raise SystemExit(f"{scores.errors[0].path}: {scores.errors[0].reason}")
    stage1 = [{"pooled": e.tolist(), "emotion_probs": p, "text": ""}
              for e, p in zip(scores.embeddings, scores.emotion_probs)]
    x = clip_features(stage1, TextEncoder("none"), base.labels.emotion)
    return x, scores.embeddings, np.array([emotion_margin(p) for p in scores.emotion_probs])


def make_corpus(base, name: str, pool: list[tuple[str, str]], test: list[tuple[str, str]],
                note: str) -> Corpus:
    classes = sorted({label for _, label in pool + test})
    index = {label: i for i, label in enumerate(classes)}
    pool_x, embeddings, margins = stage1_view(base, [path for path, _ in pool])
    test_x, _, _ = stage1_view(base, [path for path, _ in test])
    return Corpus(name, [path for path, _ in pool], pool_x,
                  np.array([index[label] for _, label in pool]), embeddings, margins, test_x,
                  np.array([index[label] for _, label in test]), classes, note)


def clinic_clips(work: Path) -> tuple[list, list, Path]:
    """(pool, test) of (path, emotion tag): the clinic's speaker-disjoint prepare split."""
    from svlora.data_prep import PrepareOptions, prepare_corpus
    from svlora.demo_data import generate_demo_corpora
    from svlora.label_schema import load_schema
    from svlora.manifest import read_manifest

    corpora = generate_demo_corpora(work / "demo", seed=0)
    out = work / "clinic"
    if not (out / "test.jsonl").is_file():
        prepare_corpus(PrepareOptions(input=str(corpora["clinic"]), out=str(out), format="csv",
                                      split_by="speaker", val=0.1, test=0.2,
                                      labels=load_schema(corpora["clinic"].parent / "labels.yaml")))
    rows = {split: read_manifest(out / f"{split}.jsonl") for split in ("train", "val", "test")}
    pool = [(r.source, r.emo_target) for r in rows["train"] + rows["val"]]
    return pool, [(r.source, r.emo_target) for r in rows["test"]], out


def esd_clips(folder: Path, seed: int = 0) -> tuple[list, list]:
    """(pool, test) of (path, emotion tag), split by sentence (each is spoken in all five
    emotions, so a clip split would put the same text in both)."""
    by_text: dict[str, list[tuple[str, str]]] = {}
    for line in (folder / "0020.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            utterance, text, emotion = line.split("\t")
            path = folder / emotion / f"{utterance}.flac"
            by_text.setdefault(text.strip().lower(), []).append((str(path), ESD_TAGS[emotion]))
    sentences = sorted(by_text)
    np.random.default_rng(seed).shuffle(sentences)
    test = set(sentences[:ESD_TEST_SENTENCES])
    pool = [clip for s in sorted(by_text) if s not in test for clip in by_text[s]]
    return pool, [clip for s in sorted(test) for clip in by_text[s]]


def head_ua(corpus: Corpus, chosen: np.ndarray, seed: int) -> float:
    """Test UA of the cascade's emotion head trained on the chosen pool clips alone."""
    from svlora.metrics import unweighted_average_recall
    from svlora.postprocess.cascade import train_head

    x, y = corpus.pool_x[chosen], corpus.pool_y[chosen]
    head, _ = train_head(x, y, x, y, len(corpus.classes), hidden=64, seed=seed)
    with torch.no_grad():
        predicted = head(torch.from_numpy(corpus.test_x)).argmax(1).numpy()
    return unweighted_average_recall(corpus.test_y, predicted)


def chosen_clips(corpus: Corpus, method: str, k: int, seed: int) -> np.ndarray:
    from svlora.selection import select_clips

    if method == "random":
        return np.random.default_rng(seed).choice(len(corpus.pool_y), size=k, replace=False)
    return np.array(select_clips(corpus.embeddings, corpus.margins, k, seed=seed).order)


def lora_ua(corpus: Corpus, chosen: np.ndarray, seed: int, base_dir: Path, clinic: Path,
            run: Path) -> float:
    """Test UA of a LoRA adapter (recipe tiny_demo) trained on the chosen clinic clips (and
    its best step chosen on them: no other labels exist)."""
    from svlora.adapters import load_model
    from svlora.finetune import load_recipe, train_recipe
    from svlora.manifest import read_manifest, write_manifest
    from svlora.metrics import unweighted_average_recall
    from svlora.recipes import recipe_path

    rows = {r.source: r for r in read_manifest(clinic / "train.jsonl") + read_manifest(clinic / "val.jsonl")}
    run.mkdir(parents=True, exist_ok=True)
    write_manifest(run / "subset.jsonl", [rows[corpus.pool_paths[i]] for i in chosen])
    shutil.copy(clinic / "labels.json", run / "labels.json")
    recipe = load_recipe(recipe_path("tiny_demo"), [
        f"model={base_dir}", f"out={run / 'train'}", f"data.train={run / 'subset.jsonl'}",
        f"data.val={run / 'subset.jsonl'}", f"train.seed={seed}", "train.device=cpu"])
    train_recipe(recipe, overwrite=True, log=lambda message: None)
    test = read_manifest(clinic / "test.jsonl")
    runtime = load_model(str(base_dir), adapter=str(run / "train" / "adapter"))
    results = runtime.transcribe([r.source for r in test])
    return unweighted_average_recall([r.emo_target for r in test], [r["emotion"] for r in results])


def summary(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def table_lines(results: dict) -> list[str]:
    lines = ["| corpus | k | random UA | selection UA | Δ (selection − random) |", "|---|---|---|---|---|"]
    for name, corpus in results["corpora"].items():
        for learner, by_k in corpus["learners"].items():
            label = name if learner == "head" else f"{name} (LoRA)"
            for k, methods in by_k.items():
                r, s = methods["random"], methods["selection"]
                lines.append(f"| {label} | {k} | {r['mean']:.3f} ± {r['sd']:.3f} | "
                             f"{s['mean']:.3f} ± {s['sd']:.3f} | {s['mean'] - r['mean']:+.3f} |")
        full = corpus["all_pool_ua"]
        lines.append(f"| {name} | all {corpus['pool']} | {full:.3f} | – | – |")
    return lines


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(results["corpora"])
    figure = Figure(figsize=(5.2 * len(names), 3.8))
    FigureCanvasAgg(figure)
    for position, name in enumerate(names, start=1):
        corpus = results["corpora"][name]
        axes = figure.add_subplot(1, len(names), position)
        for method, colour in zip(METHODS, ("tab:grey", "tab:blue")):
            by_k = corpus["learners"]["head"]
            ks = [int(k) for k in by_k]
            axes.errorbar(ks, [by_k[k][method]["mean"] for k in by_k],
                          yerr=[by_k[k][method]["sd"] for k in by_k], marker="o", capsize=3,
                          color=colour, label=method)
        axes.axhline(corpus["all_pool_ua"], linestyle="--", color="tab:green",
                     label=f"all {corpus['pool']} labelled")
        axes.set(title=f"{name} (test {corpus['test']} clips)", xlabel="labelled clips k",
                 ylabel="emotion UA (mean ± sd)", xscale="log")
        axes.set_xticks(ks, [str(k) for k in ks])
        axes.set_xticks([], minor=True)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def run_corpus(corpus: Corpus, ks: list[int], seeds: int, lora: dict | None,
               lora_root: Path | None = None) -> dict:
    learners = {"head": {}}
    if lora:
        learners["lora"] = {}
    for k in [k for k in ks if k <= len(corpus.pool_y)]:
        for learner in learners:
            learners[learner][str(k)] = {}
            for method in METHODS:
                values = []
                for seed in range(seeds):
                    chosen = chosen_clips(corpus, method, k, seed)
                    values.append(head_ua(corpus, chosen, seed) if learner == "head" else
                                  lora_ua(corpus, chosen, seed, **lora,
                                          run=lora_root / f"{method}-k{k}-seed{seed}"))
                learners[learner][str(k)][method] = summary(values)
    everything = np.arange(len(corpus.pool_y))
    return {"pool": len(corpus.pool_y), "test": len(corpus.test_y), "classes": corpus.classes,
            "note": corpus.note, "learners": learners,
            "all_pool_ua": statistics.mean(head_ua(corpus, everything, s) for s in range(seeds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained tiny model dir (default: train one as the quickstart does)")
    parser.add_argument("--work", help="folder for the demo data and the trained model (default: a temp dir)")
    parser.add_argument("--ks", default="25,50,100,200")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--esd", default=str(ESD_DEFAULT), help="ESD 0020 dev folder (skipped if absent)")
    parser.add_argument("--lora", action="store_true", help="also LoRA (tiny_demo) on the clinic subsets")
    parser.add_argument("--json", default=str(REPO / "docs" / "selection_bench.json"))
    parser.add_argument("--png", default=str(REPO / "docs" / "selection_bench.png"))
    args = parser.parse_args()
    started = time.time()
    work = Path(args.work or tempfile.mkdtemp(prefix="selection-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work, started)
    finally:
        if not args.work:  # a temp dir of demo audio and a model: not worth keeping
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, started: float) -> None:
    from svlora.adapters import load_model

    model = Path(args.model) if args.model else trained_tiny_model(work)
    model_note = (f"{args.model}" if args.model else
                  "tiny model trained on the demo general domain (recipe tiny_base, seed 0)")
    print(machine_line("cpu"))
    print(f"stage 1: {model_note} ({time.time() - started:.0f} s)", flush=True)
    base = load_model(str(model)).base
    ks = [int(k) for k in args.ks.split(",")]
    pool, test, clinic = clinic_clips(work)
    corpora = [make_corpus(base, "clinic", pool, test, "demo clinic: speaker-disjoint prepare split")]
    esd = Path(args.esd)
    if (esd / "0020.txt").is_file():
        pool, test = esd_clips(esd)
        corpora.append(make_corpus(base, "esd", pool, test,
                                   f"ESD 0020 dev, split by sentence ({ESD_TEST_SENTENCES} test sentences)"))
    else:
        print(f"{esd}: absent, ESD skipped")
    print(f"stage-1 features of every clip ({time.time() - started:.0f} s)", flush=True)
    results = {"model": model_note, "ks": ks, "seeds": args.seeds, "machine": machine_line("cpu"),
               "learner": "cascade emotion head (hidden 64) on pooled output + stage-1 emotion "
                          "distribution, best epoch on the k labelled clips",
               "selection": "svlora.selection.select_clips, default clusters (min(k, 50)), seed = run seed",
               "corpora": {}}
    for corpus in corpora:
        lora = ({"base_dir": model, "clinic": clinic} if args.lora and corpus.name == "clinic"
                else None)
        results["corpora"][corpus.name] = run_corpus(corpus, ks, args.seeds, lora, work / "lora")
    results["seconds"] = round(time.time() - started, 1)
    for line in table_lines(results):
        print(line)
    print(f"{results['seconds']} s in all")
    from svlora.io import write_json_atomic

    write_json_atomic(args.json, results)
    plot(results, Path(args.png))
    print(f"wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
