"""`svlora select` end to end on the tiny model and a few demo clips: a list a labeller can
work down, an unreadable file reported (not dropped), a manifest pool giving the same list,
and bad arguments as one line with exit 1 before any model loads."""

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from svlora.cli.app import main

CLIPS = 12
BUDGET = 5


@pytest.fixture(scope="module")
def pool_dir(demo_corpora, tmp_path_factory):
    """12 clinic clips of 3 speakers in nested folders, a broken .wav and a notes file."""
    clinic = demo_corpora["clinic"].parent
    pool = tmp_path_factory.mktemp("select") / "pool"
    for number in range(CLIPS):
        speaker = f"clinic_spk0{number % 3}"
        name = f"{speaker}_{number:03d}.wav"
        (pool / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copy(clinic / speaker / name, pool / speaker / name)
    (pool / "clinic_spk01" / "broken.wav").write_bytes(b"RIFF not really audio")
    (pool / "notes.txt").write_text("not audio\n")
    return pool


@pytest.fixture(scope="module")
def selected(pool_dir, tiny_model_dir):
    """(exit code, the list's path, (stdout, stderr)) of one `svlora select` on the folder."""
    out = pool_dir.parent / "lists" / "to_label.csv"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["select", "--pool", str(pool_dir), "--budget", str(BUDGET), "--model",
                     str(tiny_model_dir), "--device", "cpu", "--clusters", "2", "--out", str(out)])
    return code, out, (stdout.getvalue(), stderr.getvalue())


def read_list(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_list_is_one_a_labeller_can_work_down(selected, pool_dir):
    code, out, _ = selected
    assert code == 0
    rows = read_list(out)
    assert len(rows) == BUDGET
    assert [int(r["rank"]) for r in rows] == list(range(1, BUDGET + 1))
    paths = [r["path"] for r in rows]
    assert len(set(paths)) == BUDGET
    for path in paths:
        assert Path(path).is_file() and Path(path).is_relative_to(pool_dir.resolve())
        assert Path(path).name != "broken.wav"
    for row in rows:
        probabilities = {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
        assert "HAPPY" in probabilities and sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        top = sorted(probabilities.values(), reverse=True)
        assert float(row["margin"]) == pytest.approx(top[0] - top[1], abs=2e-4)
        assert probabilities[row["predicted_emotion"]] == top[0]
        assert row["cluster"] in {"0", "1"}
    assert len({r["cluster"] for r in rows}) == 2  # both clusters get a share


def test_an_unreadable_file_is_reported_not_dropped(selected, pool_dir):
    _, out, (stdout, stderr) = selected
    broken = str((pool_dir / "clinic_spk01" / "broken.wav").resolve())
    assert f"not ranked: {broken}: " in stderr
    errors = read_list(out.with_name("to_label.errors.csv"))
    assert [e["path"] for e in errors] == [broken] and "decode" in errors[0]["reason"]
    assert f"chose {BUDGET} of {CLIPS} clips" in stdout and "1 file(s) could not be used" in stdout
    assert "1 non-audio file(s) ignored" in stdout


def test_a_manifest_pool_of_the_same_clips_gives_the_same_list(selected, pool_dir, tiny_model_dir):
    _, out, _ = selected
    manifest = pool_dir.parent / "pool.jsonl"
    sources = sorted(p.relative_to(pool_dir.parent) for p in pool_dir.rglob("*.wav"))
    manifest.write_text("".join(json.dumps({"key": s.stem, "source": str(s)}) + "\n" for s in sources))
    again = pool_dir.parent / "again.csv"
    assert main(["select", "--pool", str(manifest), "--budget", str(BUDGET), "--model",
                 str(tiny_model_dir), "--device", "cpu", "--clusters", "2", "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()  # same clips, same seed: the same list


@pytest.mark.parametrize("change, message", [
    ({"--budget": "0"}, "--budget 0: give the number of clips to label"),
    ({"--budget": "ten"}, "--budget 'ten': not an integer"),
    ({"--pool": "MISSING"}, "not found; give a folder of clips or a prepare .jsonl manifest"),
    ({"--pool": "NOTES"}, "neither a folder nor a .jsonl manifest"),
    ({"--out": "DIR"}, "is a directory; give a CSV file path"),
    ({"--clusters": "0"}, "--clusters 0: give 1 or more"),
    ({"--pool": "BAD_MANIFEST"}, "bad.jsonl:2: no `source` path in this row"),
])
def test_bad_arguments_are_one_line_and_exit_1(change, message, pool_dir, tmp_path, capsys):
    bad_manifest = tmp_path / "bad.jsonl"
    bad_manifest.write_text('{"source": "a.wav"}\n{"key": "b"}\n')
    where = {"MISSING": str(tmp_path / "missing"), "NOTES": str(pool_dir / "notes.txt"),
             "DIR": str(tmp_path), "BAD_MANIFEST": str(bad_manifest)}
    arguments = {"--pool": str(pool_dir), "--budget": "3", "--model": str(tmp_path / "no-model"),
                 "--out": str(tmp_path / "list.csv")}
    arguments.update({k: where.get(v, v) for k, v in change.items()})
    assert main(["select", *[part for item in arguments.items() for part in item]]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("svlora select: error: ") and message in lines[0]
