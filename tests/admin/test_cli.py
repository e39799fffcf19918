"""The real ``egress-xds serve --admin-listen`` process and the commands that read it:
``explain --server`` prints what offline ``explain`` prints, ``status --server`` what
``status --debug-url`` prints; a dead server is a clear error."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from egress_xds.serve import DEFAULT_MANIFESTS
from tests.server.envoy_proc import cli, free_port, serve_ready


async def test_serve_admin_listen_explain_and_status(tmp_path: Path) -> None:
    debug_port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "egress_xds.cli", "serve", "--ads-listen", "127.0.0.1:0",
        "--debug-listen", f"127.0.0.1:{debug_port}", "--admin-listen", admin,
        stdout=log, stderr=log)
    log.close()
    try:
        await serve_ready(f"http://127.0.0.1:{debug_port}")
        args = ["explain", "-n", "web", "--to", "203.0.113.130:80", "--host", "httpbin.example.com",
                "--path", "/post", "--method", "POST"]
        offline, online = await asyncio.gather(cli(*args, "-f", str(DEFAULT_MANIFESTS)), cli(*args, "--server", admin))
        assert online[:2] == offline[:2] and online[0] == 0
        assert "HTTPRoute web/httpbin-post" in online[1]
        status_admin, status_debug = await asyncio.gather(
            cli("status", "--server", admin), cli("status", "--debug-url", f"http://127.0.0.1:{debug_port}"))
        assert status_admin[:2] == status_debug[:2] and status_admin[1].startswith("NAME")

        code, _, err = await cli(*args, "--server", f"127.0.0.1:{free_port()}")
        assert code == 1 and "UNAVAILABLE" in err
        code, _, err = await cli(*args)
        assert code == 2 and "--server" in err
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 10) == 0, (tmp_path / "serve.log").read_text()
