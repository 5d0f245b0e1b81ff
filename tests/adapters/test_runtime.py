import json
import shutil
from pathlib import Path

import pytest

from svlora.label_schema import read_schema_file
import torch

from svlora.adapters import export_adapter, load_model
from svlora.decoding import inference_log_probs
from svlora.errors import AdapterError
from svlora.features import pad_features, row_features
from svlora.manifest import read_manifest
from svlora.model import stdout_to_stderr


def test_merged_outputs_equal_attached_outputs(quickstart_dir):
    rows = read_manifest(quickstart_dir / "clinic/test.jsonl")[:8]
    attached = load_model(str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter"))
    merged = load_model(str(quickstart_dir / "export/merged"))
    features, lengths = pad_features(row_features(attached.base, rows))
    with torch.inference_mode():
        a, _ = inference_log_probs(attached.base.model, features, lengths)
        m, _ = inference_log_probs(merged.base.model, features, lengths)
        base_only = load_model(str(quickstart_dir / "tiny-base"))
        b, _ = inference_log_probs(base_only.base.model, features, lengths)
    assert torch.allclose(a, m, rtol=1e-5, atol=1e-3)  # float rounding: W x + B A x vs (W + BA) x
    assert not torch.allclose(a, b, atol=1e-2)  # the adapter really changes the outputs
    paths = [r.source for r in rows]
    assert [r["raw"] for r in attached.transcribe(paths)] == [r["raw"] for r in merged.transcribe(paths)]


def test_funasr_automodel_loads_the_merged_dir_and_agrees(quickstart_dir):
    import torch

    threads = torch.get_num_threads()
    with stdout_to_stderr():
        from funasr import AutoModel
        # FunASR sets torch's thread count for the whole process (ncpu): keep ours
        model = AutoModel(model=str(quickstart_dir / "export/merged"), disable_update=True,
                          device="cpu", frontend_conf={"dither": 0.0}, ncpu=threads)
    rows = read_manifest(quickstart_dir / "clinic/test.jsonl")
    ours = load_model(str(quickstart_dir / "tiny-base"), str(quickstart_dir / "clinic-run/adapter"))
    theirs = [r["text"] for r in model.generate(input=[row.source for row in rows])]
    # plain FunASR spells the schema's new class by its spare token (as the README says); with
    # the merged dir's labels.json applied, its outputs are svlora's
    labels = read_schema_file(quickstart_dir / "export/merged/labels.json")
    hesitant = [row.emo_target == "<|HESITANT|>" for row in rows]
    assert any("<|SPECIAL_TOKEN_15|>" in t for t, h in zip(theirs, hesitant) if h)
    assert [labels.rename(t) for t in theirs] == [r["raw"] for r in ours.transcribe([row.source for row in rows])]


def test_adapter_for_another_base_is_refused_unless_overridden(quickstart_dir):
    adapter = str(quickstart_dir / "clinic-run/adapter")
    with pytest.raises(AdapterError, match="trained on base .* --allow-base-mismatch"):
        load_model(str(quickstart_dir / "tiny-random"), adapter)
    runtime = load_model(str(quickstart_dir / "tiny-random"), adapter, allow_base_mismatch=True)
    assert runtime.adapter_path == adapter


def test_exported_package_is_self_describing_and_loads(quickstart_dir, tmp_path):
    package = quickstart_dir / "export/adapter"
    assert {p.name for p in package.iterdir()} >= {"adapter_config.json",
                                                   "adapter_model.safetensors", "svlora.json",
                                                   "README.md"}
    meta = json.loads((package / "svlora.json").read_text())
    assert meta["format"] == "svlora-adapter" and len(meta["base_sha256"]) == 64
    moved = shutil.copytree(package, tmp_path / "moved")  # works from anywhere
    runtime = load_model(str(quickstart_dir / "tiny-base"), str(moved))
    assert runtime.adapter_meta["val_metrics"] == meta["val_metrics"]


def test_a_broken_adapter_dir_names_what_is_missing(quickstart_dir, tmp_path):
    broken = shutil.copytree(quickstart_dir / "export/adapter", tmp_path / "broken")
    (broken / "svlora.json").unlink()
    with pytest.raises(AdapterError, match="missing svlora.json"):
        load_model(str(quickstart_dir / "tiny-base"), str(broken))
    with pytest.raises(AdapterError, match="missing"):
        export_adapter(str(quickstart_dir / "tiny-base"), str(broken), str(tmp_path / "out"))


def test_a_bad_file_becomes_an_error_record_in_order_and_the_rest_go_on(tiny_model_dir, tmp_path):
    from svlora.decoding import iter_transcribe_files
    from svlora.errors import AudioFileError
    from tests.conftest import write_tone

    first, third = write_tone(tmp_path / "a.wav"), write_tone(tmp_path / "c.wav", frequency=330)
    broken = tmp_path / "b.wav"
    broken.write_bytes(b"RIFF" + b"\0" * 40)
    runtime = load_model(str(tiny_model_dir))
    paths = [str(first), str(broken), str(third)]
    with pytest.raises(AudioFileError, match="b.wav"):
        runtime.transcribe(paths)
    results = list(runtime.iter_transcribe(paths, keep_going=True))
    assert [r["path"] for r in results] == paths
    assert set(results[1]) == {"path", "error"} and results[1]["error"]
    alone = runtime.transcribe([third])[0]
    assert results[2]["raw"] == alone["raw"] and "error" not in results[0]
    # results stream group by group, the next files read a few ahead (not all): the first comes
    # out before the last file is read
    many = paths + [str(write_tone(tmp_path / f"more{i}.wav", frequency=400 + 20 * i)) for i in range(8)]
    stream = iter_transcribe_files(runtime.base, many, pending_seconds=0.5, keep_going=True)
    assert next(stream)["path"] == many[0]
    Path(many[-1]).unlink()
    rest = list(stream)
    assert [r["path"] for r in rest] == many[1:]
    assert rest[0]["error"] and rest[-1].get("error") == "not found" and "error" not in rest[-2]


def test_results_carry_the_documented_keys(tiny_model_dir, tmp_path):
    """TranscriptionResult documents what a result holds: nothing more, nothing required missing."""
    from svlora.decoding import SegmentResult, TranscriptionResult
    from tests.conftest import write_tone

    short, long = write_tone(tmp_path / "short.wav"), write_tone(tmp_path / "long.wav", seconds=5)
    runtime = load_model(str(tiny_model_dir))
    whole, cut = runtime.transcribe([short, long], max_segment_seconds=2)
    for result in (whole, cut):
        assert TranscriptionResult.__required_keys__ <= set(result)
        assert set(result) <= set(TranscriptionResult.__annotations__)
    assert "segments" not in whole and cut["segmentation"] in ("vad", "fixed")
    for segment in cut["segments"]:
        assert SegmentResult.__required_keys__ == set(segment)


def test_bf16_stored_weights_decode_as_bf16_autocast_does(trained_dir, monkeypatch):
    """On a bf16 GPU load_model casts the matmul weights to bf16 once (no per-batch copies);
    the outputs must be autocast's over fp32 weights. Checked on the CPU, where both run."""
    import svlora.decoding as decoding
    from svlora.model import store_matmul_weights_in_bf16

    clips = [r.source for r in read_manifest(trained_dir / "clinic/test.jsonl")[:12]]
    runtime = load_model(str(trained_dir / "tiny-base"), adapter=str(trained_dir / "clinic-run/adapter"))
    real_precision = decoding.decoding_precision
    monkeypatch.setattr(decoding, "decoding_precision", lambda device, module=None: "bf16")
    autocast_only = runtime.transcribe(clips)
    monkeypatch.setattr(decoding, "decoding_precision", real_precision)
    fp32 = runtime.transcribe(clips)
    assert store_matmul_weights_in_bf16(runtime.base.model) > 0
    layers = {name: m for name, m in runtime.base.model.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))}
    lora = {name for name in layers if ".lora_" in name}
    assert lora and len(layers) > len(lora)  # the adapter's factors stay fp32 (a later merge adds them in fp32)
    assert all(p.dtype == (torch.float32 if name in lora else torch.bfloat16)
               for name, m in layers.items() for p in m.parameters(recurse=False))
    assert decoding.decoding_precision(runtime.base.device, runtime.base.model) == "bf16"
    stored = runtime.transcribe(clips)
    assert [r["raw"] for r in stored] == [r["raw"] for r in autocast_only]
    for ours, theirs in zip(stored, autocast_only):
        for kind in ("emotion_probs", "event_probs", "language_probs"):
            assert ours[kind] == pytest.approx(theirs[kind], abs=1e-6)
    assert [r["raw"] for r in fp32] != [r["raw"] for r in autocast_only] or \
        any(a["emotion_probs"] != b["emotion_probs"] for a, b in zip(fp32, autocast_only))  # bf16 did run


def test_the_server_decodes_from_bf16_weights_as_load_model_does(trained_dir, monkeypatch):
    """serve's pool loads the base once and attaches adapters later: on a bf16 GPU its matmul
    weights are stored in bf16 at load and an adapter loaded afterwards keeps fp32 factors; the
    outputs, base and adapter, are those of bf16 autocast over fp32 weights."""
    import svlora.decoding as decoding
    import svlora.model as model
    from svlora.adapters.pool import ModelPool, ServeSettings
    from svlora.decoding import prepare_file

    clips = [r.source for r in read_manifest(trained_dir / "clinic/test.jsonl")[:8]]
    runtime = load_model(str(trained_dir / "tiny-base"), adapter=str(trained_dir / "clinic-run/adapter"))
    monkeypatch.setattr(decoding, "decoding_precision", lambda device, module=None: "bf16")
    with_adapter = [r["raw"] for r in runtime.transcribe(clips)]
    with runtime.peft_model.disable_adapter():
        base_only = [r["raw"] for r in runtime.transcribe(clips)]
    monkeypatch.undo()
    monkeypatch.setattr(model, "bf16_device", lambda device: True)  # what a bf16 GPU answers
    pool = ModelPool(ServeSettings(model=str(trained_dir / "tiny-base"),
                                   adapters={"clinic": str(trained_dir / "clinic-run/adapter")}))
    layers = {name: m for name, m in pool.base.model.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))}
    lora = {name for name in layers if ".lora_" in name}
    assert lora and all(p.dtype == (torch.float32 if name in lora else torch.bfloat16)
                        for name, m in layers.items() for p in m.parameters(recurse=False))
    files = [prepare_file(pool.base, clip) for clip in clips]
    served = pool.decode(files + files, ["clinic"] * len(files) + [pool.settings.base_name] * len(files),
                         "auto", "woitn", with_pooled=False)
    assert [r["raw"] for r in served] == with_adapter + base_only
    assert with_adapter != base_only  # the adapter was applied where asked
