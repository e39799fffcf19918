"""A brute-force reference of the egress verdict, written from the spec, not from the product.

In: plain manifest dicts (what a user writes) and one query (client namespace, destination IP,
port, and either an SNI, an HTTP host/path/method, or nothing for opaque bytes).
Out: the verdict ``{"egress_network", "route", "action", "destination"}`` that
``egress-semantics.md`` plus the project's recorded decisions demand.

Called only by the property tests, which compare it with ``Translator.explain``. Nothing here
imports ``egress_xds``: every rule is re-derived from the contract, in the most literal way
(scan every object, compute every size, sort every candidate list), so that a disagreement
points at a real difference in understanding. Clarity over speed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

POLICY_GROUP = "policy.linkerd.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GLOBAL_NAMESPACE = "linkerd-egress"
CLUSTER_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
)
DEFAULT_OPAQUE_PORTS = frozenset({25, 587, 3306, 4444, 5432, 6379, 9300, 11211})
OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"
SUPPORTED_HTTP_FILTERS = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"}
)
# Lower rank wins on one (EgressNetwork, port): GRPCRoute > HTTPRoute > TLSRoute > TCPRoute.
KIND_RANK = {"GRPCRoute": 0, "HTTPRoute": 1, "TLSRoute": 2, "TCPRoute": 3}
ROUTE_KINDS = tuple(KIND_RANK)


# ---------------------------------------------------------------------------------------
# Small helpers


def meta(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("metadata") or {}


def ns_of(doc: dict[str, Any]) -> str:
    return meta(doc).get("namespace", "default")


def name_of(doc: dict[str, Any]) -> str:
    return meta(doc)["name"]


def age_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """Oldest first; a missing creationTimestamp counts as the oldest of all."""
    ts = meta(doc).get("creationTimestamp")
    if ts is None:
        return (0,)
    return (1, datetime.fromisoformat(ts.replace("Z", "+00:00")))


def precedence_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """Oldest, then namespace, then name."""
    return (age_key(doc), ns_of(doc), name_of(doc))


def parse_net(text: str) -> Net:
    """A CIDR or a bare IP; host bits may be set."""
    return ipaddress.ip_network(str(text).strip(), strict=False)


def block_size(net: Net) -> int:
    """IPv4: host counts (/31 = 2, /32 = 1, shorter = 2^(32-p) - 2). IPv6: exact 2^(128-p)."""
    if net.version == 4:
        if net.prefixlen < 31:
            return 2 ** (32 - net.prefixlen) - 2
        if net.prefixlen == 31:
            return 2
        return 1
    return 2 ** (128 - net.prefixlen)


def parse_port_list(value: str) -> frozenset[int]:
    ports: set[int] = set()
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        low, sep, high = item.partition("-")
        ports.update(range(int(low), int(high if sep else low) + 1))
    return frozenset(ports)


# ---------------------------------------------------------------------------------------
# EgressNetworks: validity, entries, acceptance, winner


def en_entries(en: dict[str, Any]) -> list[tuple[Net, list[Net]]]:
    """(cidr, excepts) per entry; omitted ``networks`` = everything but the cluster networks."""
    networks = en["spec"].get("networks")
    if networks is None:
        return [
            (ipaddress.ip_network("0.0.0.0/0"), [c for c in CLUSTER_NETWORKS if c.version == 4]),
            (ipaddress.ip_network("::/0"), [c for c in CLUSTER_NETWORKS if c.version == 6]),
        ]
    return [(parse_net(e["cidr"]), [parse_net(x) for x in e.get("except") or []]) for e in networks]


def en_is_valid(en: dict[str, Any]) -> bool:
    """Spec §1: the per-object checks that reject an EgressNetwork."""
    spec = en.get("spec") or {}
    if spec.get("trafficPolicy") not in ("Allow", "Deny"):
        return False
    networks = spec.get("networks")
    if networks is not None and len(networks) == 0:
        return False
    try:
        entries = en_entries(en)
    except ValueError:
        return False
    for cidr, excepts in entries:
        for exc in excepts:
            if exc.version != cidr.version:
                return False
            if not exc.subnet_of(cidr):  # "cidr X does not include exception Y"
                return False
            if exc == cidr:  # "cidr X is completely negated by exception Y"
                return False
    annotation = meta(en).get("annotations", {}).get(OPAQUE_PORTS_ANNOTATION)
    if annotation is not None:
        try:
            parse_port_list(annotation)
        except ValueError:
            return False
    return True


def subtract(nets: list[Net], exc: Net) -> list[Net]:
    out: list[Net] = []
    for net in nets:
        if net.version != exc.version or not net.overlaps(exc):
            out.append(net)
        elif net.subnet_of(exc):  # type: ignore[arg-type]
            continue
        else:
            out.extend(net.address_exclude(exc))  # type: ignore[arg-type]
    return out


def en_is_accepted(en: dict[str, Any]) -> bool:
    """Accepted unless some entry, minus its excepts, still overlaps a cluster network."""
    for cidr, excepts in en_entries(en):
        for cluster in CLUSTER_NETWORKS:
            if cluster.version != cidr.version or not cluster.overlaps(cidr):
                continue
            overlap = cidr if cidr.subnet_of(cluster) else cluster  # type: ignore[arg-type]
            remaining = [overlap]
            for exc in excepts:
                remaining = subtract(remaining, exc)
            if remaining:
                return False
    return True


def en_block_for(en: dict[str, Any], ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
    """The smallest matched entry block of this EgressNetwork for ``ip``, None if none matches."""
    blocks = []
    for cidr, excepts in en_entries(en):
        if cidr.version != ip.version or ip not in cidr:
            continue
        if any(ip in exc for exc in excepts):
            continue
        blocks.append(block_size(cidr) - sum(block_size(exc) for exc in excepts))
    return min(blocks) if blocks else None


def en_opaque_ports(en: dict[str, Any]) -> frozenset[int]:
    annotation = meta(en).get("annotations", {}).get(OPAQUE_PORTS_ANNOTATION)
    return DEFAULT_OPAQUE_PORTS if annotation is None else parse_port_list(annotation)


# ---------------------------------------------------------------------------------------
# The world: valid objects and route programming (statuses are global)


@dataclass(frozen=True)
class Attachment:
    """One route attached to one (EgressNetwork namespace, name, port) parent."""

    route: dict[str, Any] = field(hash=False, compare=False)
    kind: str
    route_ns: str
    route_name: str
    en_ns: str
    en_name: str
    port: int

    @property
    def label(self) -> str:
        return f"{self.kind} {self.route_ns}/{self.route_name}"


class World:
    def __init__(self, manifests: list[dict[str, Any]]):
        self.ens = [d for d in manifests if d["kind"] == "EgressNetwork" and en_is_valid(d)]
        self.services = [d for d in manifests if d["kind"] == "Service"]
        self.routes = [d for d in manifests if d["kind"] in ROUTE_KINDS]
        self.programmed = self._programmed()

    def find_en(self, ns: str, name: str) -> dict[str, Any] | None:
        for en in self.ens:
            if ns_of(en) == ns and name_of(en) == name:
                return en
        return None

    def find_service(self, ns: str, name: str) -> dict[str, Any] | None:
        for svc in self.services:
            if ns_of(svc) == ns and name_of(svc) == name:
                return svc
        return None

    @staticmethod
    def route_is_supported(route: dict[str, Any]) -> bool:
        """Route-wide checks: HTTP filters we support; TLS/TCP routes have exactly one rule."""
        kind = route["kind"]
        rules = route["spec"].get("rules")
        if kind in ("HTTPRoute", "GRPCRoute"):
            for rule in rules or []:
                for flt in rule.get("filters") or []:
                    if flt["type"] not in SUPPORTED_HTTP_FILTERS:
                        return False
            return True
        return rules is not None and len(rules) == 1

    def _programmed(self) -> list[Attachment]:
        eligible: list[Attachment] = []
        for route in self.routes:
            supported = self.route_is_supported(route)
            for parent in route["spec"].get("parentRefs") or []:
                if parent.get("group") != POLICY_GROUP or parent.get("kind") != "EgressNetwork":
                    continue  # not ours (a Gateway parent, say)
                en_ns = parent.get("namespace", ns_of(route))
                port = parent.get("port")
                en = self.find_en(en_ns, parent["name"])
                if port is None or en is None or not en_is_accepted(en) or not supported:
                    continue
                if route["kind"] != "TCPRoute" and port in en_opaque_ports(en):
                    continue
                eligible.append(Attachment(route, route["kind"], ns_of(route), name_of(route),
                                           en_ns, parent["name"], port))
        # Conflicts: per parent (EN namespace, name, port), only the highest kind survives
        # among the routes that can be seen together: a producer route (in the EN's namespace)
        # competes with the producer routes; a consumer route with the producer routes and the
        # consumer routes of its own namespace. A consumer route never changes what another
        # namespace sees.
        programmed = []
        for att in eligible:
            rivals = [a for a in eligible
                      if (a.en_ns, a.en_name, a.port) == (att.en_ns, att.en_name, att.port)
                      and (a.route_ns == a.en_ns or a.route_ns == att.route_ns)]
            best = min(KIND_RANK[a.kind] for a in rivals)
            if KIND_RANK[att.kind] == best:
                programmed.append(att)
        return programmed

    # -----------------------------------------------------------------------------------
    # The verdict

    def governor(self, namespace: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, Any] | None:
        local = [en for en in self.ens if ns_of(en) == namespace]
        candidates = local or [en for en in self.ens if ns_of(en) == GLOBAL_NAMESPACE]
        ranked = []
        for en in candidates:
            block = en_block_for(en, ip)
            if block is not None:
                ranked.append(((block, *precedence_key(en)), en))
        if not ranked:
            return None
        ranked.sort(key=lambda pair: pair[0])
        return ranked[0][1]

    def explain(
        self,
        namespace: str,
        ip: str,
        port: int,
        sni: str | None = None,
        host: str | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        addr = ipaddress.ip_address(ip)
        original = format_destination(addr, port)
        en = self.governor(namespace, addr)
        if en is None:
            return verdict(None, None, "forward", original)
        en_label = f"{ns_of(en)}/{name_of(en)}"
        allow = en["spec"]["trafficPolicy"] == "Allow"
        default = verdict(en_label, "default", "forward" if allow else "deny", original if allow else None)

        visible = [
            a for a in self.programmed
            if (a.en_ns, a.en_name, a.port) == (ns_of(en), name_of(en), port)
            and a.route_ns in (ns_of(en), namespace)  # producer routes, or consumer routes of N
        ]
        # A consumer route of a higher kind than the producer routes hides them for N.
        kind = min((a.kind for a in visible), key=KIND_RANK.__getitem__, default=None)
        visible = [a for a in visible if a.kind == kind]
        is_tls = sni is not None
        is_http = not is_tls and host is not None

        if port in en_opaque_ports(en) or kind == "TCPRoute":
            tcp = sorted((a for a in visible if a.kind == "TCPRoute"), key=lambda a: precedence_key(a.route))
            if not tcp:
                return default
            rule = tcp[0].route["spec"]["rules"][0]
            return self.rule_verdict(tcp[0], rule, en_label, original)
        if kind == "TLSRoute":
            if not is_tls:
                return default
            picked = pick_tls(visible, sni)  # type: ignore[arg-type]
            if picked is None:
                return default
            return self.rule_verdict(picked, picked.route["spec"]["rules"][0], en_label, original)
        if kind in ("HTTPRoute", None):
            if not is_http:
                return default
            picked_rule = pick_http(visible, host, path or "/", method)  # type: ignore[arg-type]
            if picked_rule is None:
                return default
            att, rule = picked_rule
            return self.rule_verdict(att, rule, en_label, original)
        raise NotImplementedError(f"reference does not model {kind}")

    def rule_verdict(self, att: Attachment, rule: dict[str, Any], en_label: str, original: str) -> dict[str, Any]:
        route_label = att.label
        if any(f["type"] == "RequestRedirect" for f in rule.get("filters") or []):
            return verdict(en_label, route_label, "redirect", None)
        refs = rule.get("backendRefs") or []
        if not refs:
            return verdict(en_label, route_label, "forward", original)
        best = refs[0]
        for ref in refs[1:]:
            if ref.get("weight", 1) > best.get("weight", 1):
                best = ref
        if best.get("weight", 1) == 0:
            return verdict(en_label, route_label, "invalid", None)
        group = best.get("group", "")
        kind = best.get("kind", "Service")
        ref_ns = best.get("namespace", att.route_ns)
        if group == POLICY_GROUP and kind == "EgressNetwork":
            if (ref_ns, best["name"]) == (att.en_ns, att.en_name):
                return verdict(en_label, route_label, "forward", original)
            return verdict(en_label, route_label, "invalid", None)  # another or a missing EN
        if group == "" and kind == "Service":
            svc = self.find_service(ref_ns, best["name"])
            cluster_ip = (svc or {}).get("spec", {}).get("clusterIP")
            if best.get("port") is None or svc is None or cluster_ip in (None, "", "None"):
                return verdict(en_label, route_label, "invalid", None)
            return verdict(en_label, route_label, "redirect",
                           format_destination(ipaddress.ip_address(cluster_ip), best["port"]))
        return verdict(en_label, route_label, "invalid", None)


def verdict(en: str | None, route: str | None, action: str, destination: str | None) -> dict[str, Any]:
    return {"egress_network": en, "route": route, "action": action, "destination": destination}


def format_destination(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"{addr}:{port}" if addr.version == 4 else f"[{addr}]:{port}"


# ---------------------------------------------------------------------------------------
# Hostname, SNI and HTTP matching


def normalize_host(host: str) -> str:
    return host.lower().rstrip(".")


def host_specificity(pattern: str, host: str) -> tuple[int, int] | None:
    """(2, len) exact, (1, len) wildcard with at least one extra label, None: no match."""
    pattern = normalize_host(pattern)
    host = normalize_host(host)
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        if host.endswith(suffix) and len(host) > len(suffix):
            return (1, len(pattern))
        return None
    return (2, len(pattern)) if pattern == host else None


def route_host_specificity(route: dict[str, Any], host: str) -> tuple[int, int] | None:
    """Best matching hostname of the route; a route without hostnames matches any host at (0, 0)."""
    hostnames = route["spec"].get("hostnames") or []
    if not hostnames:
        return (0, 0)
    matches = [s for s in (host_specificity(h, host) for h in hostnames) if s is not None]
    return max(matches) if matches else None


def pick_tls(visible: list[Attachment], sni: str) -> Attachment | None:
    ranked = []
    for att in visible:
        spec = route_host_specificity(att.route, sni)
        if spec is not None:
            ranked.append(((-spec[0], -spec[1], *precedence_key(att.route)), att))
    ranked.sort(key=lambda pair: pair[0])
    return ranked[0][1] if ranked else None


def normalized_prefix(value: str) -> str:
    return value.rstrip("/") or "/"


def path_matches(match: dict[str, Any], path: str) -> bool:
    pm = match.get("path") or {}
    kind = pm.get("type", "PathPrefix")
    value = pm.get("value", "/")
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        prefix = normalized_prefix(value)
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")
    raise NotImplementedError(kind)


def path_rank(match: dict[str, Any]) -> tuple[int, int]:
    """Exact first, then longer prefixes (trailing '/' ignored)."""
    pm = match.get("path") or {}
    if pm.get("type", "PathPrefix") == "Exact":
        return (0, 0)
    return (1, -len(normalized_prefix(pm.get("value", "/"))))


def request_matches(match: dict[str, Any], path: str, method: str | None) -> bool:
    if not path_matches(match, path):
        return False
    if match.get("method") is not None and match["method"] != method:
        return False
    # The query carries no headers and no query string: any such condition fails.
    return not match.get("headers") and not match.get("queryParams")


def pick_http(
    visible: list[Attachment], host: str, path: str, method: str | None
) -> tuple[Attachment, dict[str, Any]] | None:
    ranked = []
    for att in visible:
        spec = route_host_specificity(att.route, host)
        if spec is None:
            continue
        rules = att.route["spec"].get("rules")
        if rules is None:
            rules = [{}]  # rules omitted: one rule matching everything
        for rule_index, rule in enumerate(rules):
            matches = rule.get("matches") or [{}]  # no matches: PathPrefix "/"
            for match_index, match in enumerate(matches):
                key = (
                    -spec[0], -spec[1],
                    path_rank(match),
                    0 if match.get("method") is not None else 1,
                    -len(match.get("headers") or []),
                    -len(match.get("queryParams") or []),
                    *precedence_key(att.route),
                    rule_index, match_index,
                )
                ranked.append((key, att, rule, match))
    ranked.sort(key=lambda item: item[0])
    for _key, att, rule, match in ranked:
        if request_matches(match, path, method):
            return att, rule
    return None


def reference_explain(manifests: list[dict[str, Any]], namespace: str, ip: str, port: int,
                      **query: Any) -> dict[str, Any]:
    return World(manifests).explain(namespace, ip, port, **query)
