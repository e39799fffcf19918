"""Spec §3 (matching inside HTTP and gRPC): hostnames, Gateway API rule precedence, filters.

Verdicts come from ``Translator.explain``; where explain cannot express a request (query
strings, rewrites) the test reads the RouteConfiguration Envoy receives and applies Envoy's
first-match semantics to it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.unit.manifests import (
    GLOBAL,
    conditions,
    egress,
    explain,
    grpc_route,
    http_route,
    path_rule,
    rendered,
    svc_backend,
    translator,
)

IP = "203.0.113.5"
EN = egress("internet")


def route_for(docs: list, host: str, path: str = "/", method: str = "GET", **kw: Any) -> str:
    return explain(docs, "app", IP, 80, host=host, path=path, method=method, **kw)["route"]


# ---------------------------------------------------------------------------------------
# Hostnames

HOSTNAME_ROUTES = [
    EN,
    http_route("exact", hostnames=["api.example.com"]),
    http_route("wild", hostnames=["*.example.com"]),
    http_route("longer-wild", hostnames=["*.eu.example.com"]),
    http_route("any-host", rules=[path_rule("/any")]),
]
# (id, Host header, path, expected route name or "default")
HOSTNAMES = [
    ("exact-beats-wildcard", "api.example.com", "/", "exact"),
    ("case-insensitive", "API.Example.COM", "/", "exact"),
    ("trailing-dot-ignored", "api.example.com.", "/", "exact"),
    ("port-in-host-ignored", "api.example.com:8080", "/", "exact"),
    ("wildcard-one-label", "www.example.com", "/", "wild"),
    ("wildcard-several-labels", "a.b.example.com", "/", "wild"),
    ("longer-wildcard-beats-shorter", "fr.eu.example.com", "/", "longer-wild"),
    ("wildcard-needs-an-extra-label", "example.com", "/", "default"),
    ("longer-wildcard-needs-an-extra-label", "eu.example.com", "/", "wild"),
    ("no-hostnames-matches-any-host", "other.org", "/any", "any-host"),
    ("no-hostnames-matches-ip-host", "203.0.113.5", "/any", "any-host"),
    ("unmatched-host-gets-default", "other.org", "/", "default"),
    ("host-with-hostnames-falls-through-to-no-hostname-route", "api.example.com", "/any", "exact"),
]


@pytest.mark.parametrize(("host", "path", "expected"), [c[1:] for c in HOSTNAMES], ids=[c[0] for c in HOSTNAMES])
def test_hostname_precedence(host: str, path: str, expected: str) -> None:
    route = route_for(HOSTNAME_ROUTES, host, path)
    assert route == ("default" if expected == "default" else f"HTTPRoute {GLOBAL}/{expected}")


def test_request_falls_through_from_specific_host_rules_to_less_specific_ones() -> None:
    docs = [EN, http_route("exact", hostnames=["api.example.com"], rules=[path_rule("/only")]),
            http_route("wild", hostnames=["*.example.com"], rules=[path_rule("/wild")]),
            http_route("any", rules=[path_rule("/any")])]
    assert route_for(docs, "api.example.com", "/only") == f"HTTPRoute {GLOBAL}/exact"
    assert route_for(docs, "api.example.com", "/wild") == f"HTTPRoute {GLOBAL}/wild"
    assert route_for(docs, "api.example.com", "/any") == f"HTTPRoute {GLOBAL}/any"
    assert route_for(docs, "api.example.com", "/other") == "default"


def test_route_hostnames_are_normalized_in_envoy_domains() -> None:
    docs = [EN, http_route("r", hostnames=["API.Example.com."])]
    domains = [vh["domains"] for rc in rendered(docs)["routes"] for vh in rc["virtual_hosts"]]
    assert ["api.example.com"] in domains


def test_no_duplicate_domains_when_routes_share_hostnames() -> None:
    docs = [EN, http_route("a", hostnames=["api.example.com", "*.example.com"]),
            http_route("b", hostnames=["API.example.com", "*.example.com"], rules=[path_rule("/b")])]
    for rc in rendered(docs)["routes"]:
        domains = [d for vh in rc["virtual_hosts"] for d in vh["domains"]]
        assert len(domains) == len(set(domains)), domains
    assert route_for(docs, "api.example.com", "/b") == f"HTTPRoute {GLOBAL}/b"
    assert route_for(docs, "api.example.com", "/") == f"HTTPRoute {GLOBAL}/a"


# ---------------------------------------------------------------------------------------
# Rule precedence (Gateway API), explained requests

OLD = "2020-01-01T00:00:00Z"
NEW = "2025-01-01T00:00:00Z"
PRECEDENCE_ROUTES = [
    EN,
    http_route("exact", rules=[path_rule("/api", "Exact")], created=NEW),
    http_route("prefix", rules=[path_rule("/api")], created=OLD),
    http_route("longer", rules=[path_rule("/api/v1")], created=NEW),
    http_route("method", rules=[path_rule("/api/v1", method="POST")], created=NEW),
    http_route("headers", rules=[path_rule("/api/v1", headers={"x-team": "blue"})], created=NEW),
    http_route("two-headers", rules=[path_rule("/api/v1", headers={"x-team": "blue", "x-env": "prod"})], created=NEW),
    http_route("trailing", rules=[path_rule("/docs/")], created=NEW),
    http_route("root", rules=[path_rule("/static", "Exact"), path_rule("/")], created=NEW),
]
# (id, path, method, headers, expected route name or "default")
PRECEDENCE = [
    ("exact-beats-prefix-of-same-length", "/api", "GET", {}, "exact"),
    ("prefix-is-element-wise", "/api/x", "GET", {}, "prefix"),
    ("prefix-does-not-match-partial-element", "/apix", "GET", {}, "root"),
    ("longer-prefix-first", "/api/v1/users", "GET", {}, "longer"),
    ("longer-prefix-exact-element", "/api/v1", "GET", {}, "longer"),
    ("method-beats-no-method", "/api/v1", "POST", {}, "method"),
    ("header-match-beats-none", "/api/v1", "GET", {"x-team": "blue"}, "headers"),
    ("more-headers-beat-fewer", "/api/v1", "GET", {"x-team": "blue", "x-env": "prod"}, "two-headers"),
    ("header-names-case-insensitive", "/api/v1", "GET", {"X-Team": "blue"}, "headers"),
    ("header-value-mismatch", "/api/v1", "GET", {"x-team": "red"}, "longer"),
    ("method-beats-headers", "/api/v1", "POST", {"x-team": "blue"}, "method"),
    ("trailing-slash-prefix-matches-bare", "/docs", "GET", {}, "trailing"),
    ("trailing-slash-prefix-matches-below", "/docs/intro", "GET", {}, "trailing"),
    ("slash-prefix-matches-everything", "/anything/else", "GET", {}, "root"),
    ("exact-of-other-route", "/static", "GET", {}, "root"),
]


@pytest.mark.parametrize(("path", "method", "headers", "expected"), [c[1:] for c in PRECEDENCE],
                         ids=[c[0] for c in PRECEDENCE])
def test_rule_precedence(path: str, method: str, headers: dict, expected: str) -> None:
    route = route_for(PRECEDENCE_ROUTES, "h", path, method, headers=headers)
    assert route == ("default" if expected == "default" else f"HTTPRoute {GLOBAL}/{expected}")


# (id, routes (name, created), expected winner) — identical matches
TIES = [
    ("older-route-wins", [("newer", NEW), ("older", OLD)], "older"),
    ("missing-timestamp-is-oldest", [("dated", OLD), ("undated", None)], "undated"),
    ("same-age-name-ascending", [("bravo", OLD), ("alpha", OLD)], "alpha"),
]


@pytest.mark.parametrize(("routes", "winner"), [c[1:] for c in TIES], ids=[c[0] for c in TIES])
def test_ties_between_identical_matches(routes: list, winner: str) -> None:
    docs = [EN, *(http_route(name, rules=[path_rule("/same", backends=[svc_backend(f"svc-{name}")])], created=c)
                  for name, c in routes)]
    assert route_for(docs, "h", "/same") == f"HTTPRoute {GLOBAL}/{winner}"


def test_consumer_and_producer_routes_tie_by_age_then_namespace() -> None:
    docs = [EN, http_route("p", rules=[path_rule("/same")], created=NEW),
            http_route("c", "team", en_ns=GLOBAL, rules=[path_rule("/same")], created=OLD)]
    assert explain(docs, "team", IP, 80, host="h", path="/same")["route"] == "HTTPRoute team/c"
    docs = [EN, http_route("p", rules=[path_rule("/same")]), http_route("c", "team", en_ns=GLOBAL, rules=[path_rule("/same")])]
    assert explain(docs, "team", IP, 80, host="h", path="/same")["route"] == f"HTTPRoute {GLOBAL}/p"


def _envoy_first_match(route_config: dict, host: str, path: str, query: dict[str, str]) -> str:
    """Envoy's route selection inside the one virtual host ``*`` (enough for these tests)."""
    vh = next(vh for vh in route_config["virtual_hosts"] if "*" in vh["domains"])
    for route in vh["routes"]:
        m = route["match"]
        if "path" in m and path != m["path"]:
            continue
        sep = m.get("path_separated_prefix")
        if sep is not None and not (path == sep or path.startswith(sep + "/")):
            continue
        if "prefix" in m and not path.startswith(m["prefix"]):
            continue
        if any(query.get(q["name"]) != q["string_match"]["exact"] for q in m.get("query_parameters", [])):
            continue
        return route["name"]
    raise AssertionError("no route matched")


# (id, query, expected route name prefix)
QUERY = [
    ("more-query-matches-win", {"a": "1", "b": "2"}, "HTTPRoute linkerd-egress/two-query"),
    ("one-query-match", {"a": "1"}, "HTTPRoute linkerd-egress/one-query"),
    ("no-query", {}, "HTTPRoute linkerd-egress/no-query"),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in QUERY], ids=[c[0] for c in QUERY])
def test_query_parameter_precedence_in_envoy_route_order(query: dict, expected: str) -> None:
    docs = [EN, http_route("no-query", rules=[path_rule("/q")]),
            http_route("one-query", rules=[path_rule("/q", query={"a": "1"})]),
            http_route("two-query", rules=[path_rule("/q", query={"a": "1", "b": "2"})])]
    config = next(rc for rc in rendered(docs)["routes"] if rc["name"].endswith("|80"))
    assert _envoy_first_match(config, "h", "/q", query).startswith(expected)


def test_explain_honours_query_parameters_in_the_path() -> None:
    docs = [EN, http_route("plain", rules=[path_rule("/q")]),
            http_route("query", rules=[path_rule("/q", query={"a": "1"})])]
    assert route_for(docs, "h", "/q?a=1") == f"HTTPRoute {GLOBAL}/query"


# (id, match, Envoy RouteMatch)
ENVOY_MATCHES = [
    ("prefix-uses-path-separated-prefix", path_rule("/api"), {"path_separated_prefix": "/api"}),
    ("prefix-trailing-slash-stripped", path_rule("/api/"), {"path_separated_prefix": "/api"}),
    ("slash-is-plain-prefix", path_rule("/"), {"prefix": "/"}),
    ("exact-uses-path", path_rule("/api", "Exact"), {"path": "/api"}),
]


@pytest.mark.parametrize(("rule", "expected"), [c[1:] for c in ENVOY_MATCHES], ids=[c[0] for c in ENVOY_MATCHES])
def test_path_matches_in_envoy(rule: dict, expected: dict) -> None:
    config = next(rc for rc in rendered([EN, http_route("r", rules=[rule])])["routes"] if rc["name"].endswith("|80"))
    user = [r for vh in config["virtual_hosts"] for r in vh["routes"] if r["name"].startswith("HTTPRoute ")]
    assert [r["match"] for r in user] == [expected]


def test_method_and_header_matches_in_envoy() -> None:
    rule = path_rule("/x", method="PUT", headers={"X-Team": "blue"})
    config = next(rc for rc in rendered([EN, http_route("r", rules=[rule])])["routes"] if rc["name"].endswith("|80"))
    route = next(r for vh in config["virtual_hosts"] for r in vh["routes"] if r["name"].startswith("HTTPRoute "))
    headers = {h["name"].lower(): h["string_match"]["exact"] for h in route["match"]["headers"]}
    assert headers == {":method": "PUT", "x-team": "blue"}


# ---------------------------------------------------------------------------------------
# Filters

def _user_route(docs: list, port: int = 80) -> dict:
    config = next(rc for rc in rendered(docs)["routes"] if rc["name"].endswith(f"|{port}"))
    return next(r for vh in config["virtual_hosts"] for r in vh["routes"] if r["name"].startswith(("HTTPRoute ", "GRPCRoute ")))


def _status(docs: list, kind: str = "HTTPRoute") -> tuple[str, str, str]:
    return conditions(translator(docs).status_report(), kind, GLOBAL, "r")["Accepted"]


def test_request_header_modifier() -> None:
    f = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-set", "value": "1"}], "add": [{"name": "x-add", "value": "2"}], "remove": ["x-gone"]}}
    route = _user_route([EN, http_route("r", rules=[path_rule("/", filters=[f])])])
    added = {(h["header"]["key"], h["header"]["value"], h.get("append_action", "APPEND_IF_EXISTS_OR_ADD"))
             for h in route["request_headers_to_add"]}
    assert added == {("x-set", "1", "OVERWRITE_IF_EXISTS_OR_ADD"), ("x-add", "2", "APPEND_IF_EXISTS_OR_ADD")}
    assert route["request_headers_to_remove"] == ["x-gone"]


def test_response_header_modifier() -> None:
    f = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "set": [{"name": "x-set", "value": "1"}], "remove": ["server"]}}
    route = _user_route([EN, http_route("r", rules=[path_rule("/", filters=[f])])])
    assert [(h["header"]["key"], h["header"]["value"]) for h in route["response_headers_to_add"]] == [("x-set", "1")]
    assert route["response_headers_to_remove"] == ["server"]


# (id, requestRedirect, expected Envoy redirect fields (JSON names, defaults omitted))
REDIRECTS = [
    ("scheme-301", {"scheme": "https", "statusCode": 301}, {"scheme_redirect": "https"}),
    ("default-302", {"hostname": "new.example.com"}, {"host_redirect": "new.example.com", "response_code": "FOUND"}),
    ("port", {"port": 8443, "statusCode": 308}, {"port_redirect": 8443, "response_code": "PERMANENT_REDIRECT"}),
    ("full-path", {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}},
     {"path_redirect": "/new", "response_code": "FOUND"}),
]


@pytest.mark.parametrize(("redirect", "expected"), [c[1:] for c in REDIRECTS], ids=[c[0] for c in REDIRECTS])
def test_request_redirect(redirect: dict, expected: dict) -> None:
    docs = [EN, http_route("r", rules=[path_rule("/old", filters=[{"type": "RequestRedirect", "requestRedirect": redirect}])])]
    assert _status(docs)[:2] == ("True", "Accepted")
    route = _user_route(docs)
    assert route["redirect"] == expected
    verdict = explain(docs, "app", IP, 80, host="h", path="/old")
    assert verdict["action"] == "redirect"


def _apply_rewrite(route: dict, path: str) -> str:
    """Envoy's path rewrite: prefix_rewrite swaps the matched prefix (or path); regex_rewrite
    substitutes over the path."""
    action = route.get("route") or route.get("redirect") or {}
    match = route["match"]
    matched = match.get("path_separated_prefix") or match.get("prefix") or match.get("path") or ""
    if "prefix_rewrite" in action:
        return action["prefix_rewrite"] + path[len(matched):]
    if "regex_rewrite" in action:
        rewrite = action["regex_rewrite"]
        substitution = re.sub(r"\\(\d)", r"\\g<\1>", rewrite["substitution"])
        return re.sub(rewrite["pattern"]["regex"], substitution, path)
    if "path_redirect" in action:
        return action["path_redirect"]
    return path


# Gateway API HTTPPathModifier table: (request, PathPrefix, replacePrefixMatch, rewritten path)
PREFIX_REWRITES = [
    pytest.param("/foo/bar", "/foo", "/xyz", "/xyz/bar", id="plain"),
    pytest.param("/foo/bar", "/foo/", "/xyz", "/xyz/bar", id="match-trailing-slash"),
    pytest.param("/foo", "/foo", "/xyz", "/xyz", id="whole-path"),
    pytest.param("/foo/", "/foo", "/xyz", "/xyz/", id="whole-path-trailing-slash"),
    pytest.param("/foo", "/foo", "/", "/", id="to-root-whole-path"),
    pytest.param("/foo/bar", "/foo", "/xyz/", "/xyz/bar", id="replacement-trailing-slash"),
    pytest.param("/foo/bar", "/foo", "/", "/bar", id="to-root"),
    pytest.param("/foo/", "/foo", "/", "/", id="to-root-trailing-slash"),
    pytest.param("/foo/bar", "/foo", "", "/bar", id="empty-replacement"),
    pytest.param("/bar", "/", "/xyz", "/xyz/bar", id="from-root"),
]


@pytest.mark.parametrize(("request_path", "prefix", "replacement", "expected"), PREFIX_REWRITES)
def test_url_rewrite_replace_prefix_match(request_path: str, prefix: str, replacement: str, expected: str) -> None:
    f = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}}}
    docs = [EN, http_route("r", rules=[path_rule(prefix, filters=[f])])]
    assert _status(docs)[:2] == ("True", "Accepted")
    assert _apply_rewrite(_user_route(docs), request_path) == expected


@pytest.mark.parametrize(("request_path", "prefix", "replacement", "expected"), [
    pytest.param("/foo/bar", "/foo", "/xyz", "/xyz/bar", id="plain"),
    pytest.param("/bar", "/", "/xyz", "/xyz/bar", id="from-root"),
])
def test_request_redirect_replace_prefix_match(request_path: str, prefix: str, replacement: str, expected: str) -> None:
    f = {"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": replacement}}}
    docs = [EN, http_route("r", rules=[path_rule(prefix, filters=[f])])]
    assert _apply_rewrite(_user_route(docs), request_path) == expected


@pytest.mark.parametrize("request_path", ["/v1", "/v1/a/b", "/v1/x?y=1"])
def test_url_rewrite_replace_full_path(request_path: str) -> None:
    f = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2/all"}}}
    route = _user_route([EN, http_route("r", rules=[path_rule("/v1", filters=[f])])])
    # Envoy applies regex_rewrite to the path without the query string.
    assert _apply_rewrite(route, request_path.split("?")[0]) == "/v2/all"


def test_url_rewrite_hostname() -> None:
    f = {"type": "URLRewrite", "urlRewrite": {"hostname": "Upstream.Example.com"}}
    route = _user_route([EN, http_route("r", rules=[path_rule("/", filters=[f])])])
    assert route["route"]["host_rewrite_literal"] == "upstream.example.com"
    assert route["route"]["cluster"] == "egress-passthrough"


# (id, filter type, route kind)
UNSUPPORTED = [
    ("http-request-mirror", {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80}}}, "HTTPRoute"),
    ("http-extension-ref", {"type": "ExtensionRef", "extensionRef": {"group": "x", "kind": "y", "name": "z"}}, "HTTPRoute"),
    ("http-cors", {"type": "CORS"}, "HTTPRoute"),
    ("grpc-request-mirror", {"type": "RequestMirror"}, "GRPCRoute"),
    ("grpc-url-rewrite", {"type": "URLRewrite", "urlRewrite": {"hostname": "a.example.com"}}, "GRPCRoute"),
]


@pytest.mark.parametrize(("flt", "kind"), [c[1:] for c in UNSUPPORTED], ids=[c[0] for c in UNSUPPORTED])
def test_unsupported_filters_reject_the_route_visibly(flt: dict, kind: str) -> None:
    if kind == "HTTPRoute":
        docs = [EN, http_route("r", rules=[path_rule("/", filters=[flt])])]
        verdict = explain(docs, "app", IP, 80, host="h", path="/")
    else:
        docs = [EN, grpc_route("r", rules=[{"filters": [flt]}])]
        verdict = explain(docs, "app", IP, 443, host="h", path="/svc.S/M")
    status, reason, message = _status(docs, kind)
    assert (status, reason) == ("False", "UnsupportedValue")
    assert flt["type"] in message and "spec.rules[0].filters" in message
    assert verdict["route"] == "default", "an unsupported route must not be programmed"


def test_backend_ref_filters_are_unsupported() -> None:
    backend = svc_backend("api") | {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}]}
    docs = [EN, http_route("r", rules=[path_rule("/", backends=[backend])])]
    status, reason, message = _status(docs)
    assert (status, reason) == ("False", "UnsupportedValue")
    assert "backendRefs[0].filters" in message


# ---------------------------------------------------------------------------------------
# gRPC

GRPC_DOCS = [EN, grpc_route("g", rules=[
    {"matches": [{"method": {"service": "echo.Echo", "method": "Ping"}}]},
    {"matches": [{"method": {"service": "admin.Admin"}}], "backendRefs": [svc_backend("ghost")]},
    {"matches": [{"method": {"method": "Health"}, "headers": [{"name": "x-probe", "value": "1"}]}]},
])]
# (id, path, headers, expected route, action)
GRPC = [
    ("service-and-method", "/echo.Echo/Ping", {}, f"GRPCRoute {GLOBAL}/g", "forward"),
    ("other-method-denied", "/echo.Echo/Pong", {}, "default", "deny"),
    ("service-only-any-method", "/admin.Admin/Anything", {}, f"GRPCRoute {GLOBAL}/g", "invalid"),
    ("method-only-any-service-with-header", "/any.Svc/Health", {"x-probe": "1"}, f"GRPCRoute {GLOBAL}/g", "forward"),
    ("method-only-without-header", "/any.Svc/Health", {}, "default", "deny"),
]


@pytest.mark.parametrize(("path", "headers", "route", "action"), [c[1:] for c in GRPC], ids=[c[0] for c in GRPC])
def test_grpc_method_and_header_matches(path: str, headers: dict, route: str, action: str) -> None:
    verdict = explain(GRPC_DOCS, "app", IP, 443, host="grpc.example.com", path=path, method="POST", headers=headers)
    assert (verdict["route"], verdict["action"]) == (route, action)


def test_grpc_deny_and_invalid_are_grpc_statuses() -> None:
    config = next(rc for rc in rendered(GRPC_DOCS)["routes"] if rc["name"].endswith("|443"))
    routes = {r["name"]: r for vh in config["virtual_hosts"] for r in vh["routes"]}

    def grpc_status(route: dict) -> str:
        assert route["direct_response"]["status"] == 200
        headers = {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}
        assert headers["content-type"] == "application/grpc"
        return headers["grpc-status"]

    assert grpc_status(routes["default-deny"]) == "7"
    assert grpc_status(routes["GRPCRoute linkerd-egress/g rules[1].matches[0]"]) == "2"
