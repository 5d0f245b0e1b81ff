"""gpu_suite.sh's table: the runs (runs.tsv: name, exit status, seconds, budget, command) and
the figures each recorded (NAME.records.jsonl, benchmarks/common.py: record()) as one
JSON file and one Markdown table, with the machine, commit and date.

    python benchmarks/suite_table.py OUT_DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402


def read_runs(out: Path) -> list[dict]:
    runs = []
    for line in (out / "runs.tsv").read_text(encoding="utf-8").splitlines():
        name, rc, seconds, budget, command = line.split("\t", 4)
        log = out / f"{name}.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
        runs.append({"name": name, "rc": int(rc), "seconds": round(float(seconds), 1),
                     "budget_s": int(budget), "command": command, "tail": tail,
                     "figures": read_records(out / f"{name}.records.jsonl")})
    return runs


def read_records(path: Path) -> list[dict]:
    """What a run recorded before it ended (a run cut at its budget keeps what it measured)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def status(run: dict) -> str:
    if run["rc"] == 0:
        return "ok"
    if run["rc"] in (124, 137):
        return f"over its {run['budget_s']} s budget"
    return f"failed (exit {run['rc']})"


def markdown(summary: dict) -> str:
    lines = [f"GPU suite: {summary['machine']}; commit {summary['commit']}; {summary['date']}.", "",
             "| benchmark | status | s | measured | figure | best | median | details |",
             "|---|---|---|---|---|---|---|---|"]
    for run in summary["runs"]:
        figures = run["figures"] or [None]
        for index, entry in enumerate(figures):
            lead = (f"| {run['name']} | {status(run)} | {run['seconds']:.0f} |" if index == 0 else "| | | |")
            if entry is None:
                last = (run["tail"] or ["no output"])[-1].replace("|", "/")[:120]
                lines.append(f"{lead} – | – | – | – | {last} |")
                continue
            details = ", ".join(f"{k} {v}" for k, v in entry.items()
                                if k not in ("benchmark", "name", "figure", "best", "median"))
            median = "–" if entry["median"] is None else f"{entry['median']:,.2f}"
            lines.append(f"{lead} {entry['name']} | {entry['figure']} | {entry['best']:,.2f} | {median} | {details} |")
    lines += ["", "Commands:", ""] + [f"- {run['name']}: `{run['command']}`" for run in summary["runs"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    runs = read_runs(args.out)
    commit = os.environ.get("GIT_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": commit or "unknown", "machine": machine_line(args.device), "runs": runs}
    (args.out / "gpu_suite.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (args.out / "gpu_suite.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    print(f"wrote {args.out / 'gpu_suite.json'} and {args.out / 'gpu_suite.md'}")


if __name__ == "__main__":
    main()
