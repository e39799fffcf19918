"""RouteConfigurations for the HTTP and gRPC port policies.

In: an ``ir.PortPolicy`` of protocol http or grpc. Out: one ``RouteConfiguration`` whose
virtual hosts and routes keep the IR's order, with the policy's default route last:
Allow forwards to the original destination; Deny answers 403 ``traffic not allowed`` with
``x-egress-denied-by`` (gRPC: grpc-status 7). Invalid backends answer 500 (gRPC: 2).
Called by ``envoy.listener`` (for the RDS name) and ``egress_xds.envoy.build_resources``.
"""

from __future__ import annotations

import functools
import re

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import duration_pb2

from egress_xds import ir
from egress_xds.envoy.common import route_stat

NO_TIMEOUT = duration_pb2.Duration(seconds=0)
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
GRPC_PERMISSION_DENIED = "7"
GRPC_UNKNOWN = "2"


def route_config_name(policy: ir.PortPolicy) -> str:
    """Policies without user routes share their governor's ``default`` route table."""
    if all(not vh.rules for vh in policy.virtual_hosts):
        return f"egress|{policy.governor.label}|{policy.protocol}-default"
    return f"egress|{policy.governor.label}|{policy.port_label}"


def _string_matcher(value: str, regex: bool) -> string_pb2.StringMatcher:
    if regex:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value))
    return string_pb2.StringMatcher(exact=value)


def route_match(m: ir.HttpMatch) -> rc.RouteMatch:
    match = rc.RouteMatch()
    if m.path_kind == "exact":
        match.path = m.path
    elif m.path_kind == "prefix" and m.path != "/":
        # Gateway API PathPrefix is element-wise: /x matches /x and /x/y, not /xy.
        match.path_separated_prefix = m.path
    elif m.path_kind == "raw-prefix":
        match.prefix = m.path
    elif m.path_kind == "regex":
        match.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.path))
    else:
        match.prefix = "/"
    if m.method:
        match.headers.append(rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact=m.method)))
    for h in m.headers:
        match.headers.append(rc.HeaderMatcher(name=h.name, string_match=_string_matcher(h.value, h.regex)))
    for q in m.query:
        match.query_parameters.append(rc.QueryParameterMatcher(name=q.name, string_match=_string_matcher(q.value, q.regex)))
    return match


def _header_options(edits: ir.HeaderEdits) -> list[base_pb2.HeaderValueOption]:
    options = [
        base_pb2.HeaderValueOption(header={"key": k, "value": v}, append_action=OVERWRITE) for k, v in edits.set
    ]
    options += [base_pb2.HeaderValueOption(header={"key": k, "value": v}, append_action=APPEND) for k, v in edits.add]
    return options


def _local_answer(grpc: bool, http_status: int, grpc_status: str, message: str) -> rc.DirectResponseAction:
    if grpc:
        return rc.DirectResponseAction(status=200)
    return rc.DirectResponseAction(status=http_status, body={"inline_string": message})


def _grpc_headers(grpc_status: str, message: str) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(header={"key": "content-type", "value": "application/grpc"}, append_action=OVERWRITE),
        base_pb2.HeaderValueOption(header={"key": "grpc-status", "value": grpc_status}, append_action=OVERWRITE),
        base_pb2.HeaderValueOption(header={"key": "grpc-message", "value": message}, append_action=OVERWRITE),
    ]


def _apply_backends(route: rc.Route, backends: tuple[ir.Backend, ...], grpc: bool) -> None:
    live = [b for b in backends if b.weight > 0]
    valid = [b for b in live if b.kind != "invalid"]
    if not valid:
        reason = next((b.reason for b in live if b.kind == "invalid"), "every backendRef has weight 0")
        message = f"invalid backend: {reason}"
        route.direct_response.CopyFrom(_local_answer(grpc, 500, GRPC_UNKNOWN, message))
        if grpc:
            route.response_headers_to_add.extend(_grpc_headers(GRPC_UNKNOWN, message))
        return
    action = rc.RouteAction(timeout=NO_TIMEOUT)
    if len(live) == 1:
        action.cluster = live[0].cluster
    else:
        # A share that names an invalid backend goes to a cluster without endpoints; the
        # connection manager's local reply maps its 503 UH to 500.
        for b in live:
            action.weighted_clusters.clusters.add(
                name=b.cluster or ir.INVALID_BACKEND_CLUSTER, weight={"value": b.weight}
            )
    route.route.CopyFrom(action)


def replace_prefix(prefix: str, replacement: str) -> regex_pb2.RegexMatchAndSubstitute:
    """Gateway API ReplacePrefixMatch as a regex rewrite. Envoy's ``prefix_rewrite`` is a
    plain string substitution (``/`` -> ``/xyz`` turns ``/bar`` into ``/xyzbar``); Gateway
    API replaces whole path elements (``/xyz/bar``), and ``/foo`` -> ``/`` turns ``/foo/bar``
    into ``/bar``, not ``//bar``."""
    kept = replacement.rstrip("/")
    if prefix == "/":
        pattern, substitution = "^/(.*)$", f"{kept}/\\1"
    elif not kept:
        pattern, substitution = f"^{re.escape(prefix)}/?(.*)$", "/\\1"
    else:
        pattern, substitution = f"^{re.escape(prefix)}(/.*)?$", f"{kept}\\1"
    return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution)


def _redirect(rule: ir.HttpRule, port: int | None) -> rc.RedirectAction:
    r = rule.redirect
    assert r is not None
    redirect = rc.RedirectAction(response_code=REDIRECT_CODES[r.status])
    if r.scheme:
        redirect.scheme_redirect = r.scheme
    if r.hostname:
        redirect.host_redirect = r.hostname
    if r.port:
        redirect.port_redirect = r.port
    elif not r.scheme and port is not None and port != 80:
        # Gateway API: without scheme and port, keep the listener's port; the connection
        # manager strips the Host's port, so name the original destination port.
        redirect.port_redirect = port
    if r.full_path is not None:
        redirect.path_redirect = r.full_path
    elif r.prefix_path is not None:
        redirect.regex_rewrite.CopyFrom(replace_prefix(rule.match.path, r.prefix_path))
    return redirect


def _rule_route(rule: ir.HttpRule, grpc: bool, port: int | None) -> rc.Route:
    route = rc.Route(name=rule.name, match=route_match(rule.match), stat_prefix=route_stat(rule.route))
    if rule.redirect is not None:
        route.redirect.CopyFrom(_redirect(rule, port))
    else:
        _apply_backends(route, rule.backends, grpc)
        if rule.rewrite is not None and route.HasField("route"):
            w = rule.rewrite
            if w.hostname:
                route.route.host_rewrite_literal = w.hostname
            if w.full_path is not None:
                route.route.regex_rewrite.pattern.regex = "^/.*$"
                route.route.regex_rewrite.substitution = w.full_path
            elif w.prefix_path is not None:
                route.route.regex_rewrite.CopyFrom(replace_prefix(rule.match.path, w.prefix_path))
    if rule.request_headers is not None:
        route.request_headers_to_add.extend(_header_options(rule.request_headers))
        route.request_headers_to_remove.extend(rule.request_headers.remove)
    if rule.response_headers is not None:
        route.response_headers_to_add.extend(_header_options(rule.response_headers))
        route.response_headers_to_remove.extend(rule.response_headers.remove)
    return route


def default_route(policy: ir.PortPolicy) -> rc.Route:
    """The route every virtual host ends with: the governor's default action. Memoized:
    callers copy it and never change it."""
    return _default_route(policy.governor, policy.protocol == "grpc")


@functools.lru_cache(maxsize=4096)
def _default_route(governor: ir.Governor, grpc: bool) -> rc.Route:
    route = rc.Route(name=governor.default_route, match=rc.RouteMatch(prefix="/"), stat_prefix=governor.default_route)
    if governor.allow:
        route.route.CopyFrom(rc.RouteAction(cluster=ir.PASSTHROUGH_CLUSTER, timeout=NO_TIMEOUT))
        return route
    route.direct_response.CopyFrom(_local_answer(grpc, 403, GRPC_PERMISSION_DENIED, ir.DENY_BODY))
    if grpc:
        route.response_headers_to_add.extend(_grpc_headers(GRPC_PERMISSION_DENIED, ir.DENY_BODY))
    route.response_headers_to_add.append(
        base_pb2.HeaderValueOption(header={"key": ir.DENIED_BY_HEADER, "value": governor.label}, append_action=OVERWRITE)
    )
    return route


def build_route_config(policy: ir.PortPolicy, name: str | None = None) -> route_pb2.RouteConfiguration:
    grpc = policy.protocol == "grpc"
    config = route_pb2.RouteConfiguration(name=name or route_config_name(policy))
    fallback = default_route(policy)
    for vh in policy.virtual_hosts:
        host = config.virtual_hosts.add(name=vh.domain, domains=[vh.domain])
        host.routes.extend(_rule_route(rule, grpc, policy.port) for rule in vh.rules)
        host.routes.append(fallback)
    return config
