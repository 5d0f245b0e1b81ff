"""The whole feedback loop as a team runs it, every step through the CLI or over HTTP: serve
with --capture → requests → feedback (refused without the token) → review queue →
--to-manifest (test clips dropped by hash) → svlora prepare → svlora train → svlora eval."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.adapters.test_serve import ADMIN, TOKEN, post, start_server, stop

CLI = [sys.executable, "-m", "svlora.cli"]
SERVED = 14      # clinic training clips sent to the server
UNREVIEWED = 2   # of them, left for the queue
LEAKED = 2       # clinic test clips sent and reviewed: --exclude must drop them


def manifest_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def reviewer_labels(row: dict) -> dict:
    """What a reviewer who knows the truth sends for a clinic clip (its manifest row)."""
    return {"text": row["target"], "emotion": row["emo_target"], "language": row["text_language"][2:-2],
            **row.get("heads", {})}


def cli(*arguments: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *arguments], capture_output=True, text=True)
    assert done.returncode == 0, f"svlora {arguments[0]}: {done.stderr[-3000:]}"
    return done


def test_captured_traffic_becomes_training_data_and_an_evaluated_adapter(trained_dir, tmp_path):
    captures = tmp_path / "captures"
    train_rows = manifest_rows(trained_dir / "clinic/train.jsonl")[:SERVED]
    test_rows = manifest_rows(trained_dir / "clinic/test.jsonl")[:LEAKED]
    process, url = start_server(trained_dir, "--capture", str(captures), "--capture-rate", "1",
                                "--admin-token", TOKEN)
    try:
        served = [(row, post(url, row["source"]).json()["id"]) for row in train_rows + test_rows]
        first_id = served[0][1]
        refused = httpx.post(f"{url}/v1/feedback", json={"id": first_id, "emotion": "SAD"}, timeout=30)
        assert refused.status_code == 401
        wrong = httpx.post(f"{url}/v1/feedback", json={"id": first_id, "emotion": "SAD"}, timeout=30,
                           headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        reviewed = served[UNREVIEWED:]
        for row, capture_id in reviewed:
            answer = httpx.post(f"{url}/v1/feedback", headers=ADMIN, timeout=30,
                                json={"id": capture_id, **reviewer_labels(row)})
            assert answer.status_code == 201, answer.text
    finally:
        stop(process)

    queue = [json.loads(line) for line in cli("review", str(captures), "--queue", "--json").stdout.splitlines()]
    assert sorted(item["id"] for item in queue) == sorted(capture_id for _, capture_id in served[:UNREVIEWED])

    reviewed_csv = tmp_path / "reviewed.csv"
    printed = cli("review", str(captures), "--to-manifest", str(reviewed_csv), "--exclude",
                  str(trained_dir / "clinic/test.jsonl")).stdout
    assert f"{LEAKED} dropped: already in {trained_dir / 'clinic/test.jsonl'}" in printed
    rows = list(csv.DictReader(reviewed_csv.open(encoding="utf-8")))
    truth = {row["target"]: row for row, _ in reviewed[:-LEAKED]}
    assert sorted(r["text"] for r in rows) == sorted(truth)  # the reviewed training clips, nothing else
    for row in rows:
        assert f"<|{row['emotion']}|>" == truth[row["text"]]["emo_target"]
        assert row["role"] == truth[row["text"]]["heads"]["role"] and row["model"] == "clinic"

    data = tmp_path / "data"
    cli("prepare", str(reviewed_csv), "--format", "csv", "--out", str(data), "--val", "0.2", "--test", "0",
        "--labels", str(trained_dir / "clinic/labels.json"), "--workers", "1")
    prepared = manifest_rows(data / "train.jsonl") + manifest_rows(data / "val.jsonl")
    assert len(prepared) == SERVED - UNREVIEWED and {r["emo_target"] for r in prepared} <= \
        {r["emo_target"] for r in train_rows}

    run = tmp_path / "retrain"
    cli("train", "tiny_demo", f"model={trained_dir / 'tiny-base'}", f"out={run}",
        f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}", "train.max_steps=20",
        "train.eval_every=20", "optim.warmup_steps=2")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()

    report_dir = tmp_path / "report"
    cli("eval", "--model", str(trained_dir / "tiny-base"), "--adapter", f"retrained={run / 'adapter'}",
        "--data", str(trained_dir / "clinic/test.jsonl"), "--out", str(report_dir), "--resamples", "50")
    report = json.loads((report_dir / "report.json").read_text())
    assert [row["arm"] for row in report["decision"]] == ["base", "retrained"]
    assert report["n"] == len(manifest_rows(trained_dir / "clinic/test.jsonl"))
    assert report["adapter_path"] == str(run / "adapter") and report["decision"][1]["train_seconds"] > 0
