"""Prometheus metrics of `svlora serve` (its own registry, served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from svlora.adapters.capture import OUTCOMES as CAPTURE_OUTCOMES

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("svlora_requests", "Transcription requests by model and HTTP status",
                                ["model", "status"], registry=self.registry)
        self.errors = Counter("svlora_request_errors", "Requests answered with a 4xx/5xx status",
                              ["model", "status"], registry=self.registry)
        self.latency = Histogram("svlora_request_latency_seconds", "Request latency (upload to answer)",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.audio = Counter("svlora_audio_seconds", "Seconds of audio transcribed", ["model"],
                             registry=self.registry)
        self.batch_requests = Histogram("svlora_batch_requests", "Requests decoded together",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_models = Histogram("svlora_batch_models", "Distinct base/adapters in one batch",
                                      buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue = Gauge("svlora_queue_requests", "Requests waiting or decoding", registry=self.registry)
        self.adapters = Gauge("svlora_loaded_adapters", "Adapters loaded", registry=self.registry)
        self.captures = Counter("svlora_captures", "Requests sampled by --capture, by what became "
                                "of them: written, dropped (writer queue full, or larger than the "
                                "cap) or error (the write failed)", ["outcome"], registry=self.registry)
        self.feedback = Counter("svlora_feedback", "Feedback records appended through POST /v1/feedback",
                                registry=self.registry)
        for outcome in CAPTURE_OUTCOMES:
            self.captures.labels(outcome)  # each outcome shown from the start, at 0

    def observe_request(self, model: str, status: int, seconds: float) -> None:
        self.requests.labels(model, str(status)).inc()
        if status >= 400:
            self.errors.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)

    def observe_batch(self, stage1_names: list[str]) -> None:
        self.batch_requests.observe(len(stage1_names))
        self.batch_models.observe(len(set(stage1_names)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
