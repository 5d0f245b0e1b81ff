"""`svlora batch` on a local Ray of 2 workers, as a user runs it (a subprocess): records equal
`svlora transcribe --json` on the same files, broken files become error records, every input
is written exactly once after a kill -9 of the driver mid-job and a rerun, parquet and path
lists work, and an output folder of another job is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.adapters.test_serve import clinic_clips

CLI = [sys.executable, "-m", "svlora.cli"]


@pytest.fixture(scope="module")
def archive(trained_dir, tmp_path_factory) -> Path:
    """24 clinic clips in nested folders, a truncated WAV and a README (not audio)."""
    root = tmp_path_factory.mktemp("archive")
    for index, clip in enumerate(clinic_clips(trained_dir, 24)):
        target = root / f"day{index % 3}" / clip.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(clip.read_bytes())
    good = clinic_clips(trained_dir, 1)[0].read_bytes()
    (root / "day1" / "broken.wav").write_bytes(good[: len(good) // 2])  # header promises more
    (root / "README.txt").write_text("notes, not audio\n")
    return root


def model_args(trained_dir) -> list[str]:
    return ["--model", str(trained_dir / "tiny-base"), "--adapter", str(trained_dir / "clinic-run/adapter")]


def batch(trained_dir, source, out, *extra, check=True):
    result = subprocess.run([*CLI, "batch", str(source), "--out", str(out), *model_args(trained_dir),
                             "--workers", "2", "--shard-size", "4", *extra], capture_output=True, text=True)
    if check:
        assert result.returncode in (0, 1), result.stderr[-3000:]
    return result


def records(out: Path, fmt: str = "jsonl") -> list[dict]:
    found = []
    for shard in sorted(out.glob(f"shard-*.{fmt}")):
        if fmt == "jsonl":
            found += [json.loads(line) for line in shard.read_text().splitlines()]
        else:
            found += [json.loads(r) for r in pq.read_table(shard).column("record").to_pylist()]
    return found


def transcribed(trained_dir, paths: list[str]) -> list[dict]:
    result = subprocess.run([*CLI, "transcribe", *model_args(trained_dir), "--json", *paths],
                            capture_output=True, text=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def audio_paths(archive: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in archive.rglob("*.wav"))


@pytest.fixture(scope="module")
def finished_job(trained_dir, archive, tmp_path_factory):
    """The archive batched once (each Ray run costs ~20 s of start-up here): its output folder
    and the run's result."""
    out = tmp_path_factory.mktemp("finished") / "out"
    return out, batch(trained_dir, archive, out)


def test_records_equal_transcribe_and_broken_files_become_error_records(trained_dir, archive, finished_job):
    out, result = finished_job
    assert result.returncode == 1 and "1 file(s) could not be transcribed" in result.stdout
    got = records(out)
    assert [r["path"] for r in got] == audio_paths(archive)  # each input once, in order
    assert got == transcribed(trained_dir, audio_paths(archive))
    [error] = [r for r in got if "error" in r]
    assert error["path"].endswith("broken.wav") and "truncated WAV" in error["error"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert (manifest["status"], manifest["inputs"], manifest["records"], manifest["errors"]) == \
        ("complete", 25, 25, 1)
    assert manifest["shards"] == 7 and manifest["skipped_not_audio"] == [str(archive / "README.txt")]
    assert manifest["settings"]["adapter_sha256"] and manifest["failures"][0]["path"] == error["path"]
    again = batch(trained_dir, archive, out)  # finished: nothing redone, nothing added
    assert records(out) == got and "Ray" not in again.stderr


def test_a_killed_driver_then_a_rerun_writes_every_input_exactly_once(trained_dir, archive, tmp_path):
    out = tmp_path / "out"
    driver = subprocess.Popen([*CLI, "batch", str(archive), "--out", str(out), *model_args(trained_dir),
                               "--workers", "2", "--shard-size", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while not list(out.glob("shard-*.jsonl")) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)  # the driver, mid-job
    driver.wait()
    with pytest.raises(ProcessLookupError):  # then what it had started (its local Ray)
        for _ in range(50):
            os.killpg(driver.pid, signal.SIGKILL)
            time.sleep(0.1)
    done_before = sorted(p.name for p in out.glob("shard-*.jsonl"))
    assert 0 < len(done_before) < 13, done_before
    batch(trained_dir, archive, out, "--shard-size", "2")
    got = records(out)
    assert [r["path"] for r in got] == audio_paths(archive)
    assert got == records_of_fresh_run(trained_dir, archive, tmp_path)
    assert not list(out.glob(".*.tmp"))
    assert json.loads((out / "_manifest.json").read_text())["status"] == "complete"


def records_of_fresh_run(trained_dir, archive, tmp_path):
    return transcribed(trained_dir, audio_paths(archive))


def test_parquet_output_from_a_path_list_and_a_manifest_input(trained_dir, archive, tmp_path):
    listing = tmp_path / "paths.txt"
    chosen = audio_paths(archive)[:6]
    listing.write_text("# a path list\n" + "\n".join(chosen) + "\n\n")
    batch(trained_dir, listing, tmp_path / "pq", "--format", "parquet")
    table = pq.read_table(sorted((tmp_path / "pq").glob("shard-*.parquet"))[0])
    assert {"path", "text", "emotion", "record"} <= set(table.column_names)
    assert records(tmp_path / "pq", "parquet") == transcribed(trained_dir, chosen)
    from svlora.batch import list_inputs  # what a manifest input batches, without another Ray run

    manifest = trained_dir / "clinic/test.jsonl"
    sources = [json.loads(line)["source"] for line in manifest.read_text().splitlines()]
    assert list_inputs(str(manifest)).paths == sources


def test_another_jobs_folder_and_fail_fast_are_clear_errors(trained_dir, archive, finished_job, tmp_path):
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(audio_paths(archive)[:3]) + "\n")
    out, _ = finished_job  # another job's folder: other inputs, no adapter
    other = subprocess.run([*CLI, "batch", str(listing), "--out", str(out), "--model",
                            str(trained_dir / "tiny-base"), "--shard-size", "4"], capture_output=True, text=True)
    assert other.returncode != 0 and "holds another batch job" in other.stderr
    broken = tmp_path / "broken.txt"
    broken.write_text(str(archive / "day1" / "broken.wav") + "\n")
    failed = batch(trained_dir, broken, tmp_path / "ff", "--fail-fast", check=False)
    assert failed.returncode not in (0, 1) or "--fail-fast" in failed.stderr
    assert "--fail-fast" in failed.stderr and "truncated WAV" in failed.stderr
    assert not list((tmp_path / "ff").glob("shard-*"))
