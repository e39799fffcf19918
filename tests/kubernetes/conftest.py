"""Fixtures for Kubernetes mode: the fake API server, a kubeconfig for it, fast timings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from egress_xds.sources.kubernetes import KubernetesConfig
from tests.kubernetes.fake_apiserver import FakeApiServer

T = TypeVar("T")


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer(bookmark_interval=0.3).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


def fast_config(kubeconfig: Path, identity: str = "replica-a", **overrides: Any) -> KubernetesConfig:
    values: dict[str, Any] = dict(kubeconfig=str(kubeconfig), identity=identity, lease_namespace="egress-xds",
                                  lease_duration=2.0, renew_deadline=1.5, retry_period=0.25, resync_period=0.5,
                                  watch_timeout=2, request_timeout=5.0, missing_retry=0.5, backoff_cap=0.5,
                                  initial_sync_timeout=10.0)
    values.update(overrides)
    return KubernetesConfig(**values)


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value (returned) or raises nothing past ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {last!r}")
        time.sleep(interval)


async def eventually_async(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """``eventually`` for the event loop; ``check`` may return an awaitable."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except AssertionError as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {last!r}")
        await asyncio.sleep(interval)


def egress_network(name: str, namespace: str, policy: str = "Deny", networks: list[Any] | None = None,
                   **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = networks
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
            "metadata": {"name": name, "namespace": namespace, **meta}, "spec": spec}


def route(kind: str, name: str, namespace: str, parent: str, port: int | None, *,
          parent_namespace: str | None = None, backends: list[dict[str, Any]] | None = None,
          hostnames: list[str] | None = None, extra_parents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    version = {"HTTPRoute": "v1", "GRPCRoute": "v1", "TLSRoute": "v1alpha2", "TCPRoute": "v1alpha2"}[kind]
    ref: dict[str, Any] = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": parent}
    if port is not None:
        ref["port"] = port
    if parent_namespace:
        ref["namespace"] = parent_namespace
    spec: dict[str, Any] = {"parentRefs": [ref, *(extra_parents or [])],
                            "rules": [{"backendRefs": backends or []}]}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"apiVersion": f"gateway.networking.k8s.io/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def service(name: str, namespace: str, cluster_ip: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": port}]}}


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every reflector, elector and status writer a test started is stopped by its end."""
    import threading

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    names = ("watch-", "lease-", "status-writer")
    while True:
        left = [t.name for t in set(threading.enumerate()) - before if t.is_alive() and t.name.startswith(names)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"threads still running: {left}"
