"""The cascade: trained on stage 1's outputs, saved, loaded only onto the stage 1 it was trained
on, used at inference and as an eval arm; with no text model, hashed n-grams, or a (tiny,
randomly initialised) Hugging Face BERT as its text branch."""

import json
import shutil

import pytest

from svlora.adapters import load_model
from svlora.cli import main
from svlora.errors import AdapterError
from svlora.postprocess import load_cascade, train_cascade
from svlora.postprocess.cascade import CONFIG


@pytest.fixture(scope="module")
def hashed_cascade(trained_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade") / "hashed"
    config = train_cascade(str(trained_dir / "tiny-base"), str(trained_dir / "clinic/train.jsonl"),
                           str(trained_dir / "clinic/val.jsonl"), str(out), log=lambda m: None)
    return out, config


def test_train_save_load_and_refuse_another_stage1(trained_dir, hashed_cascade):
    out, config = hashed_cascade
    saved = json.loads((out / CONFIG).read_text())
    assert saved["schema"] == "svlora-cascade" and saved["adapter_sha256"] is None
    assert set(saved["classes"]) == {"<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|HESITANT|>"}
    assert 0 <= saved["trained"]["val_ua"] <= 1 and saved["trained"]["seconds"] > 0
    from svlora.model import weights_sha256

    base_sha = weights_sha256(trained_dir / "tiny-base")
    load_cascade(out, base_sha, None)
    with pytest.raises(AdapterError, match="trained on stage 1 base"):
        load_cascade(out, base_sha, "f" * 64)  # the same base with an adapter is another stage 1
    with pytest.raises(AdapterError, match="trained on stage 1 base"):
        load_cascade(out, "0" * 64, None)


def test_cascade_at_inference_and_as_an_eval_arm(trained_dir, hashed_cascade, tmp_path, capsys):
    out, _ = hashed_cascade
    clips = [r["source"] for r in map(json.loads, (trained_dir / "clinic/test.jsonl").read_text().splitlines()[:5])]
    results = load_model(str(trained_dir / "tiny-base"), cascade=str(out)).transcribe(clips)
    for result in results:
        assert result["emotion"] == max(result["emotion_probs"], key=result["emotion_probs"].get)
        assert "pooled" not in result and "stage1_emotion" in result
    assert main(["eval", "--model", str(trained_dir / "tiny-base"), "--data",
                 str(trained_dir / "clinic/test.jsonl"), "--out", str(tmp_path / "r"),
                 "--cascade-arm", f"base+cascade=base:{out}", "--resamples", "100"]) == 0
    report = json.loads((tmp_path / "r/report.json").read_text())
    assert report["arm_names"] == ["base", "base+cascade"]
    assert "emotion_ua" in report["deltas"]["base+cascade"]
    # the text is stage 1's: a cascade only re-decides the emotion
    assert report["arms"]["base+cascade"]["cer"] == report["arms"]["base"]["cer"]
    assert main(["transcribe", "--model", str(trained_dir / "tiny-base"), "--adapter",
                 str(trained_dir / "clinic-run/adapter"), "--cascade", str(out), clips[0]]) == 1
    assert "trained on stage 1 base" in capsys.readouterr().err


def tiny_bert(directory):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=4)
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("text", ["none", "bert"])
def test_text_branches(trained_dir, tmp_path, text):
    branch = str(tiny_bert(tmp_path / "bert")) if text == "bert" else "none"
    config = train_cascade(str(trained_dir / "tiny-base"), str(trained_dir / "clinic/train.jsonl"),
                           str(trained_dir / "clinic/val.jsonl"), str(tmp_path / "c"),
                           text=branch, hidden=0, log=lambda m: None)
    assert config.feature_dims["text"] == (16 if text == "bert" else 0)
    loaded = load_model(str(trained_dir / "tiny-base"), cascade=str(tmp_path / "c"))
    assert loaded.transcribe([r["source"] for r in map(json.loads, (trained_dir / "clinic/test.jsonl").read_text().splitlines()[:2])])


def test_event_head_and_stage1_cache(trained_dir, tmp_path, monkeypatch):
    """With more than one event labelled, the cascade also predicts the event; a second
    training run reads stage 1's outputs from the cache and decodes nothing."""
    import svlora.decoding as decoding

    for split in ("train", "val"):
        rows = [json.loads(line) for line in (trained_dir / f"clinic/{split}.jsonl").read_text().splitlines()]
        for i, row in enumerate(rows):
            row["event_target"] = "<|Laughter|>" if i % 2 else "<|Speech|>"
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(trained_dir / "clinic/labels.json", tmp_path)  # the clinic's label schema
    arguments = (str(trained_dir / "tiny-base"), str(tmp_path / "train.jsonl"),
                 str(tmp_path / "val.jsonl"))
    config = train_cascade(*arguments, str(tmp_path / "c1"), log=lambda m: None)
    assert config.event_classes == ["<|Speech|>", "<|Laughter|>"]
    from svlora.model import weights_sha256

    cascade = load_cascade(tmp_path / "c1", weights_sha256(trained_dir / "tiny-base"), None)
    emotions, events = cascade.predict_both([{"pooled": [0.0] * config.feature_dims["acoustic"],
                                              "emotion_probs": {}, "text": "hello"}])
    assert set(events[0]) == {"<|Speech|>", "<|Laughter|>"} and sum(events[0].values()) == pytest.approx(1, abs=1e-4)

    def no_decoding(*args, **kwargs):
        raise AssertionError("stage 1 decoded although its outputs were cached")
    monkeypatch.setattr(decoding, "decode_features", no_decoding)
    again = train_cascade(*arguments, str(tmp_path / "c2"), hidden=0, log=lambda m: None)
    assert again.trained["feature_seconds"] < config.trained["feature_seconds"] + 5


def test_a_cascade_is_refused_when_only_the_adapters_scale_changed(trained_dir, tmp_path):
    """An adapter is its weights and adapter_config.json: lora_alpha alone changes stage 1's
    outputs, so a cascade trained on the adapter must not load onto the rescaled copy."""
    import shutil

    tiny, adapter, val = (str(trained_dir / "tiny-base"), trained_dir / "clinic-run/adapter",
                          str(trained_dir / "clinic/val.jsonl"))
    train_cascade(tiny, val, val, str(tmp_path / "c"), adapter=str(adapter), hidden=0,
                  log=lambda m: None)
    rescaled = tmp_path / "rescaled"
    shutil.copytree(adapter, rescaled)
    config = json.loads((rescaled / "adapter_config.json").read_text())
    (rescaled / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": config["lora_alpha"] * 2}))
    assert load_model(tiny, str(adapter), cascade=str(tmp_path / "c")).cascade is not None
    with pytest.raises(AdapterError, match="trained on stage 1 base .* adapter_config.json"):
        load_model(tiny, str(rescaled), cascade=str(tmp_path / "c"))


def test_a_cascade_of_another_label_schema_is_refused_naming_both(trained_dir, hashed_cascade):
    """Trained on the clinic's labels (HESITANT), refused by a run in SenseVoice's: its output
    classes mean other things there."""
    from svlora.label_schema import DEFAULT_SCHEMA, schema_beside
    from svlora.model import weights_sha256

    out, config = hashed_cascade
    sha = weights_sha256(trained_dir / "tiny-base")
    clinic = schema_beside(trained_dir / "clinic/train.jsonl")
    assert load_cascade(out, sha, None, labels=clinic).config.label_schema == clinic
    with pytest.raises(AdapterError, match=r"another label schema than this run's \(its emotion "
                       r"classes NEUTRAL, HAPPY, SAD, ANGRY, HESITANT; this run's HAPPY, SAD"):
        load_cascade(out, sha, None, labels=DEFAULT_SCHEMA)
