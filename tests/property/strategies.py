"""Hypothesis strategies for random egress worlds (manifest dicts) and queries against them.

Out: ``worlds()`` draws a list of manifests: EgressNetworks (Allow/Deny, omitted networks,
several entries, excepts, overlapping blocks, IPv6, timestamps that tie or are missing, names
that tie, opaque-ports annotations, some rejected ones) in the global egress namespace and in
ns-a/ns-b; HTTP/TLS/TCP routes (producer and consumer, several parentRefs, hostnames, paths,
methods, filters, backendRefs of every kind) on ports 80/443/8080/5432; Services with
clusterIPs in 198.51.100.200-250. Half of the parentRefs name one "hot" (EgressNetwork, port),
and a few producer routes of one kind are added there, so that routes compete and conflict.
``cases()`` draws a world plus queries aimed at that world: at programmed routes (their
client, an address of their EgressNetwork, their port, hostnames and paths), at cidr and
except edges, and at random or in-cluster addresses.

Addresses stay inside 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32, a few wider blocks,
and a few cluster-network blocks (non-accepted EgressNetworks). The reference is used here
only to aim queries, never to decide a verdict. Called by the property tests.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from .reference import (
    CLUSTER_NETWORKS,
    GLOBAL_NAMESPACE,
    World,
    en_entries,
    en_is_accepted,
    en_is_valid,
    ns_of,
    parse_net,
)

POLICY_GROUP = "policy.linkerd.io"
EN_NAMESPACES = (GLOBAL_NAMESPACE, "ns-a", "ns-b")
# ns-c holds routes and maybe an invalid EgressNetwork, never a valid one; ns-d holds nothing.
ROUTE_NAMESPACES = (GLOBAL_NAMESPACE, "ns-a", "ns-b", "ns-c")
CLIENT_NAMESPACES = (GLOBAL_NAMESPACE, "ns-a", "ns-b", "ns-c", "ns-d")
EN_NAMES = ("en-a", "en-b", "en-c", "web")
ROUTE_NAMES = ("r1", "r2", "r3")
CONTEST_NAMES = ("c1", "c2", "c3")
SERVICE_NAMES = ("svc-a", "svc-b")
TIMESTAMPS = (None, "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-06-01T12:00:00Z")
ROUTE_PORTS = (80, 443, 8080, 5432)
QUERY_PORTS = (80, 443, 8080, 5432, 3306, 9000)
ROUTE_HOSTNAMES = ("example.com", "api.example.com", "x.api.example.com", "*.example.com",
                   "*.api.example.com", "other.org", "*.org")
SNIS = ("example.com", "api.example.com", "x.api.example.com", "a.b.example.com", "b.example.com",
        "other.org", "foo.org", "unmatched.net")
ROUTE_PATHS = ("/", "/api", "/api/", "/api/v1", "/apix", "/other")
QUERY_PATHS = ("/", "/api", "/api/", "/api/v1", "/api/v1/x", "/apix", "/apixyz", "/other", "/x")
METHODS = ("GET", "POST")

# Where addresses and small blocks are drawn from.
ANCHORS = tuple(ipaddress.ip_network(n) for n in (
    "198.51.100.0/24", "203.0.113.0/24", "10.1.2.0/24", "2001:db8::100/120",
))
SMALL_BASES = ANCHORS[:2]
WIDE_BLOCKS = ("203.0.0.0/16", "198.51.0.0/16", "203.0.112.0/22", "0.0.0.0/0", "2001:db8::/32",
               "2001:db8::/64", "::/0", "10.1.0.0/16", "192.168.1.0/24", "fd00:1::/64", "100.0.0.0/8")
CLUSTER_EXCEPTS_V4 = [str(c) for c in CLUSTER_NETWORKS if c.version == 4]


def address_in(draw: st.DrawFn, net: Any) -> Any:
    """An address of ``net``, preferably inside one of the anchor ranges."""
    anchors = [a for a in ANCHORS if a.version == net.version and a.overlaps(net)]
    sub = net
    if anchors:
        anchor = draw(st.sampled_from(anchors))
        sub = anchor if anchor.subnet_of(net) else net
    return sub.network_address + draw(st.integers(0, sub.num_addresses - 1))


@st.composite
def cidrs(draw: st.DrawFn) -> str:
    choice = draw(st.sampled_from(["small", "small", "small", "small", "v6", "wide"]))
    if choice == "wide":
        return draw(st.sampled_from(WIDE_BLOCKS))
    if choice == "v6":
        base = ipaddress.ip_network("2001:db8::100/120")
        prefix = draw(st.sampled_from([32, 64, 112, 120, 124, 126, 127, 128]))
    else:
        base = draw(st.sampled_from(SMALL_BASES))
        prefix = draw(st.sampled_from([24, 25, 26, 27, 28, 29, 30, 31, 32]))
    # half of the blocks crowd into the first 16 addresses, so small blocks overlap and tie
    window = draw(st.sampled_from([16, base.num_addresses]))
    addr = base.network_address + draw(st.integers(0, window - 1))
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    # sometimes written with host bits set, or as a bare address
    style = draw(st.sampled_from(["net", "net", "net", "hostbits", "bare"]))
    if style == "hostbits" and net.num_addresses > 1:
        return f"{address_in(draw, net)}/{prefix}"
    if style == "bare" and net.num_addresses == 1:
        return str(net.network_address)
    return str(net)


@st.composite
def excepts_for(draw: st.DrawFn, cidr_text: str) -> list[str]:
    cidr = parse_net(cidr_text)
    if str(cidr) == "0.0.0.0/0" and draw(st.booleans()):
        return list(CLUSTER_EXCEPTS_V4)  # the "everything outside the cluster" idiom: accepted
    maxlen = cidr.max_prefixlen
    out = []
    for _ in range(draw(st.integers(0, 2))):
        if cidr.prefixlen >= maxlen:
            break
        low = cidr.prefixlen + 1
        if maxlen - low > 12:  # wide blocks: land the except on something interesting
            low = maxlen - 12
        prefix = draw(st.integers(low, maxlen))
        addr = address_in(draw, cidr)
        out.append(str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False)))
    return out


@st.composite
def networks(draw: st.DrawFn) -> list[dict[str, Any]] | None:
    shape = draw(st.sampled_from(["entries"] * 12 + ["omitted"] * 2 + ["empty", "bad-except"]))
    if shape == "omitted":
        return None
    if shape == "empty":
        return []  # invalid: rejected by the loader, so it must not exist
    entries = []
    for _ in range(draw(st.integers(1, 3))):
        cidr = draw(cidrs())
        entry: dict[str, Any] = {"cidr": cidr}
        exc = draw(excepts_for(cidr))
        if exc:
            entry["except"] = exc
        entries.append(entry)
    if shape == "bad-except":
        entries[0]["except"] = ["198.18.0.0/28" if parse_net(entries[0]["cidr"]).version == 4 else "2001:db9::/64"]
    return entries


def metadata(draw: st.DrawFn, ns: str, name: str) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    ts = draw(st.sampled_from(TIMESTAMPS))
    if ts is not None:
        md["creationTimestamp"] = ts
    return md


@st.composite
def egress_network(draw: st.DrawFn, ns: str, name: str) -> dict[str, Any]:
    md = metadata(draw, ns, name)
    opaque = draw(st.sampled_from([None] * 6 + ["8080", "443,5432", "", "80-81,9000"]))
    if opaque is not None:
        md["annotations"] = {"config.linkerd.io/opaque-ports": opaque}
    spec: dict[str, Any] = {"trafficPolicy": draw(st.sampled_from(["Allow", "Deny"]))}
    nets = draw(networks())
    if nets is not None:
        spec["networks"] = nets
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork", "metadata": md, "spec": spec}


@st.composite
def parent_ref(draw: st.DrawFn, route_ns: str, ens: list[tuple[str, str]],
               hot: tuple[tuple[str, str], int]) -> dict[str, Any]:
    """Half of the parentRefs name the world's "hot" (EgressNetwork, port), so routes compete."""
    shape = draw(st.sampled_from(["hot"] * 7 + ["existing"] * 6 + ["missing", "gateway"]))
    if shape == "gateway":
        return {"name": "gw", "port": 80}
    if shape == "hot":
        (en_ns, en_name), port = hot
    elif shape == "missing" or not ens:
        en_ns, en_name = draw(st.sampled_from(EN_NAMESPACES)), "nope"
    else:
        en_ns, en_name = draw(st.sampled_from(ens))
    ref: dict[str, Any] = {"group": POLICY_GROUP, "kind": "EgressNetwork", "name": en_name}
    if en_ns != route_ns or draw(st.booleans()):
        ref["namespace"] = en_ns
    if shape != "hot" or not draw(st.integers(0, 5)):
        port = draw(st.sampled_from(ROUTE_PORTS * 3 + (None,)))
    if port is not None:
        ref["port"] = port
    return ref


@st.composite
def backend_refs(draw: st.DrawFn, route_ns: str, parents: list[dict[str, Any]],
                 ens: list[tuple[str, str]]) -> list[dict[str, Any]]:
    refs = []
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        shape = draw(st.sampled_from(["parent", "parent", "service", "service", "service-no-port",
                                      "other-en", "other-kind"]))
        ref: dict[str, Any]
        if shape == "parent" and parents:
            p = parents[0]
            ref = {"group": POLICY_GROUP, "kind": "EgressNetwork", "name": p["name"]}
            target_ns = p.get("namespace", route_ns)
            if target_ns != route_ns or draw(st.booleans()):
                ref["namespace"] = target_ns
            ref["port"] = p.get("port", 80)
        elif shape == "other-en":
            en_ns, en_name = draw(st.sampled_from(ens)) if ens else (GLOBAL_NAMESPACE, "nope")
            ref = {"group": POLICY_GROUP, "kind": "EgressNetwork", "name": en_name, "namespace": en_ns, "port": 80}
        elif shape == "other-kind":
            ref = {"group": draw(st.sampled_from(["", "example.io"])), "kind": "Pod", "name": "svc-a", "port": 80}
        else:
            ref = {"name": draw(st.sampled_from(SERVICE_NAMES + ("svc-missing",)))}
            if draw(st.booleans()):
                ref["namespace"] = draw(st.sampled_from(ROUTE_NAMESPACES))
            if shape == "service":
                ref["port"] = draw(st.sampled_from([80, 8080]))
        weight = draw(st.sampled_from([None, None, None, 0, 1, 3]))
        if weight is not None:
            ref["weight"] = weight
        refs.append(ref)
    return refs


HTTP_FILTERS = (
    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}},
    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-b", "value": "2"}]}},
    {"type": "RequestRedirect", "requestRedirect": {"hostname": "redirect.example.net", "statusCode": 301}},
    {"type": "URLRewrite", "urlRewrite": {"hostname": "rewritten.example.net"}},
    {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "svc-a", "port": 80}}},
)


@st.composite
def http_match(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if draw(st.integers(0, 4)):
        match["path"] = {"type": draw(st.sampled_from(["PathPrefix", "PathPrefix", "Exact"])),
                         "value": draw(st.sampled_from(ROUTE_PATHS))}
    method = draw(st.sampled_from([None, None, *METHODS]))
    if method is not None:
        match["method"] = method
    if draw(st.integers(0, 9)) == 0:
        match["headers"] = [{"name": "x-user", "value": "alice"}]
    if draw(st.integers(0, 14)) == 0:
        match["queryParams"] = [{"name": "q", "value": "1"}]
    return match


@st.composite
def http_rule(draw: st.DrawFn, route_ns: str, parents: list[dict[str, Any]],
              ens: list[tuple[str, str]]) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    n_matches = draw(st.sampled_from([None, 0, 1, 1, 2]))
    if n_matches is not None:
        rule["matches"] = [draw(http_match()) for _ in range(n_matches)]
    filters = draw(st.sampled_from([(), (), (), (), (0,), (1,), (2,), (3,), (0, 1), (4,)]))
    if filters:
        rule["filters"] = [HTTP_FILTERS[i] for i in filters]
    refs = draw(backend_refs(route_ns, parents, ens))
    if refs:
        rule["backendRefs"] = refs
    return rule


def stream_rules(draw: st.DrawFn, route_ns: str, parents: list[dict[str, Any]],
                 ens: list[tuple[str, str]]) -> list[dict[str, Any]] | None:
    count = draw(st.sampled_from([1] * 12 + [0, 2, None]))
    if count is None:
        return None
    rules = []
    for _ in range(count):
        refs = draw(backend_refs(route_ns, parents, ens))
        rules.append({"backendRefs": refs} if refs else {})
    return rules


@st.composite
def route(draw: st.DrawFn, kind: str, ns: str, name: str, ens: list[tuple[str, str]],
          hot: tuple[tuple[str, str], int], contest: bool = False) -> dict[str, Any]:
    parents: list[dict[str, Any]] = []
    seen = set()
    if contest:  # a producer route on the hot parent, with a port: it will compete
        (en_ns, en_name), port = hot
        parents.append({"group": POLICY_GROUP, "kind": "EgressNetwork", "name": en_name, "port": port})
        seen.add((POLICY_GROUP, en_ns, en_name, port))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        p = draw(parent_ref(ns, ens, hot))
        key = (p.get("group"), p.get("namespace", ns), p["name"], p.get("port"))
        if key not in seen:
            seen.add(key)
            parents.append(p)
    spec: dict[str, Any] = {"parentRefs": parents}
    if kind in ("HTTPRoute", "TLSRoute"):
        hostnames = draw(st.lists(st.sampled_from(ROUTE_HOSTNAMES), max_size=2, unique=True))
        if hostnames:
            spec["hostnames"] = hostnames
    if kind == "HTTPRoute":
        n_rules = draw(st.sampled_from([None, 1, 1, 2, 3]))
        if n_rules is not None:
            spec["rules"] = [draw(http_rule(ns, parents, ens)) for _ in range(n_rules)]
        api = draw(st.sampled_from(["gateway.networking.k8s.io/v1"] * 3
                                   + ["gateway.networking.k8s.io/v1beta1", "policy.linkerd.io/v1beta3"]))
    else:
        rules = stream_rules(draw, ns, parents, ens)
        if rules is not None:
            spec["rules"] = rules
        api = "gateway.networking.k8s.io/v1alpha2"
    return {"apiVersion": api, "kind": kind, "metadata": metadata(draw, ns, name), "spec": spec}


@st.composite
def service(draw: st.DrawFn, ns: str, name: str) -> dict[str, Any]:
    ip = draw(st.sampled_from(["None"] + [f"198.51.100.{i}" for i in range(200, 251)]))  # "None": headless
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}, {"port": 8080}]}}


@st.composite
def worlds(draw: st.DrawFn) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    # 1-4 global EgressNetworks; ns-a and ns-b sometimes hold their own (hiding the global
    # ones); ns-c sometimes holds a rejected one (so it still sees the global ones).
    en_keys = [(GLOBAL_NAMESPACE, n) for n in draw(st.lists(st.sampled_from(EN_NAMES), min_size=1, max_size=4, unique=True))]
    en_keys += [("ns-a", n) for n in draw(st.lists(st.sampled_from(EN_NAMES), max_size=2, unique=True))]
    en_keys += [("ns-b", n) for n in draw(st.lists(st.sampled_from(EN_NAMES), max_size=1, unique=True))]
    en_keys += [("ns-c", n) for n in draw(st.lists(st.sampled_from(EN_NAMES), max_size=1, unique=True))]
    for ns, name in en_keys:
        doc = draw(egress_network(ns, name))
        if ns == "ns-c":
            doc["spec"]["networks"] = []  # rejected by the loader
        manifests.append(doc)
    usable = [(ns_of(d), d["metadata"]["name"]) for d in manifests if en_is_valid(d) and en_is_accepted(d)]
    hot = ((usable or en_keys)[0], draw(st.sampled_from([80, 443, 8080, 80, 443, 5432])))
    # a world leans to one route kind, so that routes of that kind compete with each other
    kinds = draw(st.sampled_from([
        ["HTTPRoute"] * 4 + ["TLSRoute", "TCPRoute"],
        ["TLSRoute"] * 4 + ["HTTPRoute", "TCPRoute"],
        ["TCPRoute"] * 3 + ["TLSRoute", "HTTPRoute"],
        ["HTTPRoute", "HTTPRoute", "TLSRoute", "TCPRoute"],
    ]))
    route_keys = draw(st.lists(
        st.tuples(st.sampled_from(kinds),
                  st.sampled_from(ROUTE_NAMESPACES), st.sampled_from(ROUTE_NAMES)),
        min_size=2, max_size=10, unique=True))
    for kind, ns, name in route_keys:
        manifests.append(draw(route(kind, ns, name, en_keys, hot)))
    # sometimes a few producer routes of one kind on the hot parent: precedence decides
    contest_kind = draw(st.sampled_from(["HTTPRoute", "TLSRoute", "TCPRoute"]))
    for name in CONTEST_NAMES[:draw(st.sampled_from([0, 2, 2, 3]))]:
        manifests.append(draw(route(contest_kind, hot[0][0], name, en_keys, hot, contest=True)))
    # svc-a exists in most route namespaces; svc-b sometimes; svc-missing never
    svc_keys = [(ns, "svc-a") for ns in ROUTE_NAMESPACES if draw(st.integers(0, 3))]
    svc_keys += draw(st.lists(st.tuples(st.sampled_from(ROUTE_NAMESPACES), st.just("svc-b")), max_size=2, unique=True))
    for ns, name in svc_keys:
        manifests.append(draw(service(ns, name)))
    return manifests


def interesting_addresses(manifests: list[dict[str, Any]]) -> list[str]:
    """Edges of every cidr and except (first, last, one outside on each side)."""
    out: set[str] = set()
    for doc in manifests:
        if doc["kind"] != "EgressNetwork":
            continue
        for entry in doc["spec"].get("networks") or []:
            for text in [entry["cidr"], *(entry.get("except") or [])]:
                try:
                    net = parse_net(text)
                except ValueError:
                    continue
                first, last = net.network_address, net.broadcast_address
                for addr in (first, last, first - 1 if int(first) > 0 else first,
                             last + 1 if int(last) < (2 ** net.max_prefixlen - 1) else last):
                    out.add(str(addr))
    return sorted(out)


@dataclass(frozen=True)
class Query:
    namespace: str
    ip: str
    port: int
    sni: str | None = None
    host: str | None = None
    path: str | None = None
    method: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in (("sni", self.sni), ("host", self.host), ("path", self.path),
                                  ("method", self.method)) if v is not None}


FIXED_ADDRESSES = ("10.1.2.3", "10.0.0.1", "192.168.1.7", "8.8.8.8", "2001:db8::1", "2001:db8::101",
                   "fd00:1::5", "100.64.0.1")


def route_ports(manifests: list[dict[str, Any]]) -> list[int]:
    return sorted({p["port"] for d in manifests if d["kind"] != "EgressNetwork" and d["kind"] != "Service"
                   for p in d["spec"].get("parentRefs", []) if "port" in p})


def names_for(manifests: list[dict[str, Any]], unrelated: bool = True) -> list[str]:
    """Hostnames a query could carry: every route hostname, wildcards instantiated (plus SNIS)."""
    out = set(SNIS) if unrelated else set()
    for doc in manifests:
        for h in doc.get("spec", {}).get("hostnames") or []:
            out.update([h[2:], "q." + h[2:], "a.b." + h[2:]] if h.startswith("*.") else [h])
    return sorted(out)


def entry_networks(manifests: list[dict[str, Any]], namespace: str) -> list[Any]:
    """The cidrs of the EgressNetworks that are candidates for ``namespace`` (biasing only)."""
    ens = [d for d in manifests if d["kind"] == "EgressNetwork" and en_is_valid(d)]
    local = [d for d in ens if d["metadata"]["namespace"] == namespace]
    nets = []
    for doc in local or [d for d in ens if d["metadata"]["namespace"] == GLOBAL_NAMESPACE]:
        for cidr, excepts in en_entries(doc):
            nets.append(cidr)
            nets.extend(excepts)
    return nets


def paths_for(route: dict[str, Any]) -> list[str]:
    """Paths around the route's own matches: the value, below it, and a sibling sharing the prefix."""
    out = set()
    for rule in route["spec"].get("rules") or []:
        for match in rule.get("matches") or []:
            value = (match.get("path") or {}).get("value", "/")
            out.update([value, value.rstrip("/") + "/x"])
            if value.rstrip("/"):
                out.add(value.rstrip("/") + "x")
    return sorted(out)


@st.composite
def queries(draw: st.DrawFn, manifests: list[dict[str, Any]], world: World | None = None,
            edges: list[str] | None = None) -> Query:
    """One query; ``world`` and ``edges`` are precomputed from ``manifests`` when given."""
    world = world or World(manifests)
    edges = interesting_addresses(manifests) if edges is None else edges
    ns = draw(st.sampled_from(CLIENT_NAMESPACES))
    inside = entry_networks(manifests, ns)
    source = draw(st.sampled_from(["route"] * 14 + ["inside"] * 4 + ["edge"] * 3 + ["anchor", "fixed"]))
    port = None
    shapes = ["tls", "http", "http", "opaque"]
    names = names_for(manifests)
    paths = list(QUERY_PATHS)
    if source == "route" and world.programmed:
        # aim at a programmed route: a client that can see it, an address of its EgressNetwork,
        # its port, and (mostly) its hostnames and paths
        parents = Counter((a.en_ns, a.en_name, a.port) for a in world.programmed)
        contested = [a for a in world.programmed if parents[(a.en_ns, a.en_name, a.port)] > 1]
        att = draw(st.sampled_from(contested if contested and draw(st.integers(0, 3)) else world.programmed))
        en = world.find_en(att.en_ns, att.en_name)
        assert en is not None
        if att.route_ns != att.en_ns:
            ns = att.route_ns
        elif att.en_ns != GLOBAL_NAMESPACE:
            ns = att.en_ns
        else:  # a client without local EgressNetworks
            ns = draw(st.sampled_from([n for n in CLIENT_NAMESPACES
                                       if not any(ns_of(e) == n for e in world.ens)] or [ns]))
        for _attempt in range(4):  # prefer an address this EgressNetwork actually governs
            cidr, _ = draw(st.sampled_from(en_entries(en)))
            ip = str(address_in(draw, cidr))
            if world.governor(ns, ipaddress.ip_address(ip)) is en:
                break
        port = att.port
        shapes += {"HTTPRoute": ["http"] * 6, "TLSRoute": ["tls"] * 6}.get(att.kind, [])
        if att.route["spec"].get("hostnames") and draw(st.integers(0, 3)):
            names = names_for([att.route], unrelated=False)
        if att.kind == "HTTPRoute" and draw(st.integers(0, 3)):
            paths = paths_for(att.route) or paths
    elif source in ("inside", "route") and inside:
        ip = str(address_in(draw, draw(st.sampled_from(inside))))
    elif source == "edge" and edges:
        ip = draw(st.sampled_from(edges))
    elif source == "fixed":
        ip = draw(st.sampled_from(FIXED_ADDRESSES))
    else:
        ip = str(address_in(draw, draw(st.sampled_from(ANCHORS))))
    used_ports = route_ports(manifests)
    if port is None:
        if used_ports and draw(st.integers(0, 3)):
            port = draw(st.sampled_from(used_ports))
        else:
            port = draw(st.sampled_from(QUERY_PORTS))
    shape = draw(st.sampled_from(shapes))
    if shape == "tls":
        return Query(ns, ip, port, sni=draw(st.sampled_from(names)))
    if shape == "http":
        host = draw(st.sampled_from(names))
        host = draw(st.sampled_from([host, host, host, host.upper(), host + "."]))
        return Query(ns, ip, port, host=host,
                     path=draw(st.sampled_from(paths)), method=draw(st.sampled_from(METHODS)))
    return Query(ns, ip, port)


@st.composite
def cases(draw: st.DrawFn, max_queries: int = 12) -> tuple[list[dict[str, Any]], list[Query]]:
    manifests = draw(worlds())
    # the reference only biases the queries towards routes and edges; it never decides a verdict here
    world, edges = World(manifests), interesting_addresses(manifests)
    qs = draw(st.lists(queries(manifests, world, edges), min_size=2, max_size=max_queries))
    return manifests, qs
