"""`svlora eval --ray` (a local Ray, 2 actors) gives the report and predictions of the local
eval: the same planned batches decoded the same way, scored here."""

import json
import subprocess
import sys


def run_eval(trained_dir, out, *extra):
    terms = trained_dir / "demo/clinic/terms.txt"
    result = subprocess.run(
        [sys.executable, "-m", "svlora.cli", "eval", "--model", str(trained_dir / "tiny-base"),
         "--data", str(trained_dir / "clinic/test.jsonl"), "--out", str(out),
         "--adapter", f"adapter={trained_dir / 'clinic-run/adapter'}", "--terms", str(terms),
         "--hotwords-arm", f"adapter+hotwords=adapter:{terms}", *extra], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return (json.loads((out / "report.json").read_text()),
            [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()])


def test_eval_on_ray_equals_eval_here(trained_dir, tmp_path):
    local_report, local_predictions = run_eval(trained_dir, tmp_path / "local")
    ray_report, ray_predictions = run_eval(trained_dir, tmp_path / "ray", "--ray", "--ray-workers", "2")
    assert ray_predictions == local_predictions
    for key in ("arms", "deltas", "terms", "timing", "best_arm", "gates_passed"):
        assert ray_report[key] == local_report[key], key
    assert [r["arm"] for r in ray_report["decision"]] == ["base", "adapter", "adapter+hotwords"]
