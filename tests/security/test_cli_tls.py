"""``explain --server`` and ``status --server`` against a serve that requires (m)TLS."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

from egress_xds import cli
from tests.security.conftest import tls_server
from tests.security.pki import SERVER_NAME, Pki

QUESTION = ["-n", "app", "--to", "203.0.113.9:80", "--host", "docs.example.com", "--path", "/docs/x", "-o", "json"]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def test_explain_and_status_over_mtls(tmp_path: Path, pki: Pki) -> None:
    ops = pki.client("ops")
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(ops.cert), "--tls-key", str(ops.key),
           "--tls-server-name", SERVER_NAME]
    async with tls_server(tmp_path, pki, admin_listen="127.0.0.1:0") as server:
        code, out, err = await asyncio.to_thread(run_cli, "explain", "--server", server.admin_address, *QUESTION, *tls)
        assert code == 0, err
        offline = await asyncio.to_thread(run_cli, "explain", "-f", str(tmp_path / "manifests"), *QUESTION)
        assert json.loads(out) == json.loads(offline[1])
        assert json.loads(out)["route"] == "HTTPRoute app/allow-docs"

        code, out, err = await asyncio.to_thread(run_cli, "status", "--server", server.admin_address, "-o", "json", *tls)
        assert code == 0, err
        assert json.loads(out) == []

        # Without the client certificate the server refuses the call; the CLI says why.
        code, out, err = await asyncio.to_thread(
            run_cli, "explain", "--server", server.admin_address, *QUESTION,
            "--tls-ca", str(pki.ca), "--tls-server-name", SERVER_NAME)
        assert code == 1 and "UNAVAILABLE" in err and out == ""


def test_tls_flags_must_go_together() -> None:
    code, _, err = run_cli("explain", "--server", "127.0.0.1:1", *QUESTION, "--tls-cert", "c.pem")
    assert code == 1 and "need --tls-ca" in err
