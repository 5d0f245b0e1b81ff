import json

from svlora.cli import main
from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.data_prep.check import check_manifests
from tests.data_prep.test_prepare import good_rows, write_csv


def prepared(tmp_path):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path, speakers=10))
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "m"), format="csv", language="en",
                                  val=0.2, test=0.2))
    return tmp_path / "m"


def test_clean_manifests_pass(tmp_path, capsys):
    m = prepared(tmp_path)
    code = main(["check", str(m / "train.jsonl"), str(m / "val.jsonl"), str(m / "test.jsonl")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "30 rows in 3 manifest(s): 0 error(s)" in out


def test_broken_manifest_findings(tmp_path, capsys):
    m = prepared(tmp_path)
    lines = [json.loads(line) for line in (m / "train.jsonl").read_text().splitlines()]
    lines[0]["emo_target"] = "<|BORED|>"
    lines[1]["source"] = str(tmp_path / "gone.wav")
    lines[2]["source_len"] = 9999
    lines[3]["key"] = lines[4]["key"]
    lines[5]["target_len"] = 1
    test_row = json.loads((m / "test.jsonl").read_text().splitlines()[0])
    lines.append({**test_row, "key": "copied-from-test"})
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    findings = check_manifests([str(broken), str(m / "test.jsonl")])
    errors = "\n".join(f"{e['where']}: {e['message']}" for e in findings["errors"])
    assert f"{broken}:1: emo_target='<|BORED|>' is not a SenseVoice tag" in errors
    assert "gone.wav: audio file not found" in errors
    assert f"{broken}:3: source_len 9999 but the audio has" in errors
    assert "duplicate key" in errors
    assert f"{broken}:{len(lines) + 1}: not valid JSON" in errors
    assert "audio appears in 2 manifests" in errors  # the row copied from test: leakage
    warnings = "\n".join(w["message"] for w in findings["warnings"])
    assert "target_len 1 but the transcript has" in warnings
    code = main(["check", "--json", str(broken)])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["errors"]


def test_constant_emotion_column_is_a_warning(tmp_path):
    m = prepared(tmp_path)
    lines = [json.loads(line) for line in (m / "train.jsonl").read_text().splitlines()]
    for line in lines:
        line["emo_target"] = "<|NEUTRAL|>"
    flat = tmp_path / "flat.jsonl"
    flat.write_text("\n".join(json.dumps(x) for x in lines))
    findings = check_manifests([str(flat)], decode_audio=False)
    assert not findings["errors"]
    assert "emo_target is <|NEUTRAL|> on all" in findings["warnings"][0]["message"]


def test_a_missing_manifest_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert main(["check", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"svlora check: error: {missing}: manifest not found; check the path "
                            "(prepare writes train.jsonl, val.jsonl and test.jsonl into its --out "
                            "folder)\n")
    assert main(["check", str(tmp_path)]) == 1  # a folder: say which files to pass
    assert capsys.readouterr().err == (f"svlora check: error: {tmp_path} is a directory; pass its "
                                       f"manifests, e.g. {tmp_path / '*.jsonl'}\n")
