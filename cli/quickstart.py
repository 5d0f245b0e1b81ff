"""`svlora quickstart`: the whole path on the embedded tiny model and generated demo data.

An honest A/B needs a base that is good at something else: the tiny model is first trained
(every weight) on the demo "general" domain, then a LoRA adapter learns the "clinic" domain
(other speakers, channel and emotion styles), and both are scored on the clinic test split.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from svlora.io import write_json_atomic


def register(commands) -> None:
    quick = commands.add_parser("quickstart", help="the whole pipeline on a tiny model and demo data")
    quick.add_argument("--out", default="svlora-quickstart")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(handler=run_command)


def run_command(args) -> None:
    run_quickstart(args.out, seed=args.seed)


@contextmanager
def stage(name: str, timings: dict):
    print(f"\n== {name}", flush=True)
    started = time.time()
    yield
    timings[name] = round(time.time() - started, 1)
    print(f"== {name}: {timings[name]}s", flush=True)


def decision_summary(report: dict) -> str:
    """The decision table as plain lines: which path wins, and at what cost; with a label
    schema, the recall of each class SenseVoice lacks and each extra head's UA."""
    first = report["decision"][0]
    new = list(first.get("new_class_recall", {}))
    heads = list(first.get("head_ua", {}))
    terms = "term_recall" in first
    extra = "".join(f"  {tag[2:-2]} recall" for tag in new) + "".join(f"  {h} UA" for h in heads)
    extra += "  term recall  U-error" if terms else ""
    lines = ["arm                emotion UA  emotion acc  error rate  ms/audio-s" + extra]
    for row in report["decision"]:
        cells = [f"{row['new_class_recall'][tag]:{len(tag) + 4}.3f}" for tag in new]
        cells += ["–".rjust(len(h) + 5) if row["head_ua"][h] is None else f"{row['head_ua'][h]:{len(h) + 5}.3f}"
                  for h in heads]
        if terms:
            cells += [f"{row['term_recall']:13.3f}", f"{row['unbiased_error_rate']:9.3f}"]
        lines.append(f"{row['arm']:18s} {row['emotion_ua']:10.3f} {row['emotion_accuracy']:12.3f} "
                     f"{row['error_rate']:11.3f} {row['ms_per_audio_second'] or 0:11.2f}" + "".join(cells))
    return "\n".join(lines)


def timing_line(report) -> str:
    """The word-timestamp error of base and adapter against the generator's true word times."""
    parts = []
    for arm in ("base", "adapter"):
        t = report["timing"][arm]
        parts.append(f"{arm} start/end median {t['start_median_ms']:.0f}/{t['end_median_ms']:.0f} ms, "
                     f"{t['within_100ms']:.0%} within 100 ms ({t['matched_words']} words)"
                     if t["matched_words"] else f"{arm}: no word matched")
    return "word timestamps vs the true times: " + "; ".join(parts)


def run_quickstart(out: str | Path = "svlora-quickstart", seed: int = 0) -> dict:
    """Run every stage under `out` (its previous quickstart outputs are replaced)."""
    from svlora.adapters import export_adapter, load_model
    from svlora.data_prep import PrepareOptions, prepare_corpus, summary
    from svlora.demo_data import generate_demo_corpora
    from svlora.eval import evaluate, verdict
    from svlora.finetune import load_recipe, train_recipe
    from svlora.label_schema import DEFAULT_SCHEMA, load_schema
    from svlora.postprocess import fit_rules_file, train_cascade
    from svlora.manifest import read_manifest
    from svlora.recipes import recipe_path
    from svlora.tiny_model import make_tiny_model, saved_parameter_count

    root = Path(out)
    timings: dict[str, float] = {}
    with stage("make tiny model", timings):
        make_tiny_model(root / "tiny-random", seed=seed)
        parameters = saved_parameter_count(root / "tiny-random")
        print(f"{root / 'tiny-random'}: SenseVoiceSmall layout, {parameters:,} parameters")
    with stage("generate demo data", timings):
        corpora = generate_demo_corpora(root / "demo", seed=seed)
    with stage("prepare", timings):
        for name in ("general", "clinic"):  # the clinic declares its own labels (HESITANT, role)
            labels_yaml = corpora[name].parent / "labels.yaml"
            labels = load_schema(labels_yaml) if labels_yaml.is_file() else DEFAULT_SCHEMA
            report = prepare_corpus(PrepareOptions(  # the generator's true word times: timing error
                input=str(corpora[name]), out=str(root / name), format="csv", split_by="speaker",
                val=0.1, test=0.2, seed=seed, labels=labels,
                word_times=str(corpora[name].parent / "word_times.jsonl")))
            print(f"[{name}] " + summary(report))

    def run_recipe(name: str, model: Path, data: str, run_dir: str):
        recipe = load_recipe(recipe_path(name), [
            f"model={model}", f"out={root / run_dir}", f"data.train={root / data}/train.jsonl",
            f"data.val={root / data}/val.jsonl", f"train.seed={seed}"])
        return train_recipe(recipe, overwrite=True)

    with stage("train base on the general domain (full, tiny_base)", timings):
        run_recipe("tiny_base", root / "tiny-random", "general", "base-run")
        shutil.rmtree(root / "tiny-base", ignore_errors=True)
        shutil.copytree(root / "base-run" / "model", root / "tiny-base")
    with stage("train LoRA adapter on the clinic domain (tiny_demo)", timings):
        result = run_recipe("tiny_demo", root / "tiny-base", "clinic", "clinic-run")
    adapter = root / "clinic-run" / "adapter"
    base, clinic = str(root / "tiny-base"), root / "clinic"
    terms = str(corpora["clinic"].parent / "terms.txt")  # the clinic's drug names
    with stage("the lighter paths: fit rules, train cascades (on base and on the adapter)", timings):
        for name, stage1 in (("base", None), ("adapter", str(adapter))):
            fit_rules_file(base, str(clinic / "val.jsonl"), str(root / f"rules-{name}.yaml"),
                           adapter=stage1, terms=terms)
            train_cascade(base, str(clinic / "train.jsonl"), str(clinic / "val.jsonl"),
                          str(root / f"cascade-{name}"), adapter=stage1)
    with stage("A/B eval on the clinic test split", timings):
        report = evaluate(base, str(clinic / "test.jsonl"), str(root / "report"),
                          adapters=[str(adapter)],
                          rules_arms=[f"{n}+rules={n}:{root / f'rules-{n}.yaml'}" for n in ("base", "adapter")],
                          cascade_arms=[f"{n}+cascade={n}:{root / f'cascade-{n}'}" for n in ("base", "adapter")],
                          hotword_arms=[f"{n}+hotwords={n}:{terms}" for n in ("base", "adapter")],
                          terms=terms)
        print(verdict(report))
        print(decision_summary(report))
        print(timing_line(report))
    with stage("export adapter package and merged model", timings):
        export_adapter(str(root / "tiny-base"), str(adapter), str(root / "export" / "adapter"),
                       overwrite=True)
        export_adapter(str(root / "tiny-base"), str(adapter), str(root / "export" / "merged"),
                       merge=True, overwrite=True)
    with stage("transcribe with the merged model", timings):
        sample = [row.source for row in read_manifest(root / "clinic" / "test.jsonl")[:3]]
        runtime = load_model(str(root / "export" / "merged"))
        for item in runtime.transcribe(sample):
            print(f"{Path(item['path']).name}\t{item['raw']}")

    summary_data = {"tiny_model_parameters": parameters, "lora_trainable_parameters":
                    result.trainable, "stage_seconds": timings,
                    "total_seconds": round(sum(timings.values()), 1),
                    "report": {arm: {k: report[arm][k] for k in ("n", "cer", "emotion_accuracy")}
                               for arm in ("base", "adapter", "delta")},
                    "decision": report["decision"], "timing": report["timing"]}
    write_json_atomic(root / "quickstart.json", summary_data)
    print("\n" + json.dumps(summary_data["report"], indent=2))
    print(f"\nA/B report: {root / 'report' / 'report.html'} (and report.md, report.json, "
          "confusion*.png)")
    return summary_data
