"""`svlora eval` end to end on the trained tiny model: ASR-only data, the per-batch prediction
cache (audio content, adapter identity, resuming an interrupted run), gate messages and the
verdict; arm names and `export --verify` checked before any work."""

import contextlib
import importlib
import io
import json
import shutil
from pathlib import Path

import pytest

from svlora.cli import main
from svlora.manifest import read_manifest, write_manifest
from tests.conftest import write_tone

ab = importlib.import_module("svlora.eval.ab")  # the module (svlora.eval.evaluate is the function)


def small_manifest(trained_dir, tmp_path, clips: int = 6, emotion: bool = True):
    """The first clinic test clips, their audio copied (tests rewrite it); ASR-only with
    emotion=False (emo_target null, as `prepare --no-emotion` writes)."""
    rows = read_manifest(trained_dir / "clinic/test.jsonl")[:clips]
    (tmp_path / "clips").mkdir(exist_ok=True)
    for row in rows:
        copy = tmp_path / "clips" / f"{row.key}.wav"
        shutil.copyfile(row.source, copy)
        row.source = str(copy)
        if not emotion:
            row.emo_target = None
    path = tmp_path / "test.jsonl"
    write_manifest(path, rows)
    shutil.copy(trained_dir / "clinic/labels.json", tmp_path)  # the clinic's label schema
    return path


def eval_arguments(trained_dir, data, out, *extra):
    return ["eval", "--model", str(trained_dir / "tiny-base"), "--data", str(data), "--out",
            str(out), "--resamples", "50", *extra]


def predictions(out) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def decoded_clips(monkeypatch) -> list[int]:
    """Counts the clips decode_features is given, call by call."""
    calls, real = [], ab.decode_features

    def counted(base, features, *args, **kwargs):
        calls.append(len(features))
        return real(base, features, *args, **kwargs)
    monkeypatch.setattr(ab, "decode_features", counted)
    return calls


@pytest.fixture(scope="module")
def asr_only_run(trained_dir, tmp_path_factory):
    """An adapter eval on ASR-only clips with a gate that cannot pass: (exit code, stdout,
    stderr, out dir, manifest)."""
    root = tmp_path_factory.mktemp("asr-only")
    data = small_manifest(trained_dir, root, clips=12, emotion=False)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(eval_arguments(trained_dir, data, root / "out", "--adapter",
                                   str(trained_dir / "clinic-run/adapter"), "--gate", "cer<=-0.9"))
    return code, stdout.getvalue(), stderr.getvalue(), root / "out", data


def test_an_asr_only_eval_writes_every_output(asr_only_run):
    code, _, _, out, data = asr_only_run
    assert code == 2  # the gate, not a crash
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 3 and report["arms"]["adapter"]["emotion_accuracy"] is None
    assert "emotion_accuracy" not in report["delta"] and report["delta"]["cer"] is not None
    changed = report["changed_clips"]["adapter"]
    assert changed["improved"] or changed["regressed"]  # the table that crashed on _tag(None)
    html = (out / "report.html").read_text()
    assert "Most improved clips: adapter" in html and "Most regressed clips: adapter" in html
    # a text-only clip's reference emotion renders as a dash
    first = (changed["improved"] or changed["regressed"])[0]
    assert f"<td>{first['key']}</td><td>{first['audio']}</td><td>{first['reference']}</td><td>–</td>" in html
    assert (out / "report.md").is_file() and len(predictions(out)) == len(read_manifest(data))


def test_a_failed_gate_names_the_metric_its_change_and_the_threshold(asr_only_run):
    _, _, stderr, out, _ = asr_only_run
    cer = json.loads((out / "report.json").read_text())["delta"]["cer"]
    assert [line for line in stderr.splitlines() if "gate" in line] == [
        f"gate failed: adapter: cer changed by {cer:+.4f}, above the threshold -0.9 (--gate cer<=-0.9)"]


def test_the_verdict_is_one_line_per_arm_in_the_terminal_and_the_html(asr_only_run):
    _, stdout, _, out, _ = asr_only_run
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Each arm vs base"))
    assert lines[start + 1].startswith("adapter: text ") and lines[start + 2] == "Gates: FAILED."
    html = (out / "report.html").read_text()
    assert html.count("<div class='verdict-line'>") == 3
    assert "<div class='verdict-line'>adapter: text " in html


def test_the_cache_sees_the_audio_not_the_path(trained_dir, tmp_path, monkeypatch):
    data = small_manifest(trained_dir, tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: all neutral\n    then: {emotion: NEUTRAL}\n")
    arguments = eval_arguments(trained_dir, data, tmp_path / "out", "--max-seconds-per-batch", "1",
                               "--cache-dir", str(tmp_path / "cache"), "--rules-arm",
                               f"base+rules=base:{rules}")
    assert main(arguments) == 0
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert "adapter" not in report and "delta" not in report  # a rules arm is not `adapter`
    before = [p["base"]["raw"] for p in predictions(tmp_path / "out")]
    rows = read_manifest(data)
    other = next(i for i, raw in enumerate(before) if raw != before[0])
    # clip 0 rewritten in place with clip `other`'s audio: its prediction is that clip's
    shutil.copyfile(rows[other].source, rows[0].source)
    calls = decoded_clips(monkeypatch)
    assert main(arguments) == 0
    assert [p["base"]["raw"] for p in predictions(tmp_path / "out")] == [before[other]] + before[1:]
    assert calls == []  # that audio's batch was decoded in the first run
    # new audio: that one clip is decoded (one clip per batch here), the rest come from the cache
    write_tone(Path(rows[0].source), seconds=1.0, frequency=523.0)
    assert main(arguments) == 0
    assert calls == [1]


def test_an_adapters_config_is_part_of_its_identity(trained_dir, tmp_path, monkeypatch):
    data = small_manifest(trained_dir, tmp_path)
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_dir / "clinic-run/adapter", adapter)
    arguments = eval_arguments(trained_dir, data, tmp_path / "out", "--adapter", str(adapter),
                               "--cache-dir", str(tmp_path / "cache"))
    assert main(arguments) == 0
    trained = predictions(tmp_path / "out")
    assert any(p["adapter"]["raw"] != p["base"]["raw"] for p in trained)
    # lora_alpha 0 scales the LoRA update to nothing: the arm must now decode as the base does
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 0}))
    calls = decoded_clips(monkeypatch)
    assert main(arguments) == 0
    assert sum(calls) == len(trained)  # the adapter arm again, the base from the cache
    # alpha 0 silences the LoRA layers (the schema's trained CTC head copy stays): other outputs
    assert [p["adapter"]["raw"] for p in predictions(tmp_path / "out")] != \
        [p["adapter"]["raw"] for p in trained]


def test_an_interrupted_eval_resumes_at_the_batch_it_was_decoding(trained_dir, tmp_path,
                                                                  monkeypatch):
    data = small_manifest(trained_dir, tmp_path)
    arguments = eval_arguments(trained_dir, data, tmp_path / "out", "--max-seconds-per-batch", "1")
    real, seen = ab.decode_features, []

    def dies_after_one_batch(base, features, *args, **kwargs):
        if seen:
            raise KeyboardInterrupt  # as Ctrl-C would
        seen.append([f.clone() for f in features])
        return real(base, features, *args, **kwargs)
    monkeypatch.setattr(ab, "decode_features", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        main(arguments)
    assert len(list((tmp_path / "out/cache").glob("*.json"))) == 1  # the finished batch, stored
    again = []

    def recorded(base, features, *args, **kwargs):
        again.append(features)
        return real(base, features, *args, **kwargs)
    monkeypatch.setattr(ab, "decode_features", recorded)
    assert main(arguments) == 0
    clips = len(read_manifest(data))
    assert sum(len(f) for f in again) == clips - 1
    [[first]] = seen
    assert not any(first.shape == f.shape and bool((first == f).all()) for batch in again for f in batch)
    assert len(predictions(tmp_path / "out")) == clips


@pytest.mark.parametrize("flag, spec", [
    ("--adapter", "runs/a=x"), ("--adapter", "v1.2=x"), ("--adapter", "key=x"),
    ("--rules-arm", "a.b=base:rules.yaml"), ("--cascade-arm", "../up=base:cascade")])
def test_arm_names_that_cannot_be_file_names_are_one_line_errors(tmp_path, capsys, flag, spec):
    # the model does not exist: the name is refused before anything loads
    assert main(["eval", "--model", str(tmp_path / "none"), "--data", str(tmp_path / "t.jsonl"),
                 "--out", str(tmp_path / "out"), flag, spec]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot name a file" in line and spec.split("=")[0] in line
    assert not (tmp_path / "out").exists()


def test_export_verify_checks_the_manifest_before_exporting(trained_dir, tmp_path, capsys):
    data = small_manifest(trained_dir, tmp_path, clips=3)
    missing = read_manifest(data)[1]
    shutil.move(missing.source, tmp_path / "moved.wav")
    out = tmp_path / "onnx"
    assert main(["export", "--model", str(trained_dir / "tiny-base"), "--adapter",
                 str(trained_dir / "clinic-run/adapter"), "--out", str(out), "--onnx", "sherpa",
                 "--verify", str(data)]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"clip {missing.key} ({missing.source}): not found" in line
    assert not out.exists()  # nothing exported, so no unverified model is left behind
    assert main(["export", "--model", str(trained_dir / "tiny-base"), "--adapter",
                 str(trained_dir / "clinic-run/adapter"), "--out", str(out), "--onnx", "sherpa",
                 "--verify", str(tmp_path / "nowhere.jsonl")]) == 1
    assert "manifest not found" in capsys.readouterr().err and not out.exists()


def test_eval_on_a_bf16_gpu_decodes_from_bf16_weights_as_autocast_does(trained_dir, tmp_path,
                                                                        monkeypatch):
    """eval only decodes: on a bf16 GPU the base's matmul weights are stored in bf16 at load
    (adapters attached later keep fp32 factors). Its predictions must be those of bf16 autocast
    over fp32 weights; both run here on the CPU."""
    import svlora.decoding as decoding
    import svlora.model as model

    data = small_manifest(trained_dir, tmp_path, clips=8)
    adapter = str(trained_dir / "clinic-run/adapter")
    real_precision = decoding.decoding_precision
    monkeypatch.setattr(decoding, "decoding_precision", lambda device, module=None: "bf16")
    monkeypatch.setattr(ab, "decoding_precision", lambda device, module=None: "bf16")
    assert main(eval_arguments(trained_dir, data, tmp_path / "autocast", "--adapter", adapter)) == 0
    monkeypatch.setattr(decoding, "decoding_precision", real_precision)
    monkeypatch.setattr(ab, "decoding_precision", real_precision)
    monkeypatch.setattr(model, "bf16_device", lambda device: True)  # what a bf16 GPU answers
    cast, real_cast = [], model.store_matmul_weights_in_bf16
    monkeypatch.setattr(model, "store_matmul_weights_in_bf16", lambda module: cast.append(real_cast(module)))
    assert main(eval_arguments(trained_dir, data, tmp_path / "stored", "--adapter", adapter)) == 0
    assert len(cast) == 1 and cast[0] > 0
    autocast, stored = predictions(tmp_path / "autocast"), predictions(tmp_path / "stored")
    assert [(p["base"]["raw"], p["adapter"]["raw"]) for p in stored] == \
        [(p["base"]["raw"], p["adapter"]["raw"]) for p in autocast]
    assert any(p["base"]["raw"] != p["adapter"]["raw"] for p in stored)
