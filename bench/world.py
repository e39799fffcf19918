"""Synthetic worlds for the benchmarks: N namespaces of EgressNetworks and routes, as files.

In: a size (namespaces) and a seedless, deterministic layout. Out: manifest text per file
(``files(n)`` -> {file name: YAML}), the same objects parsed (``objects(n)``), and the two
edits the benchmarks apply: one route changed in one namespace (``namespace_edit``) and one
global EgressNetwork changed (``global_edit``).

Layout of one namespace ``ns-<i>`` (file ``ns-<i>.yaml``):
- 2 local EgressNetworks: ``deny`` (Deny, 203.0.113.0/24 + 198.51.100.0/24 minus a /28) and
  ``allow`` (Allow, a /28 of its own); because the namespace holds EgressNetworks, only these
  govern its clients (Linkerd semantics).
- 10 routes: 6 HTTPRoutes (ports 80 and 8080, hostnames, path/method matches), 2 TLSRoutes
  (port 443, SNI) and 2 TCPRoutes (port 9000), producer routes on the local networks.
Global namespace ``linkerd-egress`` (file ``global.yaml``): 20 EgressNetworks (Deny/Allow over
disjoint /24s of 100.x — public ranges are only names here, nothing is dialled) and 100 routes
on them (HTTP, TLS, TCP). ``consumers`` extra namespaces (file ``consumer-<j>.yaml``) hold
no EgressNetwork but one consumer HTTPRoute on a global network, so they use the global view
and a global change reaches them.
"""

from __future__ import annotations

from egress_xds.model.load import parse_text
from egress_xds.model.objects import TopLevel

GLOBAL_NS = "linkerd-egress"
GLOBAL_NETWORKS = 20
GLOBAL_ROUTES = 100
LOCAL_NETWORKS = 2
LOCAL_ROUTES = 10


def _en(ns: str, name: str, policy: str, cidrs: list[str], excepts: dict[str, list[str]] | None = None) -> str:
    nets = ""
    for cidr in cidrs:
        nets += f"  - cidr: {cidr}\n"
        for ex in (excepts or {}).get(cidr, []):
            nets += f"    except: [{ex}]\n"
    return (f"apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  trafficPolicy: {policy}\n" + (f"  networks:\n{nets}" if nets else ""))


def _parent(name: str, port: int, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return f"  parentRefs:\n  - {{group: policy.linkerd.io, kind: EgressNetwork, name: {name}{ns}, port: {port}}}\n"


def http_route(ns: str, name: str, parent: str, port: int, host: str, path: str,
               method: str = "GET", parent_ns: str | None = None) -> str:
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n" + _parent(parent, port, parent_ns)
            + f"  hostnames: [{host}]\n"
            f"  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: {path}}}\n"
            f"      method: {method}\n")


def tls_route(ns: str, name: str, parent: str, port: int, host: str) -> str:
    return (f"apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n" + _parent(parent, port)
            + f"  hostnames: [{host}]\n  rules:\n  - backendRefs: []\n")


def tcp_route(ns: str, name: str, parent: str, port: int) -> str:
    return (f"apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n" + _parent(parent, port)
            + "  rules:\n  - backendRefs: []\n")


def namespace_name(i: int) -> str:
    return f"ns-{i:04d}"


def namespace_file(i: int, variant: int = 0, sni_variant: int = 0) -> str:
    """One namespace: 2 EgressNetworks, 10 routes. ``variant`` changes one HTTPRoute's path
    (its route configuration changes), ``sni_variant`` one TLSRoute's hostname (the listener's
    filter chains change)."""
    ns = namespace_name(i)
    octet = i % 250
    own = f"198.51.100.{(i % 16) * 16}/28"
    docs = [
        _en(ns, "deny", "Deny", ["203.0.113.0/24", "198.51.100.0/24"], {"198.51.100.0/24": [own]}),
        _en(ns, "allow", "Allow", [own]),
    ]
    for r in range(6):
        port = 80 if r < 4 else 8080
        path = f"/api/v{r}" + (f"/x{variant}" if r == 0 and variant else "")
        docs.append(http_route(ns, f"http-{r}", "deny", port, f"svc{r}.ns{octet}.example.com", path,
                               "GET" if r % 2 == 0 else "POST"))
    for r in range(2):
        suffix = f"-{sni_variant}" if r == 0 and sni_variant else ""
        docs.append(tls_route(ns, f"tls-{r}", "deny", 443, f"tls{r}{suffix}.ns{octet}.example.com"))
    for r in range(2):
        docs.append(tcp_route(ns, f"tcp-{r}", "deny" if r == 0 else "allow", 9000 + r))
    return "---\n".join(docs)


def global_file(variant: int = 0, networks: int = GLOBAL_NETWORKS, routes: int = GLOBAL_ROUTES) -> str:
    """20 global EgressNetworks and 100 routes on them. ``variant`` flips one network's policy."""
    docs = []
    for g in range(networks):
        policy = "Deny" if g % 2 == 0 else "Allow"
        if g == 0 and variant % 2 == 1:
            policy = "Allow"
        cidrs = [f"100.{g}.0.0/16"] if g else []  # g0: every public address (no networks)
        docs.append(_en(GLOBAL_NS, f"global-{g:02d}", policy, cidrs))
    for r in range(routes):
        g = r % networks
        parent = f"global-{g:02d}"
        kind = r % 5
        if kind < 3:
            docs.append(http_route(GLOBAL_NS, f"g-http-{r}", parent, 80 if kind < 2 else 8080,
                                   f"g{r}.example.com", f"/g/{r}"))
        elif kind == 3:
            docs.append(tls_route(GLOBAL_NS, f"g-tls-{r}", parent, 443, f"g{r}.example.com"))
        else:
            docs.append(tcp_route(GLOBAL_NS, f"g-tcp-{r}", parent, 9000 + (r % 3)))
    return "---\n".join(docs)


def consumer_file(j: int) -> str:
    ns = f"consumer-{j:04d}"
    return http_route(ns, "consume", "global-00", 80, f"c{j}.example.com", "/c", parent_ns=GLOBAL_NS)


def files(namespaces: int, consumers: int = 0, global_networks: int = GLOBAL_NETWORKS,
          global_routes: int = GLOBAL_ROUTES) -> dict[str, str]:
    out = {"global.yaml": global_file(0, global_networks, global_routes)}
    for i in range(namespaces):
        out[f"{namespace_name(i)}.yaml"] = namespace_file(i)
    for j in range(consumers):
        out[f"consumer-{j:04d}.yaml"] = consumer_file(j)
    return out


def objects(namespaces: int, consumers: int = 0) -> list[TopLevel]:
    out: list[TopLevel] = []
    for name, text in files(namespaces, consumers).items():
        result = parse_text(text, name)
        if result.errors:
            raise ValueError(f"bench world {name}: {result.errors[0]}")
        out.extend(result.objects)
    return out


def namespace_edit(i: int, variant: int) -> tuple[str, str]:
    """(file, new text): one HTTPRoute's path changed in namespace ``i``."""
    return f"{namespace_name(i)}.yaml", namespace_file(i, variant)


def global_edit(variant: int, networks: int = GLOBAL_NETWORKS, routes: int = GLOBAL_ROUTES) -> tuple[str, str]:
    """(file, new text): global EgressNetwork ``global-00`` flips Deny <-> Allow."""
    return "global.yaml", global_file(variant, networks, routes)
