"""The README's first command, end to end: `svlora quickstart` on the tiny model and demo data."""

import json
import re


def word_edits(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words, written here so the check does not reuse svlora's scorer."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def independent_scores(manifest_rows: list[dict], predictions: list[dict], arm: str) -> dict:
    """Emotion accuracy and corpus WER of one arm from the raw outputs and the manifest alone."""
    by_key = {p["key"]: p for p in predictions}
    correct = edits = words = 0
    for row in manifest_rows:
        raw = by_key[row["key"]][arm]["raw"]
        tags = re.findall(r"<\|[^|]*\|>", raw)
        text = re.sub(r"<\|[^|]*\|>", "", raw).lower().split()
        correct += tags[1] == row["emo_target"]
        reference = row["target"].lower().split()
        edits += word_edits(reference, text)
        words += len(reference)
    return {"emotion_accuracy": correct / len(manifest_rows), "error_rate": edits / words}


def test_quickstart_runs_every_stage_and_the_adapter_wins_on_the_demo_domain(quickstart_run):
    assert quickstart_run["returncode"] == 0, quickstart_run["stderr"][-3000:]
    out = quickstart_run["out"]
    assert f"A/B report: {out / 'report' / 'report.html'}" in quickstart_run["stdout"]
    summary = json.loads((out / "quickstart.json").read_text())
    for stage in ("make tiny model", "prepare", "A/B eval on the clinic test split"):
        assert stage in summary["stage_seconds"]
    # the paths side by side: base, adapter, hotwords, rules and cascades on each stage 1
    assert [row["arm"] for row in summary["decision"]] == [
        "base", "base+hotwords", "adapter", "adapter+hotwords", "base+cascade", "adapter+cascade",
        "base+rules", "adapter+rules"]
    # the decision table's figures agree with a count made here from the raw outputs
    rows = [json.loads(line) for line in (out / "clinic/test.jsonl").read_text().splitlines()]
    predictions = [json.loads(line) for line in (out / "report/predictions.jsonl").read_text().splitlines()]
    decided = {row["arm"]: row for row in summary["decision"]}
    for arm in ("base", "adapter"):
        expected = independent_scores(rows, predictions, arm)
        assert abs(decided[arm]["emotion_accuracy"] - expected["emotion_accuracy"]) < 1e-9
        assert abs(decided[arm]["error_rate"] - expected["error_rate"]) < 1e-9
    # The honest A/B: base trained on "general", adapter on "clinic", scored on clinic test.
    assert decided["adapter"]["error_rate"] < decided["base"]["error_rate"]
    assert decided["adapter"]["emotion_accuracy"] > decided["base"]["emotion_accuracy"]
    # hotwords raise the base's drug-name recall without making the rest worse (the bar)
    assert decided["base+hotwords"]["term_recall"] > decided["base"]["term_recall"]
    assert decided["base+hotwords"]["unbiased_error_rate"] <= decided["base"]["unbiased_error_rate"] + 0.05
    # the transcription stage printed SenseVoice-style outputs for real clips
    assert "<|Speech|><|woitn|>" in quickstart_run["stdout"]
