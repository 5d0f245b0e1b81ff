"""The review queue: what a label would teach orders it, models that disagree on the same
audio lead it, and a noisy stratum cannot fill its top."""

import json
from collections import Counter

from svlora.cli.app import main
from svlora.review import build_queue
from tests.review.conftest import add_capture, response, review


def test_smaller_emotion_margin_ranks_first(capture_dir):
    wide = add_capture(capture_dir, "clinic", response("one", "HAPPY", 0.8, "SAD", 0.1), seed=1)
    narrow = add_capture(capture_dir, "clinic", response("two", "HAPPY", 0.46, "SAD", 0.44), seed=2)
    middle = add_capture(capture_dir, "clinic", response("three", "HAPPY", 0.6, "SAD", 0.3), seed=3)
    queue = build_queue(capture_dir)
    assert [item.capture.id for item in queue] == [narrow.id, middle.id, wide.id]
    assert queue[0].to_dict()["emotion_margin"] == 0.02
    assert queue[0].why == ["emotion margin 0.02 (HAPPY vs SAD)"]


def test_an_unsure_language_or_event_outranks_an_equal_emotion_margin(capture_dir):
    sure = add_capture(capture_dir, "clinic", response("one", "SAD", 0.6, "NEUTRAL", 0.3), seed=1)
    unsure_language = add_capture(capture_dir, "clinic", response(
        "two", "SAD", 0.6, "NEUTRAL", 0.3, p_language=0.5), seed=2)
    unsure_event = add_capture(capture_dir, "clinic", response(
        "three", "SAD", 0.6, "NEUTRAL", 0.3, p_event=0.7), seed=3)
    queue = build_queue(capture_dir)
    assert [item.capture.id for item in queue] == [unsure_language.id, unsure_event.id, sure.id]
    assert "language en 0.50" in queue[0].why and "event Speech 0.70" in queue[1].why


def test_models_that_disagree_on_the_same_audio_come_first_as_one_item(capture_dir):
    uncertain = add_capture(capture_dir, "clinic", response("unsure", "HAPPY", 0.34, "SAD", 0.33), seed=1)
    add_capture(capture_dir, "base", response("good morning", "HAPPY", 0.95, "SAD", 0.01), seed=2)
    adapter = add_capture(capture_dir, "clinic", response("good morning", "SAD", 0.9, "HAPPY", 0.05), seed=2)
    # two models, one answer: no disagreement, and one item for the audio
    add_capture(capture_dir, "base", response("agreed", "ANGRY", 0.9, "SAD", 0.05), seed=3)
    add_capture(capture_dir, "clinic", response("agreed", "ANGRY", 0.85, "SAD", 0.1), seed=3)
    queue = build_queue(capture_dir)
    assert len(queue) == 3  # one item per audio
    assert queue[0].capture.id == adapter.id  # the less sure of the two answers gets the label
    assert queue[0].why[0] == "models disagree: base HAPPY 'good morning'; clinic SAD 'good morning'"
    assert queue[1].capture.id == uncertain.id and not queue[1].disagreement
    assert not queue[2].disagreement and len(queue[2].answers) == 2


def test_different_text_alone_is_a_disagreement(capture_dir):
    add_capture(capture_dir, "clinic", response("metformin", "NEUTRAL", 0.9, "SAD", 0.05), seed=1)
    add_capture(capture_dir, "base", response("met for min", "NEUTRAL", 0.9, "SAD", 0.05), seed=1)
    add_capture(capture_dir, "clinic", response("other", "NEUTRAL", 0.34, "SAD", 0.33), seed=2)
    [first, second] = build_queue(capture_dir)
    assert first.disagreement and not second.disagreement


def test_a_noisy_stratum_cannot_fill_the_top_of_the_queue(capture_dir):
    for seed in range(20):  # a broken model: every answer a coin toss, all NEUTRAL
        add_capture(capture_dir, "noisy", response(f"noise {seed}", "NEUTRAL", 0.3 + seed / 1000, "SAD", 0.29),
                    seed=seed)
    for seed in range(20, 24):
        add_capture(capture_dir, "clinic", response(f"happy {seed}", "HAPPY", 0.7, "SAD", 0.2), seed=seed)
        add_capture(capture_dir, "clinic", response(f"sad {seed}", "SAD", 0.75, "HAPPY", 0.2), seed=seed + 10)
    queue = build_queue(capture_dir)
    by_score = sorted(queue, key=lambda item: -item.score)
    assert {item.capture.model for item in by_score[:6]} == {"noisy"}  # what a plain sort would give
    top = Counter("/".join(item.stratum) for item in queue[:6])
    assert top == {"noisy/NEUTRAL": 2, "clinic/HAPPY": 2, "clinic/SAD": 2}
    assert queue[0].capture.model == "noisy"  # the most uncertain stratum still leads
    assert len(queue) == 28 and Counter(item.capture.model for item in queue)["noisy"] == 20


def test_reviewed_audio_leaves_the_queue_for_every_model(capture_dir):
    base = add_capture(capture_dir, "base", response("hi", "HAPPY", 0.5, "SAD", 0.4), seed=1)
    add_capture(capture_dir, "clinic", response("hi", "SAD", 0.5, "HAPPY", 0.4), seed=1)
    other = add_capture(capture_dir, "clinic", response("bye", "SAD", 0.9, "HAPPY", 0.05), seed=2)
    review(capture_dir, base, emotion="SAD")
    assert [item.capture.id for item in build_queue(capture_dir)] == [other.id]


def test_queue_cli_prints_a_table_or_json_lines_with_a_limit(capture_dir, capsys):
    first = add_capture(capture_dir, "clinic", response("two", "HAPPY", 0.46, "SAD", 0.44), seed=1)
    second = add_capture(capture_dir, "clinic", response("one", "ANGRY", 0.6, "SAD", 0.3), seed=2)
    add_capture(capture_dir, "clinic", response("three", "SAD", 0.9, "HAPPY", 0.05), seed=3)
    assert main(["review", str(capture_dir), "--queue", "--json", "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [first.id, second.id]
    assert lines[0]["prediction"] == {"text": "two", "emotion": "HAPPY", "event": "Speech", "language": "en"}
    assert lines[0]["stratum"] == "clinic/HAPPY" and lines[0]["disagreement"] is None
    assert main(["review", str(capture_dir), "--queue"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "model", "prediction", "score", "why"]
    assert table[1].startswith(first.id) and "HAPPY/Speech/en two" in table[1] and " 1.02 " in table[1]
    assert len(table) == 4


def test_a_capture_of_a_real_decoding_is_queued_and_exported(capture_dir, tiny_model_dir, tmp_path):
    """The response shape comes from the real runtime (what serve's verbose_json returns), not
    from these tests' own helper: the tiny model's answer for one clip."""
    from svlora.adapters import load_model
    from svlora.adapters.serve import tags_body
    from tests.review.conftest import wav_bytes

    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(seed=5, seconds=1.0))
    [result] = load_model(str(tiny_model_dir), device="cpu").transcribe([clip])
    capture = add_capture(capture_dir, "sensevoice-small", {"text": result["text"], **tags_body(result)},
                          seed=5, kind="base", audio=clip.read_bytes())
    [item] = build_queue(capture_dir)
    probabilities = item.prediction.probs["emotion"]
    assert item.capture.id == capture.id and abs(sum(probabilities.values()) - 1) < 1e-3
    assert item.prediction.tags == {kind: (result[kind] or "<||>")[2:-2] or None for kind in ("emotion", "event", "language")}
    assert set(probabilities) == {tag[2:-2] for tag in result["emotion_probs"]}
    assert item.why[0].startswith(f"emotion margin {item.prediction.margin():.2f}")
    assert main(["review", str(capture_dir), "--export-labelstudio", str(tmp_path / "t.json")]) == 0
