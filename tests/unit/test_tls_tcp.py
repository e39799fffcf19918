"""Spec §3 (TLS and TCP): SNI precedence, TLSRoute without hostnames, oldest TCPRoute wins.

Verdicts from ``explain``, and the listener's SNI chains Envoy matches on.
"""

from __future__ import annotations

import pytest

from tests.unit.manifests import (
    GLOBAL,
    conditions,
    egress,
    explain,
    rendered,
    tcp_route,
    tls_route,
    translator,
)

IP = "203.0.113.5"
OLD = "2020-01-01T00:00:00Z"
NEW = "2025-01-01T00:00:00Z"

TLS_DOCS = [
    egress("internet"),
    tls_route("exact", hostnames=["api.example.com"]),
    tls_route("wild", hostnames=["*.example.com"]),
    tls_route("longer-wild", hostnames=["*.eu.example.com"]),
    tls_route("several", hostnames=["a.example.org", "b.example.org"]),
]
# (id, SNI, expected route name or "default")
SNI = [
    ("exact-beats-wildcard", "api.example.com", "exact"),
    ("exact-case-insensitive", "API.example.COM", "exact"),
    ("wildcard", "www.example.com", "wild"),
    ("wildcard-several-labels", "a.b.example.com", "wild"),
    ("longer-wildcard-beats-shorter", "fr.eu.example.com", "longer-wild"),
    ("wildcard-needs-an-extra-label", "example.com", "default"),
    ("several-names-first", "a.example.org", "several"),
    ("several-names-second", "b.example.org", "several"),
    ("unknown-name-default", "c.example.org", "default"),
    ("no-sni-default", "", "default"),
]


@pytest.mark.parametrize(("sni", "expected"), [c[1:] for c in SNI], ids=[c[0] for c in SNI])
def test_sni_precedence(sni: str, expected: str) -> None:
    verdict = explain(TLS_DOCS, "app", IP, 443, sni=sni)
    if expected == "default":
        assert (verdict["route"], verdict["action"]) == ("default", "deny")
    else:
        assert (verdict["route"], verdict["action"]) == (f"TLSRoute {GLOBAL}/{expected}", "forward")


def test_sni_chains_in_the_listener() -> None:
    listener = rendered(TLS_DOCS)["listeners"][0]
    names = {}
    for chain in listener["filter_chains"]:
        match = chain.get("filter_chain_match", {})
        if match.get("destination_port") == 443 and "server_names" in match:
            names[chain["name"].split("|")[-1]] = match["server_names"]
    assert names == {
        "sni:linkerd-egress/exact": ["api.example.com"],
        "sni:linkerd-egress/wild": ["*.example.com"],
        "sni:linkerd-egress/longer-wild": ["*.eu.example.com"],
        "sni:linkerd-egress/several": ["a.example.org", "b.example.org"],
    }
    # TLS is never terminated: no chain carries a transport socket.
    assert all("transport_socket" not in c for c in listener["filter_chains"])


def test_tls_route_without_hostnames_matches_any_sni_after_named_ones() -> None:
    docs = [*TLS_DOCS, tls_route("catch-all")]
    assert explain(docs, "app", IP, 443, sni="c.example.org")["route"] == f"TLSRoute {GLOBAL}/catch-all"
    assert explain(docs, "app", IP, 443, sni="api.example.com")["route"] == f"TLSRoute {GLOBAL}/exact"
    assert explain(docs, "app", IP, 443, sni="")["route"] == f"TLSRoute {GLOBAL}/catch-all"
    # Plaintext on a TLS port gets the default, not the catch-all.
    assert explain(docs, "app", IP, 443, host="h", path="/")["route"] == "default"


def test_two_tls_routes_claiming_one_name_the_oldest_wins() -> None:
    docs = [egress("internet"), tls_route("newer", hostnames=["api.example.com"], created=NEW),
            tls_route("older", hostnames=["api.example.com"], created=OLD)]
    assert explain(docs, "app", IP, 443, sni="api.example.com")["route"] == f"TLSRoute {GLOBAL}/older"
    listener = rendered(docs)["listeners"][0]
    server_names = [n for c in listener["filter_chains"] for n in c.get("filter_chain_match", {}).get("server_names", [])]
    assert server_names.count("api.example.com") == 1


def test_allow_network_tls_route_and_default_forward() -> None:
    docs = [egress("partners", policy="Allow", networks=["203.0.113.0/24"]),
            tls_route("api", en="partners", hostnames=["api.example.com"])]
    assert explain(docs, "app", IP, 443, sni="other.example.com")["action"] == "forward"
    assert explain(docs, "app", IP, 443, sni="api.example.com")["route"] == f"TLSRoute {GLOBAL}/api"


# (id, rules, message fragment)
TLS_RULES = [
    ("no-rules", [], "exactly one rule, found 0"),
    ("two-rules", [{"backendRefs": []}, {"backendRefs": []}], "exactly one rule, found 2"),
]


@pytest.mark.parametrize(("rules", "message"), [c[1:] for c in TLS_RULES], ids=[c[0] for c in TLS_RULES])
@pytest.mark.parametrize("kind", ["TLSRoute", "TCPRoute"])
def test_stream_routes_need_exactly_one_rule(kind: str, rules: list, message: str) -> None:
    route = tls_route("r", rules=rules) if kind == "TLSRoute" else tcp_route("r", rules=rules)
    accepted = conditions(translator([egress("internet"), route]).status_report(), kind, GLOBAL, "r")["Accepted"]
    assert accepted[:2] == ("False", "UnsupportedValue")
    assert message in accepted[2]


# (id, routes (name, created), winner)
TCP = [
    ("oldest-wins", [("newer", NEW), ("older", OLD)], "older"),
    ("missing-timestamp-is-oldest", [("dated", OLD), ("undated", None)], "undated"),
    ("same-age-by-name", [("bravo", OLD), ("alpha", OLD)], "alpha"),
]


@pytest.mark.parametrize(("routes", "winner"), [c[1:] for c in TCP], ids=[c[0] for c in TCP])
def test_only_the_oldest_tcp_route_applies(routes: list, winner: str) -> None:
    docs = [egress("internet"), *(tcp_route(name, port=9000, created=c) for name, c in routes)]
    for request in ({}, {"sni": "x.example.com"}, {"host": "h", "path": "/"}):
        assert explain(docs, "app", IP, 9000, **request)["route"] == f"TCPRoute {GLOBAL}/{winner}"
    listener = rendered(docs)["listeners"][0]
    tcp_chains = [c["name"] for c in listener["filter_chains"]
                  if c.get("filter_chain_match", {}).get("destination_port") == 9000 and "internet" in c["name"]]
    assert tcp_chains == ["9000|linkerd-egress/internet|tcp"]
