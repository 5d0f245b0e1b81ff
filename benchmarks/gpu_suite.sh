#!/usr/bin/env bash
# One command on a GPU machine: every benchmark that exists, each under its own time budget
# (7 minutes in all, so one 10-minute call holds it), into ONE table: gpu_suite.json and
# gpu_suite.md with the machine, commit and date, each benchmark's command, exit status and
# seconds, and every figure it recorded (benchmarks/common.py: record(), into NAME.records.jsonl).
#   bash benchmarks/gpu_suite.sh [OUT_DIR]      (default benchmarks/results/gpu)
# Needs the ESD dev clips at ../shared/data/esd_en_0020_dev (DATA=... to point elsewhere).
# DEVICE=cpu BUDGET_SCALE=0.1 runs the same plumbing on a CPU (figures meaningless, a smoke test).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
DATA="${DATA:-../shared/data/esd_en_0020_dev}"
DEVICE="${DEVICE:-cuda}"
SCALE="${BUDGET_SCALE:-1}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
: > "$OUT/runs.tsv"
run() {  # name, budget seconds, command...
    local name="$1" budget
    budget=$(awk -v b="$2" -v s="$SCALE" 'BEGIN { v = int(b * s + 0.5); print (v < 1 ? 1 : v) }'); shift 2
    local started; started=$(date +%s.%N)
    : > "$OUT/$name.records.jsonl"
    SVLORA_BENCH_RECORDS="$OUT/$name.records.jsonl" timeout --kill-after=3 "$budget" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local seconds; seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$seconds" "$budget" "$*" >> "$OUT/runs.tsv"
    echo "== $name: rc $rc, ${seconds%.*} s of ${budget} s"
}
# budgets: 70+60+50+40+70+60+60 = 410 s (+ at most 3 s each to die), plus the summary: under 8 minutes
run eval_bench 70 $PY benchmarks/eval_bench.py --full-size --device "$DEVICE" --data "$DATA" --limit 300 --batch-sizes 16,64
run train_bench_60 60 $PY benchmarks/train_bench.py --device "$DEVICE" --seconds-per-batch 60 --skip-funasr-trainer
run train_bench_240 50 $PY benchmarks/train_bench.py --device "$DEVICE" --seconds-per-batch 240 --skip-funasr-trainer
run preflight 40 $PY benchmarks/preflight_bench.py --device "$DEVICE" --seconds-per-batch 60 240
run serve_bench 70 $PY benchmarks/serve_bench.py --full-size --device "$DEVICE" --clients 32 --requests 128 --data "$DATA"
run realtime_bench 60 $PY benchmarks/realtime_bench.py --full-size --device "$DEVICE" --streams 4 16 --utterances 2 --data "$DATA" --out "$OUT"
run batch_bench 60 $PY benchmarks/batch_bench.py --full-size --device "$DEVICE" --files 300 --workers 1 --data "$DATA"
$PY benchmarks/suite_table.py "$OUT" --device "$DEVICE"
