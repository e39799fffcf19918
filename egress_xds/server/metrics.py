"""Prometheus metrics of the control plane, in a registry of their own.

In: counts and timings reported by the ADS streams (``server.ads``) and by the wiring
(``serve``: translation time, config bytes); the event loop's task count, read at each scrape.
Out: the text exposition served at ``/metrics`` by ``server.debug``. One ``Metrics`` per
server instance, so tests can run several.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_proxies = Gauge(
            "egress_xds_connected_proxies", "ADS streams open now, by protocol variant",
            ["mode"], registry=r)
        self.pushes = Counter(
            "egress_xds_pushes", "xDS responses sent, by resource type", ["type"], registry=r)
        self.push_latency = Histogram(
            "egress_xds_push_latency_seconds",
            "time from a snapshot change to the response that carries it", ["type"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.nacks = Counter(
            "egress_xds_nacks", "responses rejected by a proxy (NACK), by resource type",
            ["type"], registry=r)
        self.translation_seconds = Histogram(
            "egress_xds_translation_seconds", "time to load manifests and translate every namespace",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.config_bytes = Gauge(
            "egress_xds_config_bytes", "serialized size of a namespace snapshot", ["namespace"],
            registry=r)
        self.snapshots = Gauge("egress_xds_snapshots", "namespaces with a snapshot", registry=r)
        self.load_errors = Gauge(
            "egress_xds_load_errors", "manifest objects rejected at the last load", registry=r)
        # Read at each scrape (``render`` runs on the server's event loop): a leaked stream
        # handler, reader or watcher shows up here (tests/limits/test_soak.py).
        self.asyncio_tasks = Gauge(
            "egress_xds_asyncio_tasks", "asyncio tasks alive in the server's event loop",
            registry=r)
        self.asyncio_tasks.set_function(_asyncio_tasks)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _asyncio_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside a running event loop
        return float("nan")
