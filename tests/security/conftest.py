"""Fixtures: a PKI generated in the test, and ``serve`` in-process (``serve.Server``, what the
CLI runs) with TLS or mTLS on a loopback port, plus gRPC channels with chosen credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from egress_xds.serve import ServeConfig, Server
from egress_xds.translate import TranslatorOptions
from tests.security.pki import SERVER_NAME, Leaf, Pki
from tests.server.envoy_proc import EGRESS, ROUTE_TEMPLATE, free_port


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@asynccontextmanager
async def tls_server(tmp_path: Path, pki: Pki, *, mtls: bool = True, **config: object) -> AsyncIterator[Server]:
    manifests = tmp_path / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "egress.yaml").write_text(EGRESS)
    (manifests / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com")
    server_leaf = pki.server()
    server = Server(ServeConfig(
        manifests=[str(manifests)], ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
        options=TranslatorOptions(outbound_port=free_port(), listener_addresses=("127.0.0.1",)),
        tls_cert=str(server_leaf.cert), tls_key=str(server_leaf.key),
        client_ca=str(pki.ca) if mtls else "", **config))  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def channel_factory(pki: Pki) -> Callable[..., grpc.aio.Channel]:
    opened: list[grpc.aio.Channel] = []

    def make(address: str, client: Leaf | None = None, ca: bytes | None = None) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca or pki.ca_pem(),
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None)
        channel = grpc.aio.secure_channel(address, creds,
                                          options=[("grpc.ssl_target_name_override", SERVER_NAME)])
        opened.append(channel)
        return channel

    make.opened = opened  # type: ignore[attr-defined]
    return make
