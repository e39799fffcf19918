"""Certificate rotation without a restart (issue 7, security): ``serve --tls-cert/--tls-key/
--client-ca`` follows the files on disk.

``serve`` runs in-process (and once as the real process) on a Kubernetes-style secret volume
or plain files; clients are grpc.aio ADS streams and raw TLS handshakes that read the serial
of the server certificate. A rotation reaches every new handshake, on the ADS and the admin
listener; streams opened before it keep running and get later pushes; after a client CA
rotation, certificates of the old CA are refused on new connections; a broken rotation (key
of another certificate, half-written file, missing file) keeps the previous certificates and
logs one error naming the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER
from egress_xds.serve import ServeConfig, Server
from egress_xds.server.tls import TlsFiles
from tests.feature.feature_xds import AdsClient, names, world
from tests.security.pki import SERVER_NAME, Leaf, Pki
from tests.security.rotation import (
    PeerRecorder,
    SecretMount,
    port_of,
    rotating_server,
    serial,
    server_leaf,
    server_serial,
    tls_files,
    two_cas,
)
from tests.security.test_mtls import first_response, refused
from tests.server.envoy_proc import EGRESS, free_port, serve_ready

TLS_LOGGER = "egress_xds.server.tls"


class Channels:
    """gRPC channels, each with its own connection (a new TLS handshake), closed at the end."""

    def __init__(self) -> None:
        self.opened: list[grpc.aio.Channel] = []

    def __call__(self, address: str, trust: bytes, client: Leaf | None = None) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=trust,
            private_key=client.key.read_bytes() if client else None,
            certificate_chain=client.cert.read_bytes() if client else None)
        channel = grpc.aio.secure_channel(address, creds, options=[
            ("grpc.ssl_target_name_override", SERVER_NAME), ("grpc.use_local_subchannel_pool", 1)])
        self.opened.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self.opened:
            await channel.close()


async def served(client: AdsClient) -> list[str]:
    """The cluster names of the stream's next response, acked."""
    response = await client.recv(timeout=5)
    assert response.type_url == CLUSTER
    await client.ack(response)
    return names(response)


async def push_reaches(server: Server, client: AdsClient, cluster: str) -> None:
    """A snapshot change after the rotation arrives on ``client``'s (older) stream."""
    server.cache.set_snapshot("app", Snapshot(world(clusters=(cluster,))))
    assert await served(client) == [cluster]


def tls_records(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, object]]:
    return [dict(r.__dict__) for r in caplog.records if r.name == TLS_LOGGER and r.getMessage() == event]


async def probe(port: int, trust: bytes, client: Leaf | None = None) -> str:
    return await asyncio.to_thread(server_serial, port, trust, client)


async def test_server_certificate_rotation_keeps_open_streams(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", TLS_LOGGER)
    pki = Pki(tmp_path / "pki")
    first, second = server_leaf(pki, "server-1"), server_leaf(pki, "server-2")
    mount = SecretMount(tmp_path / "serve-tls", tls_files(first, pki.ca_pem()))
    channel = Channels()
    async with rotating_server(tmp_path, mount.path("tls.crt"), mount.path("tls.key"),
                               mount.path("ca.crt")) as server:
        port = port_of(server.ads_address)
        before_leaf, after_leaf = pki.client("app"), pki.client("app", "web")
        try:
            before = await first_response(channel(server.ads_address, pki.ca_pem(), before_leaf), "app")
            assert await served(before)
            assert await probe(port, pki.ca_pem(), pki.client("app", stem="probe")) == serial(first)

            mount.update(tls_files(second, pki.ca_pem()))  # one ..data rename, as the kubelet does
            for _ in range(3):  # every new handshake gets the new certificate
                assert await probe(port, pki.ca_pem(), pki.client("app", stem="probe")) == serial(second)
            after = await first_response(channel(server.ads_address, pki.ca_pem(), after_leaf), "app")
            assert await served(after)

            # The stream opened with the old certificate is still there and gets later pushes.
            assert not before.done.is_set()
            await push_reaches(server, before, "after-rotation")
            assert await served(after) == ["after-rotation"]
            assert len(server.ads.streams) == 2
        finally:
            await channel.close()
        # serve verified each client certificate as usual (the probes opened no stream).
        assert isinstance(server.ads.identity, PeerRecorder)
        assert server.ads.identity.serials == [serial(before_leaf), serial(after_leaf)]

    reloaded = tls_records(caplog, "tls certificates reloaded")
    assert len(reloaded) == 1, reloaded  # once per change, not per handshake
    assert reloaded[0]["serial"] == serial(second) and reloaded[0]["previous_serial"] == serial(first)
    assert str(reloaded[0]["not_after"]).startswith("20") and reloaded[0]["client_cas"] == 1
    assert not tls_records(caplog, "tls certificates not reloaded, the previous ones stay in use")


async def test_client_ca_rotation_refuses_the_old_ca_on_new_connections(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", TLS_LOGGER)
    old, new = two_cas(tmp_path)
    both = old.ca_pem() + new.ca_pem()
    mount = SecretMount(tmp_path / "serve-tls", tls_files(server_leaf(old, "server-1"), old.ca_pem()))
    channel = Channels()
    async with rotating_server(tmp_path, mount.path("tls.crt"), mount.path("tls.key"),
                               mount.path("ca.crt")) as server:
        recorder = server.ads.identity
        assert isinstance(recorder, PeerRecorder)
        try:
            a_leaf = old.client("app", stem="a")
            a = await first_response(channel(server.ads_address, old.ca_pem(), a_leaf), "app")
            assert await served(a)

            # Overlap, as cert-manager's trust bundles do it: both CAs trusted, the server
            # certificate already from the new CA.
            new_server = server_leaf(new, "server-2")
            mount.update({"tls.crt": new_server.cert.read_bytes(), "tls.key": new_server.key.read_bytes(),
                          "ca.crt": both})
            b_leaf, c_leaf = new.client("app", stem="b"), old.client("app", stem="c")
            b = await first_response(channel(server.ads_address, new.ca_pem(), b_leaf), "app")
            c = await first_response(channel(server.ads_address, both, c_leaf), "app")
            assert await served(b) and await served(c)

            # The old CA is gone: its certificates are refused on new connections ...
            mount.update({"tls.crt": new_server.cert.read_bytes(), "tls.key": new_server.key.read_bytes(),
                          "ca.crt": new.ca_pem()})
            d = await first_response(channel(server.ads_address, both, old.client("app", stem="d")), "app")
            assert (await refused(d)).code() == grpc.StatusCode.UNAVAILABLE
            e_leaf = new.client("app", stem="e")
            e = await first_response(channel(server.ads_address, new.ca_pem(), e_leaf), "app")
            assert await served(e)
            # ... and a client that trusts only the old CA no longer trusts the server.
            f = await first_response(channel(server.ads_address, old.ca_pem(), new.client("app", stem="f")), "app")
            assert (await refused(f)).code() == grpc.StatusCode.UNAVAILABLE

            # Streams opened before are kept (a restart of serve would cut them), and served.
            assert not any(s.done.is_set() for s in (a, b, c, e))
            await push_reaches(server, a, "pushed")
            assert recorder.serials == [serial(a_leaf), serial(b_leaf), serial(c_leaf), serial(e_leaf)]
        finally:
            await channel.close()
    reloaded = tls_records(caplog, "tls certificates reloaded")
    assert [r["client_cas"] for r in reloaded] == [2, 1]


async def test_broken_rotation_keeps_the_previous_certificate_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Plain files written in place or renamed one at a time: every intermediate state."""
    caplog.set_level("INFO", TLS_LOGGER)
    pki = Pki(tmp_path / "pki")
    first, second, third = (server_leaf(pki, f"server-{i}") for i in (1, 2, 3))
    tls = tmp_path / "tls"
    tls.mkdir()
    cert, key, ca = tls / "server.pem", tls / "server.key", tls / "client-ca.pem"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    ca.write_bytes(pki.ca_pem())
    errors_event = "tls certificates not reloaded, the previous ones stay in use"

    def replace(path: Path, data: bytes) -> None:
        path.with_suffix(".tmp").write_bytes(data)
        os.replace(path.with_suffix(".tmp"), path)

    channel = Channels()
    async with rotating_server(tmp_path, cert, key, ca) as server:
        port = port_of(server.ads_address)
        probe_leaf = pki.client("app", stem="probe")

        async def serving(expected: Leaf, errors: int, failed_file: Path | None = None,
                          words: str = "") -> None:
            for _ in range(3):
                assert await probe(port, pki.ca_pem(), probe_leaf) == serial(expected)
            records = tls_records(caplog, errors_event)
            assert len(records) == errors, [(r["file"], r["error"]) for r in records]
            if failed_file is not None:
                assert records[-1]["file"] == str(failed_file)
                assert words in str(records[-1]["error"]), records[-1]["error"]
                assert records[-1]["serial"] == serial(expected)  # what stays in use

        try:
            stream = await first_response(channel(server.ads_address, pki.ca_pem(), pki.client("app")), "app")
            assert await served(stream)
            await serving(first, 0)

            replace(key, third.key.read_bytes())  # the key of another certificate
            await serving(first, 1, key, "does not match the certificate")
            second_pem = second.cert.read_bytes()
            cert.write_bytes(second_pem[: len(second_pem) // 2])  # half-written, in place
            await serving(first, 2, cert, "not a PEM certificate chain")
            cert.write_bytes(second_pem)  # complete now, but the key is still the third's
            await serving(first, 3, key, "does not match the certificate")
            replace(key, second.key.read_bytes())
            await serving(second, 3)
            assert len(tls_records(caplog, "tls certificates reloaded")) == 1

            ca.unlink()  # the client CA disappears: the last good set (with its CA) stays
            await serving(second, 4, ca, "cannot be read")
            late = await first_response(channel(server.ads_address, pki.ca_pem(), pki.client("app", "late")), "app")
            assert await served(late)
            replace(ca, b"-----BEGIN CERTIFICATE-----\nnot base64\n")
            await serving(second, 5, ca, "not a PEM CA bundle")
            replace(ca, pki.ca_pem())
            await serving(second, 5)

            assert not stream.done.is_set()
            await push_reaches(server, stream, "still-here")
        finally:
            await channel.close()
    assert len(tls_records(caplog, "tls certificates reloaded")) == 2


async def test_admin_listener_follows_the_rotation_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each listener has credentials of its own over one file watcher."""
    caplog.set_level("INFO", TLS_LOGGER)
    pki = Pki(tmp_path / "pki")
    first, second = server_leaf(pki, "server-1"), server_leaf(pki, "server-2")
    mount = SecretMount(tmp_path / "serve-tls", tls_files(first, pki.ca_pem()))
    async with rotating_server(tmp_path, mount.path("tls.crt"), mount.path("tls.key"), None,
                               admin_listen="127.0.0.1:0") as server:
        ports = (port_of(server.ads_address), port_of(server.admin_address))
        assert ports[0] != ports[1]
        assert [await probe(p, pki.ca_pem()) for p in ports] == [serial(first)] * 2
        mount.update(tls_files(second, pki.ca_pem()))
        assert [await probe(p, pki.ca_pem()) for p in ports] == [serial(second)] * 2
        assert [await probe(p, pki.ca_pem()) for p in reversed(ports)] == [serial(second)] * 2
    assert len(tls_records(caplog, "tls certificates reloaded")) == 1


def test_unchanged_files_are_only_stated(tmp_path: Path) -> None:
    """The fetcher runs before every handshake: without a change it rereads nothing."""
    pki = Pki(tmp_path / "pki")
    leaf = server_leaf(pki, "server")
    files = TlsFiles(str(leaf.cert), str(leaf.key), str(pki.ca))
    start = files.current()
    for _ in range(1000):
        assert files.current() is start
    assert (files.reloads, files.errors) == (0, 0)
    other = server_leaf(pki, "other")
    leaf.cert.write_bytes(other.cert.read_bytes())
    leaf.key.write_bytes(other.key.read_bytes())
    fresh = files.current()
    assert fresh is not start and fresh.generation == 2 and files.info.serial == serial(other)
    assert files.current() is fresh and files.reloads == 1


def test_unusable_files_at_startup_name_the_file(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    one, two = server_leaf(pki, "one"), server_leaf(pki, "two")
    with pytest.raises(ValueError, match=rf"{two.key}: private key does not match the certificate in {one.cert}"):
        ServeConfig(tls_cert=str(one.cert), tls_key=str(two.key)).credentials()
    with pytest.raises(ValueError, match=rf"{one.key}: not a PEM certificate chain") as info:
        ServeConfig(tls_cert=str(one.key), tls_key=str(one.key)).credentials()
    assert "PRIVATE" not in str(info.value)  # never the key's content
    bad_ca = tmp_path / "bad-ca.pem"
    bad_ca.write_text("garbage")
    with pytest.raises(ValueError, match=rf"{bad_ca}: not a PEM CA bundle"):
        ServeConfig(tls_cert=str(one.cert), tls_key=str(one.key), client_ca=str(bad_ca)).credentials()
    with pytest.raises(OSError, match="missing.pem"):
        ServeConfig(tls_cert=str(one.cert), tls_key=str(one.key), client_ca=str(tmp_path / "missing.pem")).credentials()


async def test_serve_process_reloads_rotated_files(tmp_path: Path) -> None:
    """The real ``egress-xds serve`` on a secret volume: rotate, new handshake, the log says so."""
    old, new = two_cas(tmp_path)
    first, second = server_leaf(old, "server-1"), server_leaf(new, "server-2")
    mount = SecretMount(tmp_path / "serve-tls", tls_files(first, old.ca_pem()))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "egress.yaml").write_text(EGRESS)
    ads_port, debug_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "egress_xds.cli", "serve", "--manifests", str(manifests),
            "--ads-listen", f"127.0.0.1:{ads_port}", "--debug-listen", f"127.0.0.1:{debug_port}",
            "--outbound-port", str(free_port()), "--tls-cert", str(mount.path("tls.crt")),
            "--tls-key", str(mount.path("tls.key")), "--client-ca", str(mount.path("ca.crt")),
            stdout=log, stderr=log)
    try:
        await serve_ready(f"http://127.0.0.1:{debug_port}")
        client = old.client("app", stem="probe")
        assert await probe(ads_port, old.ca_pem(), client) == serial(first)
        mount.update(tls_files(second, old.ca_pem() + new.ca_pem()))
        assert await probe(ads_port, new.ca_pem(), client) == serial(second)
        assert await probe(ads_port, new.ca_pem(), new.client("app", stem="probe-2")) == serial(second)
        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 10) == 0
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    loaded = [e for e in lines if e["event"] == "tls certificates loaded"]
    reloaded = [e for e in lines if e["event"] == "tls certificates reloaded"]
    assert len(loaded) == 1 and loaded[0]["serial"] == serial(first)
    assert len(reloaded) == 1, reloaded
    assert reloaded[0]["serial"] == serial(second) and reloaded[0]["previous_serial"] == serial(first)
    assert reloaded[0]["client_cas"] == 2 and reloaded[0]["subject"] == "CN=server-2"
    assert reloaded[0]["not_after"].startswith("20") and reloaded[0]["level"] == "info"
    assert not [e for e in lines if e["level"] == "error"]
