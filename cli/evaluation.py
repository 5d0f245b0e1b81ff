"""`svlora eval`: the A/B report."""

from __future__ import annotations

import sys

from svlora.cli.common import add_hotword_args, add_model_args


def register(commands) -> None:
    evaluate = commands.add_parser("eval", help="A/B: base vs adapters on the same clips")
    add_model_args(evaluate)
    evaluate.add_argument("--data", required=True, help="test manifest (SenseVoice jsonl)")
    evaluate.add_argument("--labels", help="the label schema every arm is scored in (labels.json or "
                          "YAML; default: the labels.json beside --data)")
    evaluate.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                          help="an adapter arm; repeat for several")
    evaluate.add_argument("--rules-arm", action="append", default=[], metavar="NAME=ARM:RULES",
                          help="an arm that applies a rules file to ARM's outputs (base or an "
                          "--adapter arm's name), e.g. base+rules=base:rules.yaml; repeatable")
    evaluate.add_argument("--cascade-arm", action="append", default=[], metavar="NAME=ARM:DIR",
                          help="an arm whose emotion a cascade (trained on ARM) re-decides, e.g. "
                          "base+cascade=base:runs/cascade; repeatable")
    evaluate.add_argument("--hotwords-arm", action="append", default=[], metavar="NAME=ARM:TERMS",
                          help="an arm that decodes ARM (base or an --adapter arm) with hotword "
                          "biasing towards a terms file, e.g. base+hotwords=base:terms.txt; repeatable")
    add_hotword_args(evaluate, with_file=False)
    evaluate.add_argument("--terms", metavar="TERMS.txt",
                          help="domain terms (one per line, term<TAB>alias|alias): per-term recall, "
                          "precision, F1 and biased/unbiased error rates for every arm")
    evaluate.add_argument("--general", help="a general-domain manifest: retention of every arm")
    evaluate.add_argument("--gate", help="thresholds on changes vs base, e.g. "
                          "'emotion_ua>=+0.02,cer<=+0.005,general_cer<=+0.01'; exit 2 if missed")
    evaluate.add_argument("--out", required=True, help="report directory")
    evaluate.add_argument("--max-seconds-per-batch", type=float, default=None,
                          help="padded audio seconds per decoding batch (default 60 on a CPU, "
                          "240 on a GPU)")
    evaluate.add_argument("--feature-cache", help="feature cache dir from `prepare --features`")
    evaluate.add_argument("--ban-emo-unknown", action="store_true",
                          help="never predict <|EMO_UNKNOWN|> (as SenseVoice's published emotion "
                          "results are decoded)")
    evaluate.add_argument("--max-seconds", type=float, default=None,
                          help="refuse clips longer than this (default: any length)")
    evaluate.add_argument("--cache-dir", help="prediction cache (default OUT/cache)")
    evaluate.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                          help="decode each arm's batches on Ray actors: a local Ray, or a cluster "
                          "(auto, or its address); the outputs are the local ones (pip install 'svlora[ray]')")
    evaluate.add_argument("--ray-workers", type=int, default=2, help="with --ray: actors (one model each)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.set_defaults(handler=run_eval)


def run_eval(args) -> int:
    from svlora.eval import evaluate, verdict
    from svlora.eval.gates import failure_line

    report = evaluate(args.model, args.data, args.out, adapters=args.adapter,
                      general=args.general, gate=args.gate, device=args.device, hub=args.hub,
                      max_seconds_per_batch=args.max_seconds_per_batch,
                      allow_base_mismatch=args.allow_base_mismatch,
                      feature_cache=args.feature_cache, cache_dir=args.cache_dir,
                      resamples=args.resamples, seed=args.seed,
                      trust_remote_code=args.trust_remote_code, max_clip_seconds=args.max_seconds,
                      ban_emo_unknown=args.ban_emo_unknown, rules_arms=args.rules_arm,
                      cascade_arms=args.cascade_arm, labels=args.labels, terms=args.terms,
                      hotword_arms=args.hotwords_arm, hotword_score=args.hotword_score,
                      beam=args.beam, ray=args.ray, ray_workers=args.ray_workers)
    print(verdict(report))
    print(f"report: {args.out}/report.html (report.md, report.json, predictions.jsonl, confusion*.png)")
    if not report.gates_passed:
        for arm, checks in report.gates.items():
            for check in checks:
                if not check["passed"]:
                    print(failure_line(arm, check), file=sys.stderr)
        return 2
    return 0
