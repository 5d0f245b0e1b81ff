"""The server's shared state under real concurrency. The server runs in-process (uvicorn in a
thread, spoken to over loopback HTTP) so that a step can be slowed or broken on purpose: one
Silero VAD used by several threads, racing admin loads, an unload waiting for the requests in
flight, post-processing kept off the event loop, /metrics counting the status actually sent."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import pytest
import soundfile as sf
import uvicorn

import svlora.adapters.pool as pool_module
import svlora.postprocess
from svlora.adapters.pool import ModelPool, ServeSettings
from svlora.adapters.serve import create_app
from svlora.segments import LazyVad, speech_segments
from tests.adapters.test_serve import (TOKEN, adapter_root_for, admin_load, clinic_clips, free_port,
                                       long_uploads, metric, post)


def test_one_vad_segments_four_threads_as_it_segments_each_alone(tmp_path):
    waveforms = [sf.read(path, dtype="float32")[0] for path in long_uploads(tmp_path)]
    vad = LazyVad()
    alone = [speech_segments(waveform, 10.0, vad()) for waveform in waveforms]
    assert all(how == "vad" and len(segments) > 3 for segments, how in alone)
    start = threading.Barrier(len(waveforms))

    def segment(waveform):
        start.wait()
        return speech_segments(waveform, 10.0, vad())

    for _ in range(2):  # one shared model state: a SIGSEGV (or wrong spans) in the first round
        with ThreadPoolExecutor(len(waveforms)) as pool:
            assert list(pool.map(segment, waveforms)) == alone


@dataclass
class Live:
    url: str
    pool: ModelPool


@pytest.fixture(scope="module")
def live(trained_dir, tmp_path_factory):
    """A server with the clinic adapter, a rules pipeline on the base ("slow") and
    --max-adapters 1, in this process."""
    root = adapter_root_for(trained_dir, tmp_path_factory.mktemp("adapter-root"))
    settings = ServeSettings(model=str(trained_dir / "tiny-base"),
                             adapters={"clinic": str(trained_dir / "clinic-run/adapter")},
                             rules={"slow": ("sensevoice-small", "soft_particles")},
                             adapter_root=str(root), admin_token=TOKEN, max_adapters=1)
    app = create_app(ModelPool(settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.05)
    yield Live(f"http://127.0.0.1:{server.config.port}", app.state.pool)
    server.should_exit = True
    thread.join(timeout=30)


def loaded_adapters(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"] if m["kind"] == "adapter"]


def test_racing_admin_loads_one_wins_and_the_rest_get_409(live, monkeypatch, trained_dir):
    real_inject = pool_module.inject_adapter

    def slow_inject(*args, **kwargs):
        time.sleep(0.5)  # the other loads arrive while the first one is still loading
        return real_inject(*args, **kwargs)

    monkeypatch.setattr(pool_module, "inject_adapter", slow_inject)

    def race(names: list[str]) -> list[httpx.Response]:
        start = threading.Barrier(len(names))

        def load(name: str) -> httpx.Response:
            start.wait()
            return admin_load(live.url, name, "clinic-run/adapter")

        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(load, names))

    different = race(["one", "two", "three", "four"])
    assert sorted(r.status_code for r in different) == [201, 409, 409, 409], [r.text for r in different]
    assert all("under way" in r.json()["detail"] for r in different if r.status_code == 409)
    [winner] = [r.json()["id"] for r in different if r.status_code == 201]
    assert loaded_adapters(live.url) == [winner]  # --max-adapters 1 held (clinic was evicted)
    same = race(["twin"] * 4)
    assert sorted(r.status_code for r in same) == [201, 409, 409, 409], [r.text for r in same]
    assert loaded_adapters(live.url) == ["twin"]
    assert post(live.url, clinic_clips(trained_dir, 1)[0], model="twin").status_code == 200


def test_unload_waits_on_a_condition_for_the_requests_in_flight(live, monkeypatch):
    assert admin_load(live.url, "held", "clinic-run/adapter").status_code == 201
    route = live.pool.acquire("held")  # a request decoding with it
    monkeypatch.setattr(pool_module, "time", SimpleNamespace(  # a sleep-polling wait would fail
        monotonic=time.monotonic, sleep=lambda seconds: pytest.fail("unload polled with sleep")))
    unloaded = threading.Event()
    unloader = threading.Thread(target=lambda: (live.pool.unload_adapter("held"), unloaded.set()))
    unloader.start()
    try:
        assert not unloaded.wait(0.3)  # waiting for the request...
        assert "held" not in live.pool.names()  # ...which new requests can no longer join
    finally:
        live.pool.release(route)
    assert unloaded.wait(10)  # woken when the last request in flight released it
    unloader.join()
    assert loaded_adapters(live.url) == []


def test_slow_post_processing_runs_in_the_decode_worker_while_health_answers(live, monkeypatch,
                                                                           trained_dir):
    entered, release, threads = threading.Event(), threading.Event(), []
    real_rules = svlora.postprocess.result_with_rules

    def stuck_rules(rules, result):  # a catastrophic regex, made deterministic
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(60)
        return real_rules(rules, result)

    monkeypatch.setattr(svlora.postprocess, "result_with_rules", stuck_rules)
    clip = clinic_clips(trained_dir, 1)[0]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, live.url, clip, "slow")
        try:
            assert entered.wait(60)
            health = httpx.get(f"{live.url}/health", timeout=10)  # on the event loop it would hang
            assert health.status_code == 200 and not release.is_set()
        finally:
            release.set()
        response = pending.result()
    assert response.status_code == 200 and "rules_fired" in response.json()
    assert threads == ["svlora-batcher"]


def test_a_request_that_fails_inside_is_counted_as_the_500_it_got(live, monkeypatch, trained_dir):
    clip = clinic_clips(trained_dir, 1)[0]

    def broken_decoder(*args, **kwargs):
        raise RuntimeError("decoder fault")

    monkeypatch.setattr(live.pool, "decode", broken_decoder)
    before = httpx.get(f"{live.url}/metrics").text
    response = post(live.url, clip, model="sensevoice-small")
    after = httpx.get(f"{live.url}/metrics").text
    grew = lambda name, **labels: metric(after, name, **labels) - metric(before, name, **labels)  # noqa: E731
    assert response.status_code == 500
    assert grew("svlora_requests_total", model="sensevoice-small", status="500") == 1
    assert grew("svlora_requests_total", model="sensevoice-small", status="200") == 0
    assert grew("svlora_request_errors_total", model="sensevoice-small", status="500") == 1
