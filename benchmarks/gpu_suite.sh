#!/usr/bin/env bash
# One command on a GPU machine: the benchmarks that exist, each under its own time budget (about
# 8 minutes in all), their output collected into gpu_suite.json and gpu_suite.md (machine,
# commit, date, each benchmark's command, exit status, seconds and printed figures).
#   bash benchmarks/gpu_suite.sh [OUT_DIR]      (default benchmarks/results/gpu)
# Needs the ESD dev clips at ../shared/data/esd_en_0020_dev (DATA=... to point elsewhere).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
DATA="${DATA:-../shared/data/esd_en_0020_dev}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
run() {  # name, budget seconds, command...
    local name="$1" budget="$2"; shift 2
    local started=$(date +%s.%N)
    timeout "$budget" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local seconds=$(echo "$(date +%s.%N) - $started" | bc)
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$seconds" "$*" >> "$OUT/runs.tsv"
    echo "== $name: rc $rc, ${seconds%.*} s"
}
: > "$OUT/runs.tsv"
run eval_bench 100 $PY benchmarks/eval_bench.py --full-size --device cuda --data "$DATA" --limit 300 --batch-sizes 16,64
run train_bench 100 $PY benchmarks/train_bench.py --device cuda --seconds-per-batch 60 --skip-funasr-trainer
run train_bench_240 80 $PY benchmarks/train_bench.py --device cuda --seconds-per-batch 240 --skip-funasr-trainer
run serve_bench 90 $PY benchmarks/serve_bench.py --full-size --device cuda --clients 32 --requests 128 --data "$DATA"
run realtime_bench 80 $PY benchmarks/realtime_bench.py --full-size --device cuda --streams 4 16 --utterances 2 --data "$DATA" --out "$OUT"
run batch_bench 90 $PY benchmarks/batch_bench.py --full-size --device cuda --files 300 --workers 1 --data "$DATA"
$PY - "$OUT" <<'PYEOF'
import json, subprocess, sys, datetime
from pathlib import Path
out = Path(sys.argv[1])
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
except Exception as error:
    gpu = f"torch unavailable: {error}"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
runs = []
for line in (out / "runs.tsv").read_text().splitlines():
    name, rc, seconds, command = line.split("\t", 3)
    text = (out / f"{name}.log").read_text(errors="replace").splitlines()
    figures = [l for l in text if " s " in l or "/s" in l or "ms" in l or "overhead" in l or "x " in l][-12:]
    runs.append({"name": name, "rc": int(rc), "seconds": round(float(seconds), 1), "command": command,
                 "figures": figures, "tail": text[-5:]})
summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit, "gpu": gpu, "runs": runs}
(out / "gpu_suite.json").write_text(json.dumps(summary, indent=2))
lines = [f"# GPU suite: {gpu}, commit {commit}, {summary['date']}", ""]
for run in runs:
    lines += [f"## {run['name']} (rc {run['rc']}, {run['seconds']} s)", "", f"`{run['command']}`", "", "```",
              *(run["figures"] or run["tail"]), "```", ""]
(out / "gpu_suite.md").write_text("\n".join(lines))
print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}")
PYEOF
