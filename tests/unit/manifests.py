"""Manifest builders and one-call helpers shared by the table-driven unit tests.

Every test goes through the public API: manifests (plain dicts, as a user would write them)
-> ``egress_xds.model.load.parse_text`` -> ``Translator.load`` -> ``explain`` /
``status_report`` / ``resources``. Addresses are documentation ranges only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from egress_xds.model.load import LoadResult, parse_text
from egress_xds.resources import dump
from egress_xds.translate import Translator, TranslatorOptions

GLOBAL = "linkerd-egress"
POLICY = "policy.linkerd.io"
GATEWAY = "gateway.networking.k8s.io"

Doc = dict[str, Any]


def meta(name: str, namespace: str, created: str | None = None,
         annotations: Mapping[str, str] | None = None) -> Doc:
    out: Doc = {"name": name, "namespace": namespace}
    if created is not None:
        out["creationTimestamp"] = created
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def egress(name: str, namespace: str = GLOBAL, policy: str = "Deny", networks: Any = None,
           created: str | None = None, annotations: Mapping[str, str] | None = None) -> Doc:
    """An EgressNetwork. ``networks``: None = omitted; a list of CIDR strings or of
    ``{"cidr": ..., "except": [...]}`` dicts."""
    spec: Doc = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = [n if isinstance(n, dict) else {"cidr": n} for n in networks]
    return {"apiVersion": f"{POLICY}/v1alpha1", "kind": "EgressNetwork",
            "metadata": meta(name, namespace, created, annotations), "spec": spec}


def parent(name: str, port: int | None, namespace: str | None = None) -> Doc:
    ref: Doc = {"group": POLICY, "kind": "EgressNetwork", "name": name}
    if namespace is not None:
        ref["namespace"] = namespace
    if port is not None:
        ref["port"] = port
    return ref


def _parents(parent_name: str | None, port: int | None, parent_ns: str | None,
             parents: Sequence[Doc] | None) -> list[Doc]:
    if parents is not None:
        return list(parents)
    return [parent(parent_name or "internet", port, parent_ns)]


def http_route(name: str, namespace: str = GLOBAL, *, en: str = "internet", port: int | None = 80,
               en_ns: str | None = None, hostnames: Sequence[str] = (), rules: Sequence[Doc] | None = None,
               created: str | None = None, parents: Sequence[Doc] | None = None,
               api_version: str = f"{GATEWAY}/v1") -> Doc:
    spec: Doc = {"parentRefs": _parents(en, port, en_ns, parents)}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    if rules is not None:
        spec["rules"] = list(rules)
    return {"apiVersion": api_version, "kind": "HTTPRoute", "metadata": meta(name, namespace, created),
            "spec": spec}


def grpc_route(name: str, namespace: str = GLOBAL, *, en: str = "internet", port: int | None = 443,
               en_ns: str | None = None, hostnames: Sequence[str] = (), rules: Sequence[Doc] | None = None,
               created: str | None = None) -> Doc:
    spec: Doc = {"parentRefs": _parents(en, port, en_ns, None)}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    if rules is not None:
        spec["rules"] = list(rules)
    return {"apiVersion": f"{GATEWAY}/v1", "kind": "GRPCRoute", "metadata": meta(name, namespace, created),
            "spec": spec}


def tls_route(name: str, namespace: str = GLOBAL, *, en: str = "internet", port: int | None = 443,
              en_ns: str | None = None, hostnames: Sequence[str] = (), backends: Sequence[Doc] = (),
              created: str | None = None, rules: Sequence[Doc] | None = None) -> Doc:
    spec: Doc = {"parentRefs": _parents(en, port, en_ns, None),
                 "rules": list(rules) if rules is not None else [{"backendRefs": list(backends)}]}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": f"{GATEWAY}/v1alpha2", "kind": "TLSRoute", "metadata": meta(name, namespace, created),
            "spec": spec}


def tcp_route(name: str, namespace: str = GLOBAL, *, en: str = "internet", port: int | None = 5432,
              en_ns: str | None = None, backends: Sequence[Doc] = (), created: str | None = None,
              rules: Sequence[Doc] | None = None) -> Doc:
    spec: Doc = {"parentRefs": _parents(en, port, en_ns, None),
                 "rules": list(rules) if rules is not None else [{"backendRefs": list(backends)}]}
    return {"apiVersion": f"{GATEWAY}/v1alpha2", "kind": "TCPRoute", "metadata": meta(name, namespace, created),
            "spec": spec}


def service(name: str, namespace: str, cluster_ip: str = "10.96.0.10", ports: Sequence[int] = (80,)) -> Doc:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace),
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": p} for p in ports]}}


def path_rule(path: str = "/", kind: str = "PathPrefix", method: str | None = None,
              headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None,
              backends: Sequence[Doc] = (), filters: Sequence[Doc] = ()) -> Doc:
    """One HTTPRoute rule with one match."""
    match: Doc = {"path": {"type": kind, "value": path}}
    if method:
        match["method"] = method
    if headers:
        match["headers"] = [{"name": k, "value": v} for k, v in headers.items()]
    if query:
        match["queryParams"] = [{"name": k, "value": v} for k, v in query.items()]
    rule: Doc = {"matches": [match]}
    if backends:
        rule["backendRefs"] = list(backends)
    if filters:
        rule["filters"] = list(filters)
    return rule


def en_backend(name: str = "internet", port: int | None = None, namespace: str | None = None,
               weight: int | None = None) -> Doc:
    ref: Doc = {"group": POLICY, "kind": "EgressNetwork", "name": name}
    if port is not None:
        ref["port"] = port
    if namespace is not None:
        ref["namespace"] = namespace
    if weight is not None:
        ref["weight"] = weight
    return ref


def svc_backend(name: str, port: int | None = 80, namespace: str | None = None,
                weight: int | None = None) -> Doc:
    ref: Doc = {"name": name}
    if port is not None:
        ref["port"] = port
    if namespace is not None:
        ref["namespace"] = namespace
    if weight is not None:
        ref["weight"] = weight
    return ref


def to_yaml(docs: Iterable[Doc]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def load(docs: Iterable[Doc], file: str = "test.yaml") -> LoadResult:
    return parse_text(to_yaml(docs), file)


def translator(docs: Iterable[Doc], options: TranslatorOptions | None = None) -> Translator:
    """A Translator loaded with ``docs``; every document must be valid."""
    result = load(docs)
    assert not result.errors, [str(e) for e in result.errors]
    t = Translator(options)
    t.load(result.objects)
    return t


def explain(docs: Iterable[Doc], namespace: str, ip: str, port: int, *,
            options: TranslatorOptions | None = None, **request: Any) -> dict[str, Any]:
    return translator(docs, options).explain(namespace, ip, port, **request)


def rendered(docs: Iterable[Doc], namespace: str = "app",
             options: TranslatorOptions | None = None) -> dict[str, list[dict[str, Any]]]:
    """``egress_xds.resources.dump`` of what a sidecar in ``namespace`` receives."""
    return dump(translator(docs, options).resources(namespace))


def report_entry(report: Mapping[str, Any], kind: str, namespace: str, name: str) -> dict[str, Any]:
    found = [o for o in report["objects"] if (o["kind"], o["namespace"], o["name"]) == (kind, namespace, name)]
    assert len(found) == 1, f"{kind} {namespace}/{name} not in report: {report['objects']}"
    return found[0]


def conditions(report: Mapping[str, Any], kind: str, namespace: str, name: str,
               parent_index: int = 0) -> dict[str, tuple[str, str, str]]:
    """{type: (status, reason, message)} of an EgressNetwork, or of a route's n-th parent."""
    entry = report_entry(report, kind, namespace, name)
    conds = entry["conditions"] if kind == "EgressNetwork" else entry["parents"][parent_index]["conditions"]
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in conds}
