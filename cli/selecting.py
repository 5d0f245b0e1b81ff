"""`svlora select`: which unlabelled clips to label first (svlora.selection)."""

from __future__ import annotations

import sys

from svlora.cli.common import add_model_args
from svlora.errors import SvloraError

SHOWN_PROBLEMS = 5  # problems printed one per line; the rest are in OUT.errors.csv


def register(commands) -> None:
    select = commands.add_parser(
        "select", help="choose which unlabelled clips to label first (diverse and uncertain)")
    select.add_argument("--pool", required=True, help="a folder of clips (recursive) or a "
                        "prepare .jsonl manifest (its `source` paths)")
    select.add_argument("--budget", required=True, help="how many clips to label")
    add_model_args(select)
    select.add_argument("--adapter", help="score the clips with base + this adapter")
    select.add_argument("--language", default="auto", help="the language query (auto, en, zh, ...)")
    select.add_argument("--clusters", help="k-means clusters of the embeddings (default: the "
                        "budget, at most 50: each cluster's least certain clip)")
    select.add_argument("--seed", default="0", help="k-means seed (same seed, same list)")
    select.add_argument("--max-seconds", default="120",
                        help="longer files are reported, not ranked (default 120)")
    select.add_argument("--ban-emo-unknown", action="store_true",
                        help="the emotion distribution leaves out <|EMO_UNKNOWN|>")
    select.add_argument("--out", required=True, help="the CSV to write: path, rank, cluster, "
                        "margin, predicted_emotion, p_<EMOTION>...")
    select.set_defaults(handler=run_select)


def number(value: str, flag: str, kind=int):
    """A flag's value as int/float, or one line naming the flag (exit 1, like every other
    bad input of this command)."""
    try:
        return kind(value)
    except ValueError:
        raise SvloraError(f"{flag} {value!r}: not a{'n integer' if kind is int else ' number'}") from None


def run_select(args) -> int:
    from svlora.selection import SelectOptions, run_selection

    report = run_selection(SelectOptions(
        pool=args.pool, budget=number(args.budget, "--budget"), model=args.model, out=args.out,
        adapter=args.adapter, language=args.language,
        clusters=number(args.clusters, "--clusters") if args.clusters is not None else None,
        seed=number(args.seed, "--seed"),
        device=args.device, hub=args.hub, allow_base_mismatch=args.allow_base_mismatch,
        trust_remote_code=args.trust_remote_code, ban_emo_unknown=args.ban_emo_unknown,
        max_seconds=number(args.max_seconds, "--max-seconds", float)))
    for problem in report.errors[:SHOWN_PROBLEMS]:
        print(f"svlora select: not ranked: {problem.path}: {problem.reason}", file=sys.stderr)
    if len(report.errors) > SHOWN_PROBLEMS:
        print(f"svlora select: ... and {len(report.errors) - SHOWN_PROBLEMS} more",
              file=sys.stderr)
    problems = (f"; {len(report.errors)} file(s) could not be used: {report.errors_file}"
                if report.errors else "")
    ignored = f"; {len(report.ignored)} non-audio file(s) ignored" if report.ignored else ""
    short = (f" (the pool has only {report.scored} readable clips)"
             if report.chosen < number(args.budget, "--budget") else "")
    print(f"chose {report.chosen} of {report.scored} clips{short} from {len(report.quotas)} "
          f"clusters (clips per cluster: {', '.join(map(str, report.quotas))}){problems}{ignored}; "
          f"wrote {report.out}")
    return 0
