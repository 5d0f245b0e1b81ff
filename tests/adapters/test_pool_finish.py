"""The server's post-processing in the decode worker: the cascade of every request in a batch
runs as one forward pass, with the same results as one request at a time. No model needed."""

from svlora.adapters.pool import ModelPool, Route
from svlora.postprocess import result_with_cascade

HAPPY, SAD = "<|HAPPY|>", "<|SAD|>"


class CountingCascade:
    """Decides HAPPY for transcripts with an even length, SAD otherwise; counts its calls."""

    def __init__(self):
        self.calls: list[int] = []
        self.config = type("Config", (), {"heads": {}})()  # no extra heads

    def redecide(self, stage1):
        self.calls.append(len(stage1))
        out = []
        for item in stage1:
            emotion = HAPPY if len(item["text"]) % 2 == 0 else SAD
            probs = {HAPPY: 0.9, SAD: 0.1} if emotion == HAPPY else {HAPPY: 0.2, SAD: 0.8}
            out.append({"emotion": emotion, "emotion_probs": probs,
                        "raw": item["raw"].replace(item["emotion"], emotion)})
        return out


def clip(text, start=None, end=None):
    item = {"raw": f"<|en|><|NEUTRAL|><|Speech|><|woitn|>{text}", "text": text, "language": "<|en|>",
            "emotion": "<|NEUTRAL|>", "event": "<|Speech|>", "itn": "<|woitn|>",
            "emotion_probs": {HAPPY: 0.5, SAD: 0.5}, "pooled": [0.0]}
    return {**item, "start": start, "end": end} if start is not None else {"path": f"{text}.wav", **item}


def long_file():
    segments = [clip("ab", 0.0, 20.0), clip("abc", 20.0, 30.0)]
    return {**clip("ab abc"), "segmentation": "vad", "segments": segments}


def test_one_cascade_pass_per_batch_and_the_same_results_as_one_by_one():
    cascade, other = CountingCascade(), CountingCascade()
    routes = [Route("clinic", cascade=cascade), Route("base"), Route("clinic", cascade=cascade),
              Route("base", cascade=other)]
    results = [clip("ab"), clip("xyz"), long_file(), clip("abcd")]
    finished = ModelPool.finish(routes, results)
    assert cascade.calls == [3] and other.calls == [1]  # 1 clip + 2 segments in one pass
    alone = CountingCascade()
    assert finished[0] == result_with_cascade(alone, clip("ab"))
    assert finished[1] == results[1]  # no post-processing on this route
    assert finished[2] == result_with_cascade(alone, long_file())
    assert finished[3] == result_with_cascade(alone, clip("abcd"))
    assert finished[2]["segments"][0]["emotion"] == HAPPY and finished[2]["segments"][1]["emotion"] == SAD


def test_a_failing_cascade_fails_only_its_own_requests():
    class Broken:
        def redecide(self, stage1):
            raise RuntimeError("head exploded")

    routes = [Route("a", cascade=Broken()), Route("b", cascade=CountingCascade())]
    finished = ModelPool.finish(routes, [clip("ab"), clip("ab")])
    assert isinstance(finished[0], RuntimeError)
    assert finished[1]["emotion"] == HAPPY
