"""ADS over TLS and mTLS (issue 7, security): the namespace comes from the client certificate.

``serve`` runs in-process with ``--tls-cert/--tls-key/--client-ca`` (certificates generated
in the test); clients are grpc.aio channels with chosen credentials. With mTLS a node whose
``metadata.namespace`` is not its certificate's SPIFFE namespace gets PERMISSION_DENIED, a
certificate without a usable SPIFFE ID too; no client certificate, a certificate of another CA
or a plaintext client never get a stream. Other streams are unaffected throughout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from egress_xds.admin.v1 import admin_pb2, admin_pb2_grpc
from egress_xds.resources import CLUSTER
from egress_xds.serve import ServeConfig
from egress_xds.server.identity import IdentityError, identity_from_sans, parse_spiffe_id
from tests.feature.feature_xds import AdsClient, node
from tests.security.conftest import channel_factory, tls_server
from tests.security.pki import Pki


async def first_response(channel: grpc.aio.Channel, namespace: str | None) -> AdsClient:
    client = AdsClient(channel)
    try:
        await client.send(node=node(namespace, f"sidecar~{namespace}"), type_url=CLUSTER)
    except grpc.aio.AioRpcError:
        pass  # refused before the request went out: the reader records the error
    return client


async def refused(client: AdsClient) -> grpc.aio.AioRpcError:
    try:
        await asyncio.wait_for(client.done.wait(), 5)
    except TimeoutError:
        raise AssertionError("the stream was not refused within 5 s") from None
    assert client.responses.empty(), "a refused stream got a response"
    assert client.error is not None, "the stream ended without an error"
    await client.close()
    return client.error


async def test_mtls_namespace_from_certificate(tmp_path: Path, pki: Pki) -> None:
    channel = channel_factory(pki)
    async with tls_server(tmp_path, pki) as server:
        try:
            good = await first_response(channel(server.ads_address, pki.client("app")), "app")
            response = await good.recv(timeout=5)
            assert response.type_url == CLUSTER and response.resources
            # No namespace in the node: the certificate's is used.
            implicit = await first_response(channel(server.ads_address, pki.client("app", "other-sa")), None)
            assert (await implicit.recv(timeout=5)).resources
            assert sorted(s.namespace for s in server.ads.streams.values()) == ["app", "app"]

            # A node claiming another namespace: PERMISSION_DENIED, saying why.
            liar = await first_response(channel(server.ads_address, pki.client("app", stem="liar")), "payments")
            err = await refused(liar)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'payments'" in err.details() and "spiffe://cluster.local/ns/app/sa/default" in err.details()

            # Certificates with no SPIFFE ID, a malformed one, or another trust domain.
            for leaf, words in [
                (pki.issue("dns-only", dns=("app.example",)), "no SPIFFE ID"),
                (pki.issue("bad-spiffe", uris=("spiffe://cluster.local/app",)), "is not spiffe://"),
                (pki.issue("two-ids", uris=("spiffe://cluster.local/ns/a/sa/x",
                                            "spiffe://cluster.local/ns/b/sa/x")), "2 SPIFFE IDs"),
                (pki.client("app", trust_domain="evil.example", stem="other-td"), "trust domain"),
            ]:
                err = await refused(await first_response(channel(server.ads_address, leaf), "app"))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED, leaf
                assert words in err.details(), err.details()

            # The good streams never noticed.
            assert not good.done.is_set() and not implicit.done.is_set()
            assert len(server.ads.streams) == 2
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


async def test_mtls_refuses_clients_without_a_trusted_certificate(tmp_path: Path, pki: Pki) -> None:
    channel = channel_factory(pki)
    stranger = Pki(tmp_path / "other-ca", "other CA")
    async with tls_server(tmp_path, pki) as server:
        try:
            attempts = {
                "no client certificate": channel(server.ads_address),
                "certificate of another CA": channel(server.ads_address, stranger.client("app")),
                "plaintext": grpc.aio.insecure_channel(server.ads_address),
            }
            for what, ch in attempts.items():
                client = await first_response(ch, "app")
                err = await refused(client)
                assert err.code() == grpc.StatusCode.UNAVAILABLE, (what, err)
                if ch not in channel.opened:  # type: ignore[attr-defined]
                    await ch.close()
            # A client that does not trust the server's CA refuses it as well.
            err = await refused(await first_response(
                channel(server.ads_address, pki.client("app"), ca=stranger.ca_pem()), "app"))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert server.ads.streams == {}
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


async def test_tls_without_client_ca_takes_the_namespace_from_the_node(tmp_path: Path, pki: Pki) -> None:
    channel = channel_factory(pki)
    async with tls_server(tmp_path, pki, mtls=False) as server:
        try:
            client = await first_response(channel(server.ads_address), "app")
            assert (await client.recv(timeout=5)).resources
            plain = grpc.aio.insecure_channel(server.ads_address)
            err = await refused(await first_response(plain, "app"))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            await plain.close()
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


@pytest.mark.parametrize(("mtls", "separate"), [(False, False), (True, True), (False, True)],
                         ids=["tls-on-ads-listener", "mtls-admin-listen", "tls-admin-listen"])
async def test_admin_api_uses_the_same_tls(tmp_path: Path, pki: Pki, mtls: bool, separate: bool) -> None:
    channel = channel_factory(pki)
    extra = {"admin_listen": "127.0.0.1:0"} if separate else {}
    async with tls_server(tmp_path, pki, mtls=mtls, **extra) as server:
        try:
            admin = admin_pb2_grpc.AdminServiceStub(channel(server.admin_address, pki.client("ops")))
            status = await admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
            assert status.objects
            plain = grpc.aio.insecure_channel(server.admin_address)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin_pb2_grpc.AdminServiceStub(plain).GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            await plain.close()
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


async def test_mtls_ads_listener_does_not_serve_the_admin_api(tmp_path: Path, pki: Pki) -> None:
    """Every sidecar has a valid certificate; the admin API and CSDS show every namespace."""
    channel = channel_factory(pki)
    async with tls_server(tmp_path, pki) as server:
        try:
            admin = admin_pb2_grpc.AdminServiceStub(channel(server.ads_address, pki.client("app")))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin.GetSnapshot(admin_pb2.GetSnapshotRequest(namespace="payments"), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


async def test_debug_endpoint_is_loopback_read_only_and_shows_no_secrets(tmp_path: Path, pki: Pki,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    import aiohttp

    from egress_xds.serve import DEFAULT_DEBUG_LISTEN

    assert DEFAULT_DEBUG_LISTEN.startswith("127.0.0.1:")
    channel = channel_factory(pki)
    async with tls_server(tmp_path, pki) as server:
        try:
            client = await first_response(channel(server.ads_address, pki.client("app")), "app")
            await client.recv(timeout=5)
            secrets = [pki.key_pem(), *(p.read_bytes() for p in pki.dir.glob("*.key"))]
            markers = [b"PRIVATE KEY", *(line for s in secrets for line in s.splitlines()[1:2])]
            async with aiohttp.ClientSession() as session:
                for path in ("/debug/proxies", "/debug/snapshots", "/debug/snapshots/app", "/debug/status",
                             "/metrics", "/healthz", "/readyz"):
                    async with session.get(server.debug_url + path) as r:
                        body = await r.read()
                        assert r.status == 200, path
                    assert not any(m in body for m in markers), path
                    async with session.post(server.debug_url + path, data=b"{}") as r:
                        assert r.status == 405, (path, r.status)  # read-only
            logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records).encode()
            assert not any(m in logged for m in markers)
        finally:
            for c in channel.opened:  # type: ignore[attr-defined]
                await c.close()


def test_spiffe_parsing() -> None:
    assert parse_spiffe_id("spiffe://cluster.local/ns/shop/sa/web") == ("cluster.local", "shop", "web")
    for bad in ["spiffe://cluster.local/ns/shop", "spiffe://cluster.local/ns/Shop/sa/web",
                "spiffe://cluster.local/ns/shop/sa/web/extra", "spiffe:///ns/shop/sa/web",
                "https://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/../sa/web"]:
        assert parse_spiffe_id(bad) is None, bad
    ident = identity_from_sans(["https://x.example", "spiffe://td.example/ns/a/sa/b"], "td.example")
    assert (ident.namespace, ident.service_account) == ("a", "b")
    with pytest.raises(IdentityError) as info:
        identity_from_sans([], "cluster.local")
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_tls_flag_combinations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--client-ca needs"):
        ServeConfig(client_ca="ca.pem").credentials()
    with pytest.raises(ValueError, match="go together"):
        ServeConfig(tls_cert="cert.pem").credentials()
    with pytest.raises(OSError):
        ServeConfig(tls_cert=str(tmp_path / "missing.pem"), tls_key=str(tmp_path / "missing.key")).credentials()
    assert ServeConfig().credentials() is None
