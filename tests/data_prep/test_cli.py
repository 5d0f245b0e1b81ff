import json

import pytest

from svlora.cli import main
from tests.conftest import write_tone
from tests.data_prep.test_prepare import good_rows, write_csv


def test_cli_prepare_writes_manifests_and_report(tmp_path, capsys):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path))
    code = main(["prepare", str(table), "--format", "csv", "--out", str(tmp_path / "m"),
                 "--language", "en", "--val", "0.2", "--test", "0.2"])
    assert code == 0
    assert "18 accepted, 0 rejected" in capsys.readouterr().out
    report = json.loads((tmp_path / "m/prepare_report.json").read_text())
    assert sum(split["clips"] for split in report["splits"].values()) == 18


def test_cli_errors_are_one_line_with_exit_1(tmp_path, capsys):
    code = main(["prepare", str(tmp_path / "nope.csv"), "--format", "csv", "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("svlora prepare: error:") and "nope.csv" in err and "\n" not in err


def table_with_rejections(tmp_path, bad: int = 2):
    """18 good rows and `bad` rows with an emotion SenseVoice lacks: 20 rows read."""
    rows = good_rows(tmp_path)
    for i in range(bad):
        write_tone(tmp_path / f"bored{i}.wav", frequency=900 + 13 * i)
        rows.append({"audio": f"bored{i}.wav", "text": f"b {i}", "emotion": "bored",
                     "speaker": "spk0"})
    return write_csv(tmp_path / "labels.csv", rows)


def prepare_args(table, out, *extra):
    return ["prepare", str(table), "--format", "csv", "--out", str(out), "--language", "en",
            "--val", "0.2", "--test", "0.2", *extra]


@pytest.mark.parametrize("limit, code", [
    (None, 0), ("2", 0), ("1", 1), ("0", 1), ("10%", 0), ("9.5%", 1), ("100%", 0)])
def test_max_rejected_exits_1_above_the_limit_after_writing(tmp_path, capsys, limit, code):
    table = table_with_rejections(tmp_path)
    out = tmp_path / "m"
    assert main(prepare_args(table, out, *(["--max-rejected", limit] if limit else []))) == code
    captured = capsys.readouterr()
    # the report, the manifests and rejected.csv are written either way
    assert len((out / "rejected.csv").read_text().splitlines()) == 3
    assert json.loads((out / "prepare_report.json").read_text())["rows_rejected"] == 2
    errors = [line for line in captured.err.splitlines() if "error" in line]  # not tqdm's bar
    if code == 0:
        assert errors == []
        assert captured.out.splitlines()[-1] == f"rejected 2 of 20 rows: see {out / 'rejected.csv'}"
    else:
        assert len(errors) == 1 and captured.err.strip().splitlines()[-1] == errors[0]
        assert errors[0].startswith("svlora prepare: error: rejected 2 of 20 rows")
        assert f"--max-rejected {limit}" in errors[0] and str(out / "rejected.csv") in errors[0]


def test_no_rejections_is_the_last_line_too(tmp_path, capsys):
    table = table_with_rejections(tmp_path, bad=0)
    assert main(prepare_args(table, tmp_path / "m", "--max-rejected", "0")) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "rejected 0 of 18 rows"


@pytest.mark.parametrize("limit", ["abc", "-1", "150%", "1.5", "nan%", "%", "²"])
def test_a_bad_max_rejected_is_refused_before_reading(tmp_path, capsys, limit):
    table = table_with_rejections(tmp_path, bad=0)
    assert main(prepare_args(table, tmp_path / "m", "--max-rejected", limit)) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"svlora prepare: error: --max-rejected {limit!r}: use a number of rows "
                   "(e.g. 5) or a share of the rows read (e.g. 10%)")
    assert not (tmp_path / "m").exists()
