"""The README tells the truth: CI runs its test command, and its quickstart table matches what a
fresh quickstart run of the current code reports (within the stated tolerance)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What may differ between CPUs (float summation order in the kernels shifts training a little):
# emotion UA / accuracy and error rate, absolute.
README_TOLERANCE = 0.1


def readme_text() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def quickstart_table(readme: str) -> dict[str, dict[str, float]]:
    """The quickstart's decision table as the README prints it: arm → its quality figures (the
    three headline ones, HESITANT's recall, the role head's UA ("–" where an arm has none), the
    drug names' recall and the error rate outside them)."""
    section = readme.split("### What the quickstart does", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and re.fullmatch(r"[\d.]+", cells[1] or "x"):
            arm = re.sub(r"\s*\(.*\)$", "", cells[0])
            rows[arm] = {"emotion_ua": float(cells[1]), "emotion_accuracy": float(cells[2]),
                         "error_rate": float(cells[3]), "hesitant_recall": float(cells[4]),
                         "role_ua": None if cells[5] == "–" else float(cells[5]),
                         "term_recall": float(cells[6]), "unbiased_error_rate": float(cells[7])}
    return rows


def measured_figures(row: dict) -> dict:
    return {**row, "hesitant_recall": row["new_class_recall"]["<|HESITANT|>"],
            "role_ua": row["head_ua"]["role"]}


def test_ci_runs_the_readme_test_command():
    ci_command = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    readme = readme_text()
    assert f"```bash\n{ci_command}\n```" in readme
    assert "pip install torch==2.13.0 && pip install -e . && svlora quickstart" in readme


def test_the_readme_stays_short_and_links_what_it_moved():
    readme = readme_text()
    assert len(readme.splitlines()) <= 260
    for page in ("docs/guide.md", "docs/benchmarks.md"):
        assert f"({page}" in readme and (ROOT / page).is_file()


def test_readme_quickstart_table_matches_a_fresh_run(quickstart_run):
    assert quickstart_run["returncode"] == 0, quickstart_run["stderr"][-3000:]
    printed = quickstart_table(readme_text())
    report = json.loads((quickstart_run["out"] / "report/report.json").read_text())
    measured = {row["arm"]: measured_figures(row) for row in report["decision"]}
    # The tiny base's text is near junk (WER ~2, mostly insertions) and other CPUs' float sums
    # move a few of its clips: a figure may also lie anywhere in the run's own 95% interval.
    intervals = {arm: report["arms"][arm].get("ci95", {}) for arm in measured}
    assert list(printed) == list(measured)  # the same arms, in the report's order
    for arm, figures in printed.items():
        for metric, value in figures.items():
            if value is None or measured[arm][metric] is None:  # no head: both must say so
                assert value is measured[arm][metric] is None, (arm, metric)
                continue
            low, high = intervals[arm].get(metric, (measured[arm][metric],) * 2)
            assert abs(measured[arm][metric] - value) <= README_TOLERANCE or low <= value <= high, (
                f"README says {arm} {metric} {value}; this run measured {measured[arm][metric]:.3f} "
                f"[{low:.3f}, {high:.3f}]")
