"""The real ``egress-xds serve`` process: unix-socket ADS, ``egress-xds status``, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.server.envoy_proc import EnvoyProcess, cli, eventually, free_port, serve_ready

pytestmark = pytest.mark.envoy

EGRESS = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {name: internet, namespace: shop}
spec: {trafficPolicy: Allow}
"""


async def test_serve_status_and_sigterm(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "egress.yaml").write_text(EGRESS)
    socket_path = tmp_path / "ads.sock"
    debug_port = free_port()
    debug_url = f"http://127.0.0.1:{debug_port}"
    serve_log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egress_xds.cli", "serve", "--manifests", str(manifests),
        "--ads-listen", f"unix:{socket_path}", "--debug-listen", f"127.0.0.1:{debug_port}",
        "--outbound-port", str(free_port()), "--log-level", "debug",
        stdout=serve_log, stderr=serve_log)
    serve_log.close()
    envoy: EnvoyProcess | None = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            await serve_ready(debug_url, timeout=20)
            assert (socket_path.stat().st_mode & 0o777) == 0o666
            code, text, err = await cli("bootstrap", "--namespace", "shop", "--node-id", "shop-pod-1",
                                        "--ads", f"unix:{socket_path}", "--access-log", "/dev/null")
            assert code == 0, err
            envoy = EnvoyProcess(text, tmp_path)
            await envoy.start()
            await envoy.wait_ready()

            async def synced_row() -> str | None:
                code, out, _ = await cli("status", "--debug-url", debug_url)
                for row in _rows(out)[1:]:
                    if row[0] == "shop-pod-1" and row[3] == row[5] == row[6] == "SYNCED":
                        return out
                return None

            table = await eventually(synced_row, timeout=10)
            rows = _rows(table)
            assert rows[0] == ["NAME", "NAMESPACE", "MODE", "CDS", "EDS", "LDS", "RDS", "VERSION"]
            row = next(r for r in rows if r[0] == "shop-pod-1")
            assert row[1:3] == ["shop", "SOTW"] and row[4] == "NOT SENT"  # no EDS clusters

            async with session.get(debug_url + "/metrics") as r:
                metrics = await r.text()
            assert 'egress_xds_connected_proxies{mode="sotw"} 1.0' in metrics
            assert "egress_xds_pushes_total" in metrics and "egress_xds_translation_seconds_count" in metrics

        assert await envoy.stat("control_plane.connected_state") == 1
        started = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(serve.wait(), 10)
        assert code == 0
        assert time.monotonic() - started < 5
        log = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")]
        events = [entry["event"] for entry in log]
        assert "stream closed" in events and events[-1] == "stopped"
        assert not socket_path.exists()
        await eventually(lambda: _disconnected(envoy), timeout=5)
        _, ready_text = await envoy.get("/ready")
        assert ready_text.strip() == "LIVE"  # Envoy keeps its config without the control plane
    finally:
        if envoy is not None:
            await envoy.stop()
        if serve.returncode is None:
            serve.kill()
            await serve.wait()


def _rows(table: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]


async def _disconnected(envoy: EnvoyProcess) -> bool:
    return await envoy.stat("control_plane.connected_state") == 0


async def test_status_without_server_fails_clearly() -> None:
    code, _, err = await cli("status", "--debug-url", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "cannot read" in err
