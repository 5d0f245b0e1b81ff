"""The user's label schema: resolution onto spare tokens and query rows, validation everywhere
a label is read, and the refusals (undeclared labels, bad label maps, schema mismatches)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from svlora.errors import AdapterError, ManifestError, ModelError
from svlora.label_schema import (DEFAULT_SCHEMA, SPARE_QUERY_ROWS, SPARE_TOKENS, LabelSchema,
                                 load_schema, resolve_schema, schema_beside)
from svlora.labels import EMOTION_TAGS, LANGUAGE_TAGS, SPECIAL_TOKENS_FROM_24884, FIRST_SPECIAL_ID
from svlora.manifest import read_manifest

CLINIC = {"emotion": ["neutral", "HAPPY", "SAD", "ANGRY", "STRESSED"],
          "language": ["zh", "en", "minnan"], "heads": {"role": ["teacher", "student"]}}


def test_sensevoice_names_keep_their_tokens_and_new_names_get_spare_ones():
    schema = resolve_schema(CLINIC, "labels.yaml")
    assert schema.emotion["<|NEUTRAL|>"] == EMOTION_TAGS["<|NEUTRAL|>"]  # any case
    stressed, minnan = schema.emotion["<|STRESSED|>"], schema.language["<|minnan|>"]
    spelling = {FIRST_SPECIAL_ID + i: t for i, t in enumerate(SPECIAL_TOKENS_FROM_24884)}
    # the reserved tokens SenseVoice's maintainers leave for extensions, never a used one
    assert spelling[stressed] == "<|SPECIAL_TOKEN_15|>" and spelling[minnan] == "<|SPECIAL_TOKEN_16|>"
    assert schema.query_rows["minnan"] in SPARE_QUERY_ROWS
    assert "<|nospeech|>" in schema.language and "<|yue|>" not in schema.language
    # SenseVoice's tags the schema leaves out are banned at decoding; the default bans nothing
    assert EMOTION_TAGS["<|FEARFUL|>"] in schema.banned_ids()
    assert LANGUAGE_TAGS["<|ja|>"] in schema.banned_ids() and DEFAULT_SCHEMA.banned_ids() == []
    assert schema.rename("<|SPECIAL_TOKEN_16|><|SPECIAL_TOKEN_15|><|Speech|><|woitn|>hi") == \
        "<|minnan|><|STRESSED|><|Speech|><|woitn|>hi"
    assert schema.split("<|minnan|><|STRESSED|><|Speech|><|woitn|>hi")["emotion"] == "<|STRESSED|>"
    assert schema.decode_languages == ("auto", "zh", "en", "minnan")
    assert LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_an_earlier_labels_json_keeps_every_id_when_classes_are_added_or_reordered():
    first = resolve_schema(CLINIC, "a.yaml")
    grown = resolve_schema({**CLINIC, "emotion": ["HESITANT", "STRESSED", "neutral"],
                            "language": ["wuyu", "minnan", "en"]}, "b.yaml", pinned=first)
    assert grown.emotion["<|STRESSED|>"] == first.emotion["<|STRESSED|>"]
    assert grown.language["<|minnan|>"] == first.language["<|minnan|>"]
    assert grown.query_rows["minnan"] == first.query_rows["minnan"]
    taken = set(first.new_tags().values())
    assert grown.emotion["<|HESITANT|>"] not in taken and grown.language["<|wuyu|>"] not in taken


def test_sensevoices_old_adapter_vocabulary_reads_as_the_default_schema():
    old = {"language": LANGUAGE_TAGS, "emotion": EMOTION_TAGS,
           "event": DEFAULT_SCHEMA.event, "itn": {"<|withitn|>": 25016, "<|woitn|>": 25017}}
    assert LabelSchema.from_dict(old).is_default


@pytest.mark.parametrize("declared, message", [
    ({"emotion": ["HAPPY", "happy"]}, "listed twice"),
    ({"emotion": ["CALM"], "event": ["CALM"]}, "declared twice"),
    ({"emotions": ["HAPPY"]}, "unknown key 'emotions'"),
    ({"emotion": ["bad name"]}, "is not a class name"),
    ({"emotion": [f"E{i}" for i in range(len(SPARE_TOKENS) + 1)]}, "spare tokens"),
    ({"language": [f"l{i}" for i in range(len(SPARE_QUERY_ROWS) + 1)]}, "unused rows"),
    ({"heads": {"role": ["teacher"]}}, "at least two labels"),
    ({"heads": {"emotion": ["a", "b"]}}, "cannot name a head"),
])
def test_a_bad_declaration_is_one_error_naming_the_file(declared, message):
    with pytest.raises(ManifestError, match=message) as error:
        resolve_schema(declared, "labels.yaml")
    assert str(error.value).startswith("labels.yaml") and "\n" not in str(error.value)


def test_a_resolved_schema_with_a_foreign_token_is_refused(tmp_path):
    data = resolve_schema(CLINIC, "x").to_dict()
    data["emotion"]["<|STRESSED|>"] = EMOTION_TAGS["<|SAD|>"]  # a token SenseVoice uses
    (tmp_path / "labels.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="share token|neither"):
        load_schema(tmp_path / "labels.json")


def run_cli(*arguments) -> tuple[int, str, str]:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "svlora.cli", *arguments], capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def stressed_corpus(tmp_path_factory):
    """A CSV with a class SenseVoice lacks, a role column, one undeclared label and one
    undeclared role, and its labels.yaml."""
    import numpy as np
    import soundfile as sf

    root = tmp_path_factory.mktemp("stressed")
    rows = ["audio,text,emotion,language,speaker,role"]
    emotions = ["stressed", "neutral", "happy", "stressed"] * 6 + ["bored", "neutral"]
    for index, emotion in enumerate(emotions):
        tone = 0.2 * np.sin(2 * np.pi * (200 + 7 * index) * np.arange(16000) / 16000)
        sf.write(root / f"c{index}.wav", tone.astype(np.float32), 16000)
        role = "nurse" if index == len(emotions) - 1 else ("teacher", "student")[index % 2]
        rows.append(f"c{index}.wav,word {index},{emotion},en,s{index % 5},{role}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    (root / "labels.yaml").write_text("emotion: [NEUTRAL, HAPPY, STRESSED]\n"
                                      "heads: {role: [teacher, student]}\n")
    return root


def test_prepare_accepts_declared_labels_rejects_others_by_row_and_writes_the_schema(stressed_corpus):
    out = stressed_corpus / "out"
    code, _, stderr = run_cli("prepare", str(stressed_corpus / "data.csv"), "--format", "csv",
                              "--out", str(out), "--labels", str(stressed_corpus / "labels.yaml"),
                              "--split-by", "speaker")
    assert code == 0, stderr
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {r["row"].rsplit(":", 1)[1]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == {"26", "27"}  # the bored clip, the nurse clip
    assert "'bored': not declared in --labels (NEUTRAL, HAPPY, STRESSED)" in reasons["26"]
    assert "unknown role 'nurse'" in reasons["27"]
    schema = schema_beside(out / "train.jsonl")
    assert "<|STRESSED|>" in schema.emotion and schema.heads == {"role": ("teacher", "student")}
    rows = [r for split in ("train", "val", "test") for r in read_manifest(out / f"{split}.jsonl")]
    assert {r.emo_target for r in rows} == {"<|STRESSED|>", "<|NEUTRAL|>", "<|HAPPY|>"}
    assert {r.head("role") for r in rows} == {"teacher", "student"}
    # the same manifest read as SenseVoice's vocabulary is an error naming file:line
    with pytest.raises(ManifestError, match=r"train\.jsonl:\d+: (emo_target='<\|STRESSED\|>' is not a "
                       r"SenseVoice tag|head 'role' is not in the label schema)"):
        read_manifest(out / "train.jsonl", DEFAULT_SCHEMA)
    code, stdout, _ = run_cli("check", "--no-audio", str(out / "train.jsonl"))
    assert code == 0, stdout


def test_a_label_map_typo_names_the_file_and_the_key(stressed_corpus, tmp_path):
    label_map = tmp_path / "map.yaml"
    label_map.write_text("calm: NUETRAL\n")
    code, stdout, stderr = run_cli("prepare", str(stressed_corpus / "data.csv"), "--format", "csv",
                                   "--out", str(tmp_path / "out"), "--label-map", str(label_map),
                                   "--labels", str(stressed_corpus / "labels.yaml"))
    assert code == 1 and stdout == ""
    assert stderr.strip().count("\n") == 0
    assert f"--label-map {label_map}: calm: 'NUETRAL' is not an emotion of --labels" in stderr


def test_check_validates_against_the_schema(stressed_corpus, tmp_path):
    manifest = tmp_path / "m.jsonl"
    row = json.loads((stressed_corpus / "out" / "train.jsonl").read_text().splitlines()[0])
    manifest.write_text(json.dumps({**row, "emo_target": "<|SAD|>"}) + "\n")
    code, stdout, _ = run_cli("check", "--no-audio", str(manifest), "--labels",
                              str(stressed_corpus / "labels.yaml"))
    assert code == 1 and f"{manifest}:1: error: emo_target='<|SAD|>' is not a label schema tag" in stdout


def test_decoding_speaks_the_schema(tiny_model_dir):
    """Random features through a random tiny model: no left-out SenseVoice tag is ever emitted,
    spare tokens come out as the user's names, distributions cover the schema's classes."""
    from svlora.decoding import decode_features
    from svlora.model import load_base_model

    base = load_base_model(str(tiny_model_dir))
    schema = resolve_schema(CLINIC, "labels.yaml")
    base.use_labels(schema)
    torch.manual_seed(0)
    unused_spare = max(SPARE_TOKENS.values())  # a spare token this schema does not use
    with torch.no_grad():  # make the spare STRESSED row win at the emotion frame, and an unused
        base.model.ctc.ctc_lo.bias[schema.emotion["<|STRESSED|>"]] += 50.0  # spare row everywhere
        base.model.ctc.ctc_lo.bias[unused_spare] += 100.0
    decoded = decode_features(base, [torch.randn(40, 560) for _ in range(6)])
    banned = [t for kind in ("emotion", "event", "language")
              for t in DEFAULT_SCHEMA.tags(kind) if t not in schema.tags(kind)]
    for output in decoded:
        assert "SPECIAL_TOKEN" not in output.raw and not any(t in output.raw for t in banned)
        assert list(output.emotion_probs) == list(schema.emotion)
        assert list(output.language_probs) == list(schema.language)
        assert schema.split(output.raw)["emotion"] == "<|STRESSED|>"
    assert base.target_ids("a", "<|minnan|>", "<|STRESSED|>", "<|Speech|>", "<|woitn|>")[:2] == \
        [schema.language["<|minnan|>"], schema.emotion["<|STRESSED|>"]]
    assert base.model.lid_dict["minnan"] == schema.query_rows["minnan"]


def test_an_adapter_of_another_schema_is_refused_in_one_line(trained_dir, tmp_path):
    from svlora.adapters import load_model
    from svlora.eval import evaluate

    adapter = tmp_path / "adapter"
    shutil.copytree(trained_dir / "clinic-run/adapter", adapter)
    meta = json.loads((adapter / "svlora.json").read_text())
    meta["labels"] = DEFAULT_SCHEMA.to_dict()
    (adapter / "svlora.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="another label schema") as error:
        evaluate(str(trained_dir / "tiny-base"), str(trained_dir / "clinic/test.jsonl"),
                 str(tmp_path / "report"), adapters=[str(adapter)])
    assert "\n" not in str(error.value)
    assert "this run's NEUTRAL, HAPPY, SAD, ANGRY, HESITANT" in str(error.value)
    # a merged export of the clinic adapter carries its labels; an adapter of other labels is refused
    merged = tmp_path / "merged"
    code, _, stderr = run_cli("export", "--model", str(trained_dir / "tiny-base"), "--adapter",
                              str(trained_dir / "clinic-run/adapter"), "--out", str(merged), "--merge")
    assert code == 0, stderr
    assert load_model(str(merged)).base.labels == schema_beside(trained_dir / "clinic/test.jsonl")
    # the merged dir decodes into its labels: scoring it on SenseVoice's is refused, not mislabelled
    with pytest.raises(ModelError, match="decodes into its own label schema"):
        evaluate(str(merged), str(trained_dir / "general/test.jsonl"), str(tmp_path / "general"))
    clip = read_manifest(trained_dir / "clinic/test.jsonl")[0].source
    code, stdout, stderr = run_cli("transcribe", "--model", str(merged), "--adapter", str(adapter), clip)
    assert code == 1 and "another label schema" in stderr and stderr.strip().count("\n") <= 2


def test_the_adapter_emits_the_new_class_and_the_base_never_does(trained_dir):
    """Acceptance: on the clinic's HESITANT clips (a class SenseVoice lacks) the adapter says
    HESITANT on most, rarely elsewhere; the base never; the merged model and the server agree."""
    from svlora.adapters import load_model

    rows = read_manifest(trained_dir / "clinic/test.jsonl")
    paths = [r.source for r in rows]
    hesitant = [r.emo_target == "<|HESITANT|>" for r in rows]
    adapter = load_model(str(trained_dir / "tiny-base"), str(trained_dir / "clinic-run/adapter"))
    said = [r["emotion"] == "<|HESITANT|>" for r in adapter.transcribe(paths)]
    hits = sum(s and h for s, h in zip(said, hesitant))
    false_alarms = sum(s and not h for s, h in zip(said, hesitant))
    assert hits >= 0.7 * sum(hesitant) and false_alarms <= 0.1 * (len(rows) - sum(hesitant))
    base = load_model(str(trained_dir / "tiny-base"))
    base.base.use_labels(schema_beside(trained_dir / "clinic/test.jsonl"))
    assert not any(r["emotion"] == "<|HESITANT|>" for r in base.transcribe(paths))
    assert not any("HESITANT" in r["raw"] for r in load_model(str(trained_dir / "tiny-base")).transcribe(paths))


def test_the_server_returns_the_new_class_and_the_cascades_role(trained_dir, tmp_path):
    """Acceptance: a role head trained by the cascade is returned by the server (per clip and in
    verbose_json's segments); the adapter's HESITANT comes back by name."""
    import httpx

    from tests.adapters.test_serve import post, start_server, stop

    cascade = tmp_path / "cascade"
    code, _, stderr = run_cli("cascade", "train", "--model", str(trained_dir / "tiny-base"),
                              "--adapter", str(trained_dir / "clinic-run/adapter"),
                              "--data", str(trained_dir / "clinic/train.jsonl"),
                              "--val", str(trained_dir / "clinic/val.jsonl"), "--out", str(cascade))
    assert code == 0, stderr
    assert json.loads((cascade / "cascade.json").read_text())["heads"] == {"role": ["nurse", "patient"]}
    rows = read_manifest(trained_dir / "clinic/test.jsonl")
    clip = next(r for r in rows if r.emo_target == "<|HESITANT|>")
    process, url = start_server(trained_dir, "--cascade", f"clinic+cascade=clinic:{cascade}")
    try:
        plain = post(url, clip.source).json()
        piped = post(url, clip.source, model="clinic+cascade", response_format="verbose_json").json()
        models = httpx.get(f"{url}/v1/models").json()
    finally:
        stop(process)
    assert plain["emotion"] == "<|HESITANT|>" and "<|HESITANT|>" in plain["emotion_probs"]
    assert "role" not in plain  # only the cascade predicts the head
    assert piped["role"] in ("nurse", "patient") and set(piped["role_probs"]) == {"nurse", "patient"}
    assert piped["segments"][0]["role"] == piped["role"]
    assert {m["id"] for m in models["data"]} >= {"clinic", "clinic+cascade"}


def test_a_new_language_trains_is_selectable_and_its_lid_is_scored(trained_dir, tmp_path):
    """Acceptance: general-domain clips labelled en and clinic clips labelled with a new language
    tag 'clinical' (another channel: a learnable cue); an adapter learns the tag on its spare token
    and query row; eval reports LID accuracy; `--language clinical` decodes with that query."""
    general = read_manifest(trained_dir / "general/train.jsonl")[:80]
    clinic = read_manifest(trained_dir / "clinic/train.jsonl")[:80]
    data = tmp_path / "data.csv"
    lines = ["audio,text,emotion,language,speaker"]
    lines += [f"{r.source},{r.target},{r.emo_target[2:-2]},en,{r.speaker}" for r in general]
    lines += [f"{r.source},{r.target},{r.emo_target[2:-2]},clinical,{r.speaker}" for r in clinic]
    data.write_text("\n".join(lines) + "\n")
    labels = tmp_path / "labels.yaml"
    labels.write_text("emotion: [NEUTRAL, HAPPY, SAD, ANGRY, HESITANT]\nlanguage: [en, clinical]\n")
    out = tmp_path / "prepared"
    code, _, stderr = run_cli("prepare", str(data), "--format", "csv", "--out", str(out),
                              "--labels", str(labels), "--split-by", "none", "--test", "0.25")
    assert code == 0, stderr
    code, stdout, stderr = run_cli(
        "train", "tiny_demo", f"model={trained_dir / 'tiny-base'}", f"out={tmp_path / 'run'}",
        f"data.train={out / 'train.jsonl'}", f"data.val={out / 'val.jsonl'}", "train.max_steps=200")
    assert code == 0, stderr
    assert "also training ctc_head, query_embed" in stdout + stderr
    adapter = tmp_path / "run/adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"] == \
        ["ctc.ctc_lo", "embed"]
    from svlora.eval import evaluate

    report = evaluate(str(trained_dir / "tiny-base"), str(out / "test.jsonl"), str(tmp_path / "report"),
                      adapters=[str(adapter)])
    test_rows = read_manifest(out / "test.jsonl")
    share_clinical = sum(r.text_language == "<|clinical|>" for r in test_rows) / len(test_rows)
    base_lid, adapter_lid = (report["arms"][arm]["language_accuracy"] for arm in ("base", "adapter"))
    assert 0 < share_clinical < 1 and base_lid <= 1 - share_clinical  # the base never says it
    # not 1.0: clinic NEUTRAL speech is lower-pitched by about the channel's shift, so for those
    # clips the channel cue is nearly gone (0.75 on this demo data, whose draws include drug names)
    assert adapter_lid >= 0.7 and adapter_lid >= base_lid + 0.25
    assert "Language-ID accuracy: base" in (tmp_path / "report/report.md").read_text()
    clip = next(r.source for r in test_rows if r.text_language == "<|en|>")
    code, stdout, stderr = run_cli("transcribe", "--model", str(trained_dir / "tiny-base"),
                                   "--adapter", str(adapter), "--language", "clinical", "--json", clip)
    assert code == 0, stderr
    forced = json.loads(stdout.splitlines()[0])
    assert forced["language"] == "<|clinical|>"  # the query decides the tag, as SenseVoice's do
    code, _, stderr = run_cli("transcribe", "--model", str(trained_dir / "tiny-base"), "--language",
                              "clinical", clip)
    assert code == 1 and "language 'clinical': use auto or one of" in stderr
