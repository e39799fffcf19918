"""Properties of the Envoy resources a sidecar receives (xds-server.md "Envoy constraints"),
asserted on ``egress_xds.resources.dump`` of several worlds."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from egress_xds.model.load import parse_text
from egress_xds.resources import CLUSTER, LISTENER, ROUTE, dump
from egress_xds.translate import Translator
from tests.unit.manifests import (
    GLOBAL,
    egress,
    en_backend,
    grpc_route,
    http_route,
    path_rule,
    rendered,
    service,
    svc_backend,
    tcp_route,
    tls_route,
    to_yaml,
)

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

WORLDS: dict[str, list[dict[str, Any]]] = {
    "deny-no-routes": [egress("internet")],
    "no-egress-networks": [],
    "port-sieve-trap": [
        egress("internet", policy="Deny"),
        egress("partners", policy="Allow", networks=["203.0.113.0/25"]),
        tls_route("api", en="partners", port=443, hostnames=["api.example.com", "*.example.org"]),
    ],
    "everything": [
        egress("internet", policy="Deny", created="2020-01-01T00:00:00Z"),
        egress("partners", policy="Allow", networks=[{"cidr": "203.0.113.0/24", "except": ["203.0.113.128/26"]}]),
        egress("v6", policy="Deny", networks=["2001:db8::/32"]),
        egress("opaque", policy="Deny", networks=["198.51.100.0/24"],
               annotations={"config.linkerd.io/opaque-ports": "8080,5432"}),
        service("api", GLOBAL, "10.96.0.10", [80]),
        http_route("web", hostnames=["api.example.com", "*.example.com"],
                   rules=[path_rule("/get", method="GET"), path_rule("/", "PathPrefix", backends=[svc_backend("ghost")])]),
        http_route("web2", hostnames=["API.example.com"], rules=[path_rule("/v2", backends=[
            en_backend("internet", weight=2), svc_backend("api", 80, weight=1)])]),
        http_route("other-port", port=8080, rules=[path_rule("/x", "Exact")]),
        grpc_route("grpc", port=50051, rules=[{"matches": [{"method": {"service": "echo.Echo"}}]}]),
        tls_route("tls", en="partners", hostnames=["a.example.net"]),
        tls_route("tls-any", en="partners", port=8443),
        tcp_route("db", en="v6", port=5432),
        tcp_route("consumer-db", "team", en="internet", en_ns=GLOBAL, port=6379),
        http_route("consumer-web", "team", en_ns=GLOBAL, rules=[path_rule("/team")]),
    ],
    "local-namespace": [
        egress("internet"),
        egress("own", "team", policy="Deny", networks=["198.51.100.0/24"]),
        http_route("own-web", "team", en="own", port=80),
        tls_route("global-tls", port=443),
    ],
}
NAMESPACES = ["app", "team", GLOBAL]
CASES = [(w, ns) for w in WORLDS for ns in NAMESPACES]
IDS = [f"{w}-{ns}" for w, ns in CASES]


@functools.cache
def _dump(world: str, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Rendered once per (world, namespace); tests only read it."""
    return rendered(WORLDS[world], namespace)


def _chains(listener: dict) -> list[dict]:
    return listener["filter_chains"]


def _prefixes(match: dict) -> frozenset[str]:
    return frozenset(f"{r['address_prefix']}/{r.get('prefix_len', 0)}" for r in match.get("prefix_ranges", []))


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_every_port_with_chains_covers_the_whole_partition(world: str, namespace: str) -> None:
    """The port-sieve trap: once a chain names port P, connections to P never see port-less
    chains, so every prefix needs its own port-P chains with the same governor."""
    listener = _dump(world, namespace)["listeners"][0]
    by_port: dict[int | None, set[tuple[str, str]]] = {}
    for chain in _chains(listener):
        if chain["name"] == "loop-guard":
            continue
        match = chain.get("filter_chain_match", {})
        governor = chain["name"].split("|")[1]
        for prefix in _prefixes(match):
            by_port.setdefault(match.get("destination_port"), set()).add((prefix, governor))
    assert None in by_port
    for port, pairs in by_port.items():
        assert pairs == by_port[None], f"port {port} does not copy the partition"
    # The partition always covers both roots.
    assert {p for p, _ in by_port[None]} >= {"0.0.0.0/0", "::/0"}


def test_port_sieve_trap_case_has_443_chains_for_the_deny_network() -> None:
    listener = _dump("port-sieve-trap", "app")["listeners"][0]
    names = {c["name"] for c in _chains(listener)}
    assert "443|linkerd-egress/internet|http" in names and "443|linkerd-egress/internet|default" in names


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_no_two_filter_chains_share_a_match(world: str, namespace: str) -> None:
    listener = _dump(world, namespace)["listeners"][0]
    seen: dict[str, str] = {}
    for chain in _chains(listener):
        key = json.dumps(chain.get("filter_chain_match", {}), sort_keys=True)
        assert key not in seen, f"{chain['name']} has the same match as {seen[key]}"
        seen[key] = chain["name"]
    # Overlapping server_names across otherwise-equal chains are rejected too.
    groups: dict[str, list[str]] = {}
    for chain in _chains(listener):
        match = dict(chain.get("filter_chain_match", {}))
        names = match.pop("server_names", [])
        groups.setdefault(json.dumps(match, sort_keys=True), []).extend(names)
    for names in groups.values():
        assert len(names) == len(set(names))


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_every_port_and_prefix_has_a_catch_all_chain(world: str, namespace: str) -> None:
    """A miss at a later sieve stage (SNI, transport, ALPN) matches nothing: each (port,
    prefix set) needs a chain without those fields."""
    listener = _dump(world, namespace)["listeners"][0]
    groups: dict[tuple[Any, frozenset[str]], bool] = {}
    for chain in _chains(listener):
        match = chain.get("filter_chain_match", {})
        key = (match.get("destination_port"), _prefixes(match))
        catch_all = not ({"server_names", "transport_protocol", "application_protocols"} & set(match))
        groups[key] = groups.get(key, False) or catch_all
    assert all(groups.values()), [k for k, v in groups.items() if not v]


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_listener_basics(world: str, namespace: str) -> None:
    listener = _dump(world, namespace)["listeners"][0]
    assert "default_filter_chain" in listener
    names = [f["name"] for f in listener["listener_filters"]]
    assert names == ["envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector",
                     "envoy.filters.listener.http_inspector"]
    assert listener["continue_on_listener_filters_timeout"] is True
    for chain in _chains(listener):
        for name in chain.get("filter_chain_match", {}).get("server_names", []):
            assert name != "*" and ("*" not in name or (name.startswith("*.") and "*" not in name[2:]))


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_access_logs_name_the_namespace_the_listener_carries(world: str, namespace: str) -> None:
    """Every access log reads the client namespace from the listener's metadata, and the
    listener carries the namespace it was built for (spec §6)."""
    listener = _dump(world, namespace)["listeners"][0]
    assert listener["metadata"]["filter_metadata"]["egress_xds"] == {"namespace": namespace}
    logs = [log for config in _network_filters(listener) for log in config["access_log"]]
    assert logs
    for log in logs:
        fields = log["typed_config"]["log_format"]["json_format"]
        assert fields["namespace"] == "%METADATA(LISTENER:egress_xds:namespace)%"


def test_namespaces_on_the_same_view_get_the_same_chains() -> None:
    """Nothing in a chain names the client namespace: two namespaces that see the same
    EgressNetworks and routes get identical filter chains, so they share them."""
    app, other = (_dump("port-sieve-trap", ns)["listeners"][0] for ns in ("app", "team"))
    assert app["filter_chains"] == other["filter_chains"]
    assert app["default_filter_chain"] == other["default_filter_chain"]
    assert app["metadata"] != other["metadata"]


def _network_filters(listener: dict) -> list[dict]:
    chains = [*_chains(listener), listener["default_filter_chain"]]
    return [f["typed_config"] for c in chains for f in c["filters"]]


@pytest.mark.parametrize(("world", "namespace"), CASES, ids=IDS)
def test_every_referenced_route_table_and_cluster_exists(world: str, namespace: str) -> None:
    dumped = _dump(world, namespace)
    clusters = {c["name"] for c in dumped["clusters"]}
    route_tables = {r["name"]: r for r in dumped.get("routes", [])}
    for config in _network_filters(dumped["listeners"][0]):
        if config["@type"] == TCP_PROXY:
            named = [config["cluster"]] if "cluster" in config else [
                c["name"] for c in config["weighted_clusters"]["clusters"]]
            assert set(named) <= clusters
        elif config["@type"] == HCM:
            assert config["rds"]["route_config_name"] in route_tables
            assert config["strip_any_host_port"] is True and config["strip_trailing_host_dot"] is True
    for table in route_tables.values():
        domains = [d for vh in table["virtual_hosts"] for d in vh["domains"]]
        assert len(domains) == len(set(domains)), f"duplicate domains in {table['name']}"
        for vh in table["virtual_hosts"]:
            for route in vh["routes"]:
                action = route.get("route", {})
                named = [action["cluster"]] if "cluster" in action else [
                    c["name"] for c in action.get("weighted_clusters", {}).get("clusters", [])]
                assert set(named) <= clusters
                sep = route["match"].get("path_separated_prefix")
                assert sep is None or (sep != "/" and not sep.endswith("/"))
            assert vh["routes"][-1]["name"] in ("default-allow", "default-deny"), "the default route is last"
            assert vh["routes"][-1]["match"] == {"prefix": "/"}
    passthrough = next(c for c in dumped["clusters"] if c["name"] == "egress-passthrough")
    assert (passthrough["type"], passthrough["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")


def _default_routes(dumped: dict, name: str) -> list[dict]:
    return [r for rc in dumped.get("routes", []) for vh in rc["virtual_hosts"] for r in vh["routes"] if r["name"] == name]


def test_http_deny_is_403_with_body_and_cause_header() -> None:
    denies = _default_routes(_dump("everything", "app"), "default-deny")
    http = [r for r in denies if r["direct_response"]["status"] == 403]
    assert http
    for route in http:
        assert route["direct_response"]["body"] == {"inline_string": "traffic not allowed"}
        headers = {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}
        assert headers["x-egress-denied-by"] in {f"{GLOBAL}/internet", f"{GLOBAL}/v6", f"{GLOBAL}/opaque"}


def test_grpc_deny_is_grpc_status_7() -> None:
    dumped = _dump("everything", "app")
    table = next(rc for rc in dumped["routes"] if rc["name"] == f"egress|{GLOBAL}/internet|50051")
    deny = table["virtual_hosts"][-1]["routes"][-1]
    assert deny["name"] == "default-deny" and deny["direct_response"]["status"] == 200
    headers = {h["header"]["key"]: h["header"]["value"] for h in deny["response_headers_to_add"]}
    assert headers["grpc-status"] == "7" and headers["grpc-message"] == "traffic not allowed"
    assert headers["x-egress-denied-by"] == f"{GLOBAL}/internet"


def test_allow_default_forwards_to_the_original_destination() -> None:
    allows = _default_routes(_dump("everything", "app"), "default-allow")
    assert allows and all(r["route"]["cluster"] == "egress-passthrough" for r in allows)


def test_deny_tls_and_opaque_close_without_dialling() -> None:
    listener = _dump("port-sieve-trap", "app")["listeners"][0]
    default = next(c for c in _chains(listener) if c["name"] == "any|linkerd-egress/internet|default")
    assert default["filters"][0]["typed_config"]["cluster"] == "egress-deny"
    dumped = _dump("port-sieve-trap", "app")
    deny = next(c for c in dumped["clusters"] if c["name"] == "egress-deny")
    assert deny["type"] == "STATIC" and "endpoints" not in deny["load_assignment"]


def test_invalid_backend_is_500() -> None:
    dumped = _dump("everything", "app")
    invalid = [r for rc in dumped["routes"] for vh in rc["virtual_hosts"] for r in vh["routes"]
               if r["name"] == "HTTPRoute linkerd-egress/web rules[1].matches[0]"]
    assert invalid and all(r["direct_response"]["status"] == 500 for r in invalid)
    assert "BackendNotFound" in invalid[0]["direct_response"]["body"]["inline_string"]


def test_namespaces_see_only_their_consumer_routes() -> None:
    def text(ns: str) -> str:
        return json.dumps(_dump("everything", ns))

    assert "consumer-web" in text("team") and "consumer-db" in text("team")
    assert "consumer-web" not in text("app") and "consumer-db" not in text("app")


def test_ip_stage_never_misses_on_a_named_port() -> None:
    """Every address has a chain on every named port (else the closing default chain takes it)."""
    listener = _dump("everything", "app")["listeners"][0]
    ports = {c.get("filter_chain_match", {}).get("destination_port") for c in _chains(listener)} - {15001}
    for port in ports:
        nets = [ipaddress.ip_network(p) for c in _chains(listener)
                if c.get("filter_chain_match", {}).get("destination_port") == port
                for p in _prefixes(c["filter_chain_match"])]
        assert ipaddress.ip_network("0.0.0.0/0") in nets and ipaddress.ip_network("::/0") in nets


# ---------------------------------------------------------------------------------------
# Deterministic output

def _serialized(docs: list[dict], namespace: str) -> dict[str, dict[str, bytes]]:
    result = parse_text(to_yaml(docs), "world.yaml")
    assert not result.errors
    t = Translator()
    t.load(result.objects)
    resources = t.resources(namespace)
    return {tu: {n: m.SerializeToString() for n, m in by_name.items()} for tu, by_name in resources.items()}


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_same_input_twice_gives_identical_bytes(namespace: str) -> None:
    assert _serialized(WORLDS["everything"], namespace) == _serialized(WORLDS["everything"], namespace)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_documents_give_identical_bytes(seed: int) -> None:
    docs = list(WORLDS["everything"])
    shuffled = list(docs)
    random.Random(seed).shuffle(shuffled)
    assert shuffled != docs
    for namespace in NAMESPACES:
        assert _serialized(shuffled, namespace) == _serialized(docs, namespace)


def test_resources_have_stable_names_and_types() -> None:
    result = parse_text(to_yaml(WORLDS["everything"]), "w.yaml")
    t = Translator()
    t.load(result.objects)
    resources = t.resources("app")
    assert set(resources) == {CLUSTER, LISTENER, ROUTE}
    assert list(resources[LISTENER]) == ["outbound"]
    assert list(dump(resources)) == ["clusters", "listeners", "routes"]


def test_output_is_identical_across_processes(tmp_path: Path) -> None:
    """Versions are hashes of the bytes: two control-plane processes must agree."""
    (tmp_path / "world.yaml").write_text(to_yaml(WORLDS["everything"]))
    script = (
        "import hashlib, sys\n"
        "from egress_xds.model.load import load_paths\n"
        "from egress_xds.translate import Translator\n"
        "t = Translator(); t.load(load_paths([sys.argv[1]]).objects)\n"
        "h = hashlib.sha256()\n"
        "for ns in ('app', 'team'):\n"
        "    res = t.resources(ns)\n"
        "    for tu in sorted(res):\n"
        "        for name in sorted(res[tu]):\n"
        "            h.update(res[tu][name].SerializeToString())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "world.yaml")], env=env,
                             capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
        digests.add(out.stdout.strip())
    assert len(digests) == 1


# ---------------------------------------------------------------------------------------
# Reloading (what ``serve`` does on every manifest change)

def _objects(docs: list[dict]) -> list:
    result = parse_text(to_yaml(docs), "world.yaml")
    assert not result.errors
    return result.objects


def test_reload_reflects_changes_and_returns_to_the_same_bytes() -> None:
    deny, allow = _objects([egress("internet")]), _objects([egress("internet", policy="Allow")])
    t = Translator()
    t.load(deny)
    first = _bytes(t.resources("app"))
    t.load(allow)
    assert _bytes(t.resources("app")) != first
    t.load(deny)
    assert _bytes(t.resources("app")) == first


def test_change_confined_to_one_namespace_keeps_other_namespaces_resources() -> None:
    t = Translator()
    t.load(_objects([egress("internet"), http_route("r", "team", en_ns=GLOBAL)]))
    app_before, team_before = t.resources("app"), _bytes(t.resources("team"))
    t.load(_objects([egress("internet"), http_route("r", "team", en_ns=GLOBAL, rules=[path_rule("/changed")])]))
    assert t.resources("app") is app_before, "an unrelated namespace must not be rebuilt"
    assert _bytes(t.resources("team")) != team_before


def _bytes(resources: Any) -> dict[str, dict[str, bytes]]:
    return {tu: {n: m.SerializeToString() for n, m in by_name.items()} for tu, by_name in resources.items()}
