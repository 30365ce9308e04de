"""Prometheus metrics of one server (its own registry, so two apps in one process never share counters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("testtime_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("testtime_request_latency_seconds", "request latency, arrival to last byte",
                                 ["endpoint"], registry=r,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.generated = Counter("testtime_generated_tokens", "policy tokens generated for answers", registry=r)
        self.prompt = Counter("testtime_prompt_tokens", "prompt tokens of answered requests", registry=r)
        self.prm = Counter("testtime_prm_tokens", "tokens the PRM read for answers", registry=r)
        self.queue = Gauge("testtime_queue_depth", "answers waiting or being solved", registry=r)
        self.batch = Histogram("testtime_batch_size", "answers solved together in one engine run", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))

    def render(self) -> bytes:
        return generate_latest(self.registry)
