"""A real Envoy follows certificate rotation without a restart (issue 7, security).

``egress-xds bootstrap --tls-ca --tls-cert --tls-key --sds-dir DIR`` writes file-based SDS
secrets that point at the PEM files; Envoy watches their directories. The test rotates a
CA the way cert-manager does, on both sides at once (Kubernetes-style secret volumes, one
``..data`` rename per update): first a new client certificate from the new CA with both CAs
trusted, then the old CA dropped. Envoy's ``/certs`` shows the new certificate and CA without
a restart, its open ADS stream keeps receiving pushes, and after serve restarts (a new
connection) serve verifies the new client certificate against the new CA only, while Envoy
trusts only the new CA for serve's new certificate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from egress_xds.bootstrap import (
    SDS_CA,
    SDS_CLIENT_CERT,
    BootstrapOptions,
    generate,
    render,
    sds_secrets,
)
from egress_xds.resources import ROUTE
from egress_xds.serve import Server
from tests.security.pki import SERVER_NAME, Pki
from tests.security.rotation import (
    PeerRecorder,
    SecretMount,
    pem_serial,
    port_of,
    serial,
    server_leaf,
    start_server,
    tls_files,
    two_cas,
)
from tests.server.envoy_proc import ROUTE_TEMPLATE, EnvoyProcess, cli, eventually
from tests.server.test_bootstrap import envoy_validate
from tests.server.test_envoy_serve import all_synced

pytestmark = pytest.mark.envoy

SDS_UPDATES = "cluster.egress-xds.client_ssl_socket_factory.ssl_context_update_by_sds"


def _hex(value: str) -> str:
    return value.lower().lstrip("0")


async def envoy_certs(envoy: EnvoyProcess) -> tuple[set[str], set[str]]:
    """Envoy's /certs: (serials of the trusted CAs, serials of its own certificates)."""
    status, text = await envoy.get("/certs")
    assert status == 200
    cas: set[str] = set()
    chain: set[str] = set()
    for context in json.loads(text)["certificates"]:
        cas |= {_hex(c["serial_number"]) for c in context.get("ca_cert", [])}
        chain |= {_hex(c["serial_number"]) for c in context.get("cert_chain", [])}
    return cas, chain


def ca_serial(pki: Pki) -> str:
    return _hex(pem_serial(pki.ca_pem()))


async def test_envoy_reloads_rotated_client_certificate_and_ca(tmp_path: Path) -> None:
    old, new = two_cas(tmp_path)
    both = old.ca_pem() + new.ca_pem()
    serve_tls = SecretMount(tmp_path / "serve-tls", tls_files(server_leaf(old, "server-1"), old.ca_pem()))
    first = old.client("app", "web", stem="envoy-1")
    envoy_tls = SecretMount(tmp_path / "envoy-tls", tls_files(first, old.ca_pem()))
    files = (serve_tls.path("tls.crt"), serve_tls.path("tls.key"), serve_tls.path("ca.crt"))
    server: Server | None = await start_server(tmp_path, *files)
    assert server is not None
    envoy: EnvoyProcess | None = None
    try:
        code, text, err = await cli(
            "bootstrap", "--namespace", "app", "--node-id", "rotating", "--ads", server.ads_address,
            "--access-log", "/dev/null", "--tls-ca", str(envoy_tls.path("ca.crt")),
            "--tls-cert", str(envoy_tls.path("tls.crt")), "--tls-key", str(envoy_tls.path("tls.key")),
            "--tls-server-name", SERVER_NAME, "--sds-dir", str(tmp_path / "envoy-sds"))
        assert code == 0, err
        (tmp_path / "validate.yaml").write_text(text)
        code, out = await envoy_validate(tmp_path / "validate.yaml")
        assert code == 0 and "rejected" not in out, out
        envoy = EnvoyProcess(text, tmp_path, name="rotating")
        await envoy.start()
        assert envoy.proc is not None
        pid = envoy.proc.pid

        await eventually(lambda: all_synced(server, "rotating"), timeout=20)
        recorder = server.ads.identity
        assert isinstance(recorder, PeerRecorder) and recorder.serials == [serial(first)]
        assert await envoy_certs(envoy) == ({ca_serial(old)}, {_hex(serial(first))})
        updates = await envoy.stat(SDS_UPDATES)
        stream_ids = set(server.ads.streams)

        # 1. Both sides trust both CAs; serve and Envoy get certificates from the new CA.
        second = new.client("app", "web", stem="envoy-2")
        serve_tls.update(tls_files(server_leaf(new, "server-2"), both))
        envoy_tls.update(tls_files(second, both))

        async def envoy_has(cas: set[str], chain: set[str]) -> bool:
            return await envoy_certs(envoy) == (cas, chain)  # type: ignore[arg-type]

        await eventually(lambda: envoy_has({ca_serial(old), ca_serial(new)}, {_hex(serial(second))}),
                         timeout=10)
        assert (await envoy.stat(SDS_UPDATES) or 0) > (updates or 0)
        # The open stream was not touched, and a push still reaches Envoy over it.
        assert set(server.ads.streams) == stream_ids and await envoy.stat("control_plane.connected_state") == 1
        (tmp_path / "manifests" / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com, api.example.com")
        await server.control_plane.reload()

        async def pushed() -> bool:
            routes = (await envoy.dynamic())[ROUTE]  # type: ignore[union-attr]
            return any("api.example.com" in json.dumps(config) for _, config in routes.values())

        await eventually(pushed, timeout=10)
        await eventually(lambda: all_synced(server, "rotating"), timeout=10)
        assert set(server.ads.streams) == stream_ids and recorder.serials == [serial(first)]

        # 2. The old CA is dropped everywhere; serve restarts, so Envoy must connect anew.
        serve_tls.update(tls_files(server_leaf(new, "server-3"), new.ca_pem()))
        envoy_tls.update(tls_files(second, new.ca_pem()))
        await eventually(lambda: envoy_has({ca_serial(new)}, {_hex(serial(second))}), timeout=10)
        port = port_of(server.ads_address)
        await server.stop()
        server = None
        server = await start_server(tmp_path, *files, ads_listen=f"127.0.0.1:{port}")
        await eventually(lambda: all_synced(server, "rotating"), timeout=20)  # type: ignore[arg-type]
        recorder = server.ads.identity
        assert isinstance(recorder, PeerRecorder) and recorder.serials == [serial(second)]
        assert server.cache.get_snapshot("app") is not None
        # Still the same Envoy process: nothing was restarted but serve.
        assert envoy.proc.returncode is None and envoy.proc.pid == pid
        assert await envoy.stat("cluster.egress-xds.upstream_cx_total") == 2
        assert await envoy.stat("cluster.egress-xds.ssl.connection_error") in (0, None)
    finally:
        if envoy is not None:
            await envoy.stop()
        if server is not None:
            await server.stop()


def _parse_secret_file(content: dict[str, Any]) -> secret_pb2.Secret:
    response = discovery_pb2.DiscoveryResponse()
    json_format.ParseDict(content, response)  # what Envoy's filesystem subscription reads
    assert len(response.resources) == 1
    secret = secret_pb2.Secret()
    assert response.resources[0].Unpack(secret)
    return secret


def test_bootstrap_sds_rendering(tmp_path: Path) -> None:
    sds = tmp_path / "sds"
    options = BootstrapOptions(namespace="shop", ads="egress-xds.system.svc:18000",
                               tls_ca="/etc/egress/ca.crt", tls_cert="/etc/egress/tls.crt",
                               tls_key="/etc/egress/tls.key", sds_dir=str(sds))
    text = generate(options)
    tls = yaml.safe_load(text)["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    common = tls["common_tls_context"]
    assert "tls_certificates" not in common and "validation_context" not in common  # nothing read once
    assert tls["sni"] == "egress-xds.system.svc"
    combined = common["combined_validation_context"]
    assert combined["default_validation_context"] == {"match_typed_subject_alt_names": [
        {"san_type": "DNS", "matcher": {"exact": "egress-xds.system.svc"}}]}
    for config, name in ((combined["validation_context_sds_secret_config"], SDS_CA),
                         (common["tls_certificate_sds_secret_configs"][0], SDS_CLIENT_CERT)):
        assert config["name"] == name
        assert config["sds_config"] == {"resource_api_version": "V3", "path_config_source": {
            "path": f"{sds}/{name}.json", "watched_directory": {"path": str(sds)}}}

    written = {p.name: json.loads(p.read_text()) for p in sds.iterdir()}
    assert written == sds_secrets(options) and set(written) == {f"{SDS_CA}.json", f"{SDS_CLIENT_CERT}.json"}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in sds.iterdir())
    ca = _parse_secret_file(written[f"{SDS_CA}.json"])
    assert ca.name == SDS_CA and ca.validation_context.trusted_ca.filename == "/etc/egress/ca.crt"
    assert ca.validation_context.watched_directory.path == "/etc/egress"
    cert = _parse_secret_file(written[f"{SDS_CLIENT_CERT}.json"])
    assert cert.name == SDS_CLIENT_CERT
    assert (cert.tls_certificate.certificate_chain.filename, cert.tls_certificate.private_key.filename) == (
        "/etc/egress/tls.crt", "/etc/egress/tls.key")
    assert cert.tls_certificate.watched_directory.path == "/etc/egress"

    # TLS without a client certificate: only the CA secret; certificate and key in two
    # directories: Envoy watches both itself.
    assert set(sds_secrets(BootstrapOptions(namespace="shop", tls_ca="/ca.pem", sds_dir=str(sds)))) == {
        f"{SDS_CA}.json"}
    split = sds_secrets(BootstrapOptions(namespace="shop", tls_ca="/ca.pem", tls_cert="/a/c.pem",
                                         tls_key="/b/k.pem", sds_dir=str(sds)))
    assert "watched_directory" not in split[f"{SDS_CLIENT_CERT}.json"]["resources"][0]["tls_certificate"]
    # Without --sds-dir nothing is written and the files are named inline, as before.
    assert sds_secrets(BootstrapOptions(namespace="shop", tls_ca="/ca.pem")) == {}
    for bad in ({"sds_dir": str(sds)}, {"tls_ca": "/ca.pem", "sds_dir": "relative/sds"}):
        with pytest.raises(ValueError):
            render(BootstrapOptions(namespace="shop", **bad))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="--sds-dir"):
        generate(BootstrapOptions(namespace="shop", tls_ca="/ca.pem", sds_dir=str(blocker / "sds")))
