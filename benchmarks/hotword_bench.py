"""Hotword decoding cost: greedy CTC against the prefix beam search without terms and with a
context graph of 10, 1,000 and 10,000 terms, end to end from features (encoder, CTC head,
search, tokenizer) on the same clips, weights, threads and precision; and the graph's build time.

    python benchmarks/hotword_bench.py [--model DIR | (default) the full-size architecture]
        [--clips 16] [--beam 8] [--repeats 3] [--threads N]

Each side is warmed up once and timed `--repeats` times (best and median printed). The clips
are the demo's tone-language speech. A randomly initialised full-size model has flat
posteriors, the beam search's worst case (no blank-dominated frame to skip); a trained model
(e.g. the quickstart's tiny-base, `--model`) shows the usual peaky case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, row, timed  # noqa: E402

LETTERS = "adehiklmnoprstuy"


def random_terms(count: int, seed: int = 0) -> str:
    """`count` distinct drug-like words of 6-12 letters of the demo language."""
    generator = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(generator.choice(list(LETTERS), size=generator.integers(6, 13))))
    return "\n".join(sorted(words))


def clips(count: int, folder: Path):
    from svlora.demo_data import CLINIC, generate_domain

    csv = generate_domain(CLINIC, folder, seed=1)
    return sorted(csv.parent.rglob("*.wav"))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model dir (default: the full-size architecture, random init)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from svlora.audio import load_audio
    from svlora.decoding import decode_features
    from svlora.hotwords import DEFAULT_HOTWORD_SCORE, build_hotwords
    from svlora.model import load_base_model
    from svlora.terms import parse_terms
    from svlora.tiny_model import full_size_spec, make_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model = args.model or str(make_tiny_model(work / "model", spec=full_size_spec()))
        kind = args.model or "full-size architecture (random init)"
        base = load_base_model(model)
        files = clips(args.clips, work / "clips")
        features = [base.features(load_audio(str(f))) for f in files]
    audio_seconds = sum(f.shape[0] for f in features) * 0.06
    print(machine_line(base.device.type))
    print(f"model: {kind}; {len(features)} clips, {audio_seconds:.1f} s of audio; fp32; beam "
          f"{args.beam}, hotword score {DEFAULT_HOTWORD_SCORE:g}; best / median of {args.repeats}")

    graph_seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        build_hotwords(base.tokenizer, parse_terms(random_terms(10_000), "bench"), beam=args.beam)
        graph_seconds.append(time.perf_counter() - started)
    print(f"context graph for 10,000 terms (parse + tokenise + build): best {min(graph_seconds):.3f} s, "
          f"median {statistics.median(graph_seconds):.3f} s")

    sides = [("greedy CTC (what svlora decodes without hotwords)", None),
             (f"prefix beam search, beam {args.beam}, no terms", build_hotwords(base.tokenizer, None, beam=args.beam))]
    for count in (10, 1_000, 10_000):
        sides.append((f"beam {args.beam} + {count:,} terms",
                      build_hotwords(base.tokenizer, parse_terms(random_terms(count), "bench"),
                                     beam=args.beam)))
    greedy_best = None
    for name, hotwords in sides:
        timing, _ = timed(lambda: decode_features(base, features, hotwords=hotwords, progress=False),
                          repeats=args.repeats)
        greedy_best = greedy_best or timing["best"]
        print(row(name, timing, audio_seconds, "audio-s",
                  f"  {1000 * timing['best'] / len(features):7.1f} ms/clip  "
                  f"{timing['best'] / greedy_best:5.2f}x greedy"))


if __name__ == "__main__":
    main()
