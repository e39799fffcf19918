"""A real Envoy connects to ``serve`` over mTLS with the bootstrap ``egress-xds bootstrap
--tls-ca --tls-cert --tls-key`` renders, and gets SYNCED; an Envoy whose certificate names
another namespace than its bootstrap claims is refused and never gets a config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from egress_xds.bootstrap import BootstrapOptions, render
from egress_xds.serve import Server
from tests.security.conftest import tls_server
from tests.security.pki import SERVER_NAME, Leaf, Pki
from tests.server.envoy_proc import EnvoyProcess, cli, eventually
from tests.server.test_envoy_serve import debug

pytestmark = pytest.mark.envoy


async def mtls_envoy(server: Server, pki: Pki, tmp_path: Path, namespace: str, leaf: Leaf,
                     name: str) -> EnvoyProcess:
    code, text, err = await cli("bootstrap", "--namespace", namespace, "--node-id", name,
                                "--ads", server.ads_address, "--access-log", "/dev/null",
                                "--tls-ca", str(pki.ca), "--tls-cert", str(leaf.cert),
                                "--tls-key", str(leaf.key), "--tls-server-name", SERVER_NAME)
    assert code == 0, err
    envoy = EnvoyProcess(text, tmp_path, name=name)
    await envoy.start()
    return envoy


async def test_envoy_over_mtls_gets_synced_and_a_lying_envoy_is_refused(
        tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async with tls_server(tmp_path, pki) as server:
        good = await mtls_envoy(server, pki, tmp_path, "app", pki.client("app", "web"), "good")
        liar = await mtls_envoy(server, pki, tmp_path, "app", pki.client("payments", "web"), "liar")
        try:
            async def synced() -> bool:
                proxies = (await debug(server, "/debug/proxies"))["proxies"]
                mine = [p for p in proxies if p["node_id"] == "good"]
                return bool(mine) and all(t["state"] == "SYNCED" for t in mine[0]["types"].values()) \
                    and set(mine[0]["types"]) >= {"clusters", "listeners", "routes"}

            await eventually(synced, timeout=20)
            await good.wait_ready()
            assert await good.stat("control_plane.connected_state") == 1
            assert await good.stat("listener_manager.lds.update_success") >= 1
            assert await good.stat("cluster_manager.cds.update_success") >= 1

            # The liar connected over TLS (its certificate is valid) but was refused, every time.
            # Each retry shows connected_state 1 for the few ms its stream lives before the
            # refusal: it must be 0 between them (an accepted liar would stay at 1).
            async def liar_disconnected() -> bool:
                return await liar.stat("control_plane.connected_state") == 0

            await asyncio.sleep(1.0)
            await eventually(liar_disconnected, timeout=10)
            assert await liar.stat("listener_manager.lds.update_success") == 0
            assert await liar.stat("cluster_manager.cds.update_success") == 0
            proxies = (await debug(server, "/debug/proxies"))["proxies"]
            assert [p["node_id"] for p in proxies] == ["good"]
            refusals = [r for r in caplog.records if r.getMessage().startswith("stream refused: namespace")]
            assert refusals and all(getattr(r, "node", "") == "liar" for r in refusals)
            assert getattr(refusals[0], "identity", "") == "spiffe://cluster.local/ns/payments/sa/web"
        finally:
            await good.stop()
            await liar.stop()


def test_bootstrap_tls_rendering() -> None:
    plain = yaml.safe_load(render(BootstrapOptions(namespace="shop")))
    assert "transport_socket" not in plain["static_resources"]["clusters"][0]
    retry = plain["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
    assert retry == {"retry_back_off": {"base_interval": "0.5s", "max_interval": "5s"}}
    text = render(BootstrapOptions(namespace="shop", ads="egress-xds.system.svc:18000",
                                   tls_ca="/etc/egress/ca.pem", tls_cert="/etc/egress/tls.crt",
                                   tls_key="/etc/egress/tls.key"))
    cluster = yaml.safe_load(text)["static_resources"]["clusters"][0]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext")
    assert tls["sni"] == "egress-xds.system.svc"
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["validation_context"]["trusted_ca"] == {"filename": "/etc/egress/ca.pem"}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "egress-xds.system.svc"}}]
    assert common["tls_certificates"] == [{"certificate_chain": {"filename": "/etc/egress/tls.crt"},
                                           "private_key": {"filename": "/etc/egress/tls.key"}}]
    # TLS without a client certificate, to an IP: the IP SAN is checked.
    text = render(BootstrapOptions(namespace="shop", ads="10.0.0.5:18000", tls_ca="/ca.pem"))
    tls = yaml.safe_load(text)["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert "sni" not in tls and "tls_certificates" not in tls["common_tls_context"]
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.5"}}]
    for bad in ({"tls_cert": "/c.pem", "tls_key": "/k.pem"}, {"tls_ca": "/ca.pem", "tls_cert": "/c.pem"},
                {"tls_ca": "relative/ca.pem"}):
        with pytest.raises(ValueError):
            render(BootstrapOptions(namespace="shop", **bad))
