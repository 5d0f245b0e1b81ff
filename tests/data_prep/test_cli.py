import json

from svlora.cli import main
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
