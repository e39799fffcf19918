"""Hypothesis strategies for hostile manifest directories: valid objects mixed with bad input.

Out:
- ``valid_world()``: manifests (dicts) that the loader must accept, with distinct
  (kind, namespace, name): EgressNetworks (networks with host bits, bare IPs, excepts, IPv6,
  omitted networks), HTTP/GRPC/TLS/TCP routes attached to them (or to nothing), Services,
  unicode header values and paths, unquoted timestamps; optionally the bundled ``examples/``.
- ``bad_document()``: a ``Bad``: a document the loader must reject (or, for a random
  mutation, may accept) with what its error must say: wrong types at every field path, invalid
  and huge CIDR lists, unicode and over-long names, unsupported apiVersions, non-object
  documents, YAML bombs (aliases), self-referencing and deeply nested documents; or an unknown
  kind, which is only a notice.
- ``BROKEN_TEXTS``: text that is not YAML at all (tabs, unclosed brackets, NUL and escape
  bytes, invalid UTF-8, undefined aliases, unsafe tags, huge integers, nesting beyond libyaml's
  limit). A file may end with one: the documents before it must still load.
- ``directory()``: a ``Layout``: the above spread over files (``.yaml``, ``.yml``, ``.json``,
  ``List`` documents, empty documents, flow or block style) plus duplicates of valid objects in
  the same and in later files; ``Layout.write`` puts it on disk and records, per file, which
  error each document must produce.

Called by ``test_manifest_fuzz.py`` and ``test_serve_fuzz.py``. Addresses are documentation
and private ranges only.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

POLICY = "policy.linkerd.io"
GATEWAY = "gateway.networking.k8s.io"
NAMESPACES = ("linkerd-egress", "app", "web")
PORTS = (80, 443, 8080, 5432)
HOSTS = ("example.com", "api.example.com", "*.example.com", "Partner.Example.org.", "xn--bcher-kva.example")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAX_LABEL = 256  # the loader copies at most this much of a bad name into its error

Doc = dict[str, Any]
Path_ = tuple[str | int, ...]

# Unicode text without surrogates (those cannot be written as UTF-8).
UNICODE = st.text(st.characters(codec="utf-8"), max_size=12)
# YAML forbids C0/C1 control characters other than tab/newline in a stream, escaped or not
# (yaml.safe_dump escapes them, so they round-trip); keep them in.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=False), UNICODE)


def _expected_label(value: Any) -> str:
    """How a kind/namespace/name must appear in the error of a rejected document."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = str(value)
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL] + "..."


# ---- valid objects -----------------------------------------------------------------------


def meta(name: str, namespace: str, created: str | None = None) -> Doc:
    out: Doc = {"name": name, "namespace": namespace}
    if created is not None:
        out["creationTimestamp"] = created
    return out


@st.composite
def network_entry(draw: st.DrawFn) -> Doc:
    """A valid ``networks`` entry: a CIDR (maybe with host bits, maybe a bare IP) and excepts
    strictly inside it."""
    if draw(st.integers(0, 5)) == 0:
        bits, prefix = 128, draw(st.integers(32, 128))
        base = int(ipaddress.ip_address("2001:db8::")) + draw(st.integers(0, 2**96 - 1))
    else:
        bits, prefix = 32, draw(st.integers(8, 32))
        base = draw(st.integers(0, 2**32 - 1))
    net = ipaddress.ip_network((base, prefix), strict=False)
    style = draw(st.sampled_from(["net", "net", "hostbits", "bare"]))
    if style == "bare" or prefix == bits:
        text = str(net.network_address) if prefix == bits else str(net)
    elif style == "hostbits":
        text = f"{ipaddress.ip_address(base)}/{prefix}"
    else:
        text = str(net)
    entry: Doc = {"cidr": text}
    excepts = []
    for _ in range(draw(st.integers(0, 2)) if prefix < bits else 0):
        sub = draw(st.integers(prefix + 1, min(bits, prefix + 10)))
        offset = draw(st.integers(0, 2 ** (sub - prefix) - 1))
        excepts.append(str(ipaddress.ip_network((int(net.network_address) + (offset << (bits - sub)), sub))))
    if excepts:
        entry["except"] = excepts
    return entry


TIMESTAMPS = st.sampled_from([None, None, "2024-01-01T00:00:00Z", "2024-06-01 12:00:00", "2025-02-28"])


@st.composite
def egress_network(draw: st.DrawFn, name: str, namespace: str) -> Doc:
    spec: Doc = {"trafficPolicy": draw(st.sampled_from(["Allow", "Deny"]))}
    if draw(st.integers(0, 3)):
        spec["networks"] = draw(st.lists(network_entry(), min_size=1, max_size=4))
    md = meta(name, namespace, draw(TIMESTAMPS))
    if draw(st.integers(0, 6)) == 0:
        md["annotations"] = {"config.linkerd.io/opaque-ports": draw(st.sampled_from(["5432", "25,3306", "4000-4002"]))}
    return {"apiVersion": f"{POLICY}/v1alpha1", "kind": "EgressNetwork", "metadata": md, "spec": spec}


def parent_ref(en: tuple[str, str], route_ns: str, port: int | None) -> Doc:
    ref: Doc = {"group": POLICY, "kind": "EgressNetwork", "name": en[1]}
    if en[0] != route_ns:
        ref["namespace"] = en[0]
    if port is not None:
        ref["port"] = port
    return ref


@st.composite
def parents(draw: st.DrawFn, ens: list[tuple[str, str]], namespace: str) -> list[Doc]:
    if not ens or draw(st.integers(0, 8)) == 0:  # a parent that does not exist
        return [parent_ref(("nowhere", "missing"), namespace, 80)]
    chosen = draw(st.lists(st.sampled_from(ens), min_size=1, max_size=2, unique=True))
    return [parent_ref(en, namespace, draw(st.sampled_from(PORTS))) for en in chosen]


@st.composite
def http_rule(draw: st.DrawFn, services: list[tuple[str, str]], namespace: str) -> Doc:
    matches = []
    for _ in range(draw(st.integers(0, 2))):
        match: Doc = {"path": {"type": draw(st.sampled_from(["PathPrefix", "Exact"])),
                               "value": "/" + draw(st.sampled_from(["", "api", "v1/x", "ünï/ç", "a b"]))}}
        if draw(st.booleans()):
            match["method"] = draw(st.sampled_from(["GET", "POST", "PATCH"]))
        if draw(st.integers(0, 3)) == 0:
            match["headers"] = [{"name": "x-fuzz", "value": draw(UNICODE)}]
        matches.append(match)
    rule: Doc = {"matches": matches} if matches else {}
    if draw(st.integers(0, 3)) == 0:
        rule["filters"] = [{"type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-set", "value": draw(UNICODE)}]}}]
    own = [s for s in services if s[0] == namespace]
    with_backend = draw(st.booleans())
    if own and with_backend:
        rule["backendRefs"] = [{"name": draw(st.sampled_from(own))[1], "port": 80}]
    return rule


@st.composite
def route(draw: st.DrawFn, kind: str, name: str, namespace: str, ens: list[tuple[str, str]],
          services: list[tuple[str, str]]) -> Doc:
    spec: Doc = {"parentRefs": draw(parents(ens, namespace))}
    if kind in ("HTTPRoute", "GRPCRoute", "TLSRoute") and draw(st.booleans()):
        spec["hostnames"] = draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True))
    if kind == "HTTPRoute":
        spec["rules"] = draw(st.lists(http_rule(services, namespace), min_size=1, max_size=2))
        api = f"{GATEWAY}/{draw(st.sampled_from(['v1', 'v1beta1']))}"
    elif kind == "GRPCRoute":
        spec["rules"] = [{"matches": [{"method": {"service": "pkg.Fuzz", "method": draw(st.sampled_from(["Get", "Put"]))}}]}]
        api = f"{GATEWAY}/v1"
    else:
        spec["rules"] = [{"backendRefs": []}]
        api = f"{GATEWAY}/v1alpha2"
    return {"apiVersion": api, "kind": kind, "metadata": meta(name, namespace, draw(TIMESTAMPS)), "spec": spec}


def service(name: str, namespace: str, index: int) -> Doc:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace),
            "spec": {"clusterIP": f"10.96.{index // 250}.{index % 250 + 1}", "ports": [{"port": 80}]}}


def example_documents() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


@st.composite
def valid_world(draw: st.DrawFn, max_networks: int = 4, max_routes: int = 6) -> list[Doc]:
    """Valid manifests with distinct keys (generated names never clash with the examples')."""
    docs: list[Doc] = example_documents() if draw(st.booleans()) else []
    ens: list[tuple[str, str]] = [(d["metadata"]["namespace"], d["metadata"]["name"])
                                  for d in docs if d["kind"] == "EgressNetwork"]
    for i in range(draw(st.integers(0, max_networks))):
        ns = draw(st.sampled_from(NAMESPACES))
        docs.append(draw(egress_network(f"gen-en-{i}", ns)))
        ens.append((ns, f"gen-en-{i}"))
    services = [(draw(st.sampled_from(NAMESPACES)), f"gen-svc-{i}") for i in range(draw(st.integers(0, 2)))]
    docs.extend(service(name, ns, i) for i, (ns, name) in enumerate(services))
    for i in range(draw(st.integers(0, max_routes))):
        kind = draw(st.sampled_from(["HTTPRoute", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"]))
        docs.append(draw(route(kind, f"gen-route-{i}", draw(st.sampled_from(NAMESPACES)), ens, services)))
    return docs


KINDS = ("EgressNetwork", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "Service")


@st.composite
def fresh_valid(draw: st.DrawFn, name: str, kinds: tuple[str, ...] = KINDS) -> Doc:
    """One valid object of one of ``kinds``, named ``name``, to be corrupted."""
    ns = draw(st.sampled_from(NAMESPACES))
    kind = draw(st.sampled_from(kinds))
    if kind == "EgressNetwork":
        return draw(egress_network(name, ns))  # type: ignore[no-any-return]
    if kind == "Service":
        return service(name, ns, 200)
    return draw(route(kind, name, ns, [(ns, "gen-en-0")], [(ns, "gen-svc-0")]))  # type: ignore[no-any-return]


# ---- bad documents -----------------------------------------------------------------------


@dataclass
class Bad:
    """A document to mix in, and what the loader must say about it."""

    doc: Any
    what: str  # a short description, for failure messages and counting
    field: str | None = None  # the exact field the error must name
    path: Path_ | None = None  # else: the error's field must be related to this path
    maybe_valid: bool = False  # a random mutation: the loader may accept it
    notice: bool = False  # an unknown kind: skipped with a notice, no error
    yaml_only: bool = False  # holds shared or cyclic values: JSON cannot express it

    def expected_identity(self) -> tuple[str, str, str]:
        """(kind, namespace, name) the error must carry; with no name, the error must say
        which document of its file it is."""
        doc = self.doc
        if not isinstance(doc, dict):
            return "", "", ""
        md = doc.get("metadata")
        md = md if isinstance(md, dict) else {}
        return (_expected_label(doc.get("kind")), _expected_label(md.get("namespace", "default")),
                _expected_label(md.get("name", "")))


def _get(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def path_text(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


BAD_NAMES = ["", "UPPER", "under_score", "-lead", "trail-", "a..b", "a b", "ünïcödé", "名前", "a" * 254,
             "x" * 5000, "a/b", 5, 2.5, True, None, ["list"], {"a": "dict"}]
BAD_NAMESPACES = ["UPPER", "a" * 64, "dot.ted", "ünï", "", 7, None, ["x"], "a" * 3000]
WRONG_TYPES: list[Any] = ["a string", 12345, -1, 3.5, True, None, [], ["x", 1], {}, {"k": "v"}]
BAD_CIDRS = ["300.1.2.0/24", "internet", "10.0.0.0/33", "2001:db8::/129", "", "10.0.0.0/8/8",
             12345, None, ["10.0.0.0/8"], {"cidr": "10.0.0.0/8"}, "１０.0.0.0/8", "10.0.0.0/8 x" * 500]
BAD_HOSTS = ["*", "1.2.3.4", "bad_host", "a" * 300, "ünï.example", "*.*.example", "-x.example", 7]


def _with_networks(doc: Doc) -> list[Doc]:
    nets: list[Doc] = doc["spec"].setdefault("networks", [{"cidr": "203.0.113.0/24"}])
    return nets


def known_targets(kind: str) -> list[str]:
    """The corruptions ``known_bad`` can make to an object of ``kind``."""
    targets = ["name", "namespace", "metadata", "annotations", "generation", "timestamp", "spec", "apiVersion",
               "no-kind", "kind-type"]
    if kind == "EgressNetwork":
        targets += ["policy", "policy-missing", "networks", "cidr", "cidr", "except", "except-outside",
                    "huge-cidrs", "opaque-ports"]
    elif kind == "Service":
        targets += ["cluster-ip", "service-port"]
    else:
        targets += ["parent-refs", "parent-port", "parent-name", "rules"]
        if kind != "TCPRoute":
            targets += ["hostnames", "hostname"]
        if kind == "HTTPRoute":
            targets += ["path", "path-type", "method", "header-name", "backend-port", "filter-type", "redirect"]
    return targets


KNOWN_TARGETS = sorted({t for kind in KINDS for t in known_targets(kind)})
STRUCTURAL_TARGETS = ["bomb-name", "bomb-spec", "bomb-extra", "cycle-name", "cycle-extra", "deep-name",
                      "non-object", "unknown-kind", "unknown-group", "empty-kind"]


@st.composite
def known_bad(draw: st.DrawFn, base: Doc, target: str | None = None) -> Bad:
    """``base`` (valid) with one corruption whose error field is known exactly."""
    doc = copy.deepcopy(base)
    if target is None:
        target = draw(st.sampled_from(known_targets(doc["kind"])))
    md, spec = doc["metadata"], doc["spec"]
    if target == "name":
        md["name"] = draw(st.sampled_from(BAD_NAMES))
        return Bad(doc, "bad name", field="metadata.name")
    if target == "namespace":
        md["namespace"] = draw(st.sampled_from(BAD_NAMESPACES))
        return Bad(doc, "bad namespace", field="metadata.namespace")
    if target == "metadata":
        doc["metadata"] = draw(st.sampled_from(["a string", [], None, 42]))
        return Bad(doc, "metadata of a wrong type", field="metadata")
    if target == "annotations":
        md["annotations"] = draw(st.sampled_from([["a"], "a=b", 3]))
        return Bad(doc, "annotations of a wrong type", field="metadata.annotations")
    if target == "generation":
        md["generation"] = draw(st.sampled_from(["two", [1], {"a": 1}, 1.5]))
        return Bad(doc, "generation of a wrong type", field="metadata.generation")
    if target == "timestamp":
        md["creationTimestamp"] = draw(st.sampled_from(["2024-13-45", "2024-02-30T00:00:00Z", "yesterday", [2024]]))
        return Bad(doc, "bad creationTimestamp", field="metadata.creationTimestamp")
    if target == "spec":
        doc["spec"] = draw(st.sampled_from(["a string", ["x"], None, 0]))
        return Bad(doc, "spec of a wrong type", field="spec")
    if target == "apiVersion":
        group = doc["apiVersion"].rpartition("/")[0]
        doc["apiVersion"] = f"{group}/v9" if group else "v9"
        return Bad(doc, "unsupported apiVersion", field="apiVersion")
    if target == "no-kind":
        del doc["kind"]
        return Bad(doc, "kind missing", field="kind")
    if target == "kind-type":
        doc["apiVersion"] = draw(st.sampled_from([5, None, ["v1"]]))
        return Bad(doc, "apiVersion of a wrong type", field="apiVersion")
    if target == "policy":
        spec["trafficPolicy"] = draw(st.sampled_from(["Sometimes", "allow", 1, None, ["Allow"]]))
        return Bad(doc, "bad trafficPolicy", field="spec.trafficPolicy")
    if target == "policy-missing":
        del spec["trafficPolicy"]
        return Bad(doc, "trafficPolicy missing", field="spec.trafficPolicy")
    if target == "networks":
        spec["networks"] = draw(st.sampled_from([[], "10.0.0.0/8", {"cidr": "10.0.0.0/8"}, 5]))
        return Bad(doc, "networks of a wrong shape", field="spec.networks")
    if target == "cidr":
        nets = _with_networks(doc)
        i = draw(st.integers(0, len(nets) - 1))
        nets[i] = {"cidr": draw(st.sampled_from(BAD_CIDRS))}
        return Bad(doc, "bad cidr", field=f"spec.networks[{i}].cidr")
    if target == "except":
        nets = _with_networks(doc)
        i = draw(st.integers(0, len(nets) - 1))
        nets[i] = {"cidr": "203.0.113.0/24", "except": ["203.0.113.0/28", draw(st.sampled_from(BAD_CIDRS[:4]))]}
        return Bad(doc, "bad except", field=f"spec.networks[{i}].except[1]")
    if target == "except-outside":
        nets = _with_networks(doc)
        i = draw(st.integers(0, len(nets) - 1))
        nets[i] = {"cidr": "203.0.113.0/25", "except": [draw(st.sampled_from(
            ["198.51.100.0/25", "203.0.113.0/24", "203.0.113.0/25", "2001:db8::/64"]))]}
        return Bad(doc, "except outside its cidr", field=f"spec.networks[{i}].except")
    if target == "huge-cidrs":
        # Thousands of entries, one of them bad: the error names exactly that one.
        size = draw(st.integers(1000, 5000))
        bad_at = draw(st.integers(0, size - 1))
        rng = random.Random(draw(st.integers(0, 2**32)))
        nets = [{"cidr": f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"}
                for _ in range(size)]
        nets[bad_at] = {"cidr": draw(st.sampled_from(BAD_CIDRS[:4]))}
        spec["networks"] = nets
        return Bad(doc, f"{size} cidrs, one bad", field=f"spec.networks[{bad_at}].cidr")
    if target == "opaque-ports":
        md["annotations"] = {"config.linkerd.io/opaque-ports": draw(st.sampled_from(["http", "0", "70000", "1-", "9-3"]))}
        return Bad(doc, "bad opaque-ports annotation", field="metadata")
    if target == "cluster-ip":
        spec["clusterIP"] = draw(st.sampled_from(["not-an-ip", "10.0.0.300", 5, ["10.0.0.1"]]))
        return Bad(doc, "bad clusterIP", field="spec.clusterIP")
    if target == "service-port":
        spec["ports"] = [{"port": draw(st.sampled_from([0, 70000, "http", None]))}]
        return Bad(doc, "bad service port", field="spec.ports[0].port")
    if target == "parent-refs":
        spec["parentRefs"] = draw(st.sampled_from(["internet", {"name": "internet"}, 3]))
        return Bad(doc, "parentRefs of a wrong shape", field="spec.parentRefs")
    if target == "parent-port":
        spec["parentRefs"] = [{"group": POLICY, "kind": "EgressNetwork", "name": "x",
                               "port": draw(st.sampled_from([0, 65536, "eighty", 80.5, [80]]))}]
        return Bad(doc, "bad parent port", field="spec.parentRefs[0].port")
    if target == "parent-name":
        ref: Doc = {"group": POLICY, "kind": "EgressNetwork"}
        choice = draw(st.sampled_from(BAD_NAMES[:12] + ["<missing>"]))
        if choice != "<missing>":
            ref["name"] = choice
        spec["parentRefs"] = [ref]
        return Bad(doc, "bad parent name", field="spec.parentRefs[0].name")
    if target == "rules":
        spec["rules"] = draw(st.sampled_from(["all", 1, {"matches": []}]))
        return Bad(doc, "rules of a wrong shape", field="spec.rules")
    if target == "hostnames":
        spec["hostnames"] = draw(st.sampled_from(["example.com", 1, {"a": "b"}]))
        return Bad(doc, "hostnames of a wrong shape", field="spec.hostnames")
    if target == "hostname":
        hosts = ["ok.example.com", draw(st.sampled_from(BAD_HOSTS))]
        spec["hostnames"] = hosts
        return Bad(doc, "bad hostname", field="spec.hostnames[1]")
    rule: Doc = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}
    spec["rules"] = [rule]
    if target == "path":
        rule["matches"][0]["path"] = {"type": draw(st.sampled_from(["Exact", "PathPrefix"])),
                                      "value": draw(st.sampled_from(["no-slash", "", "/" + "x" * 1100]))}
        return Bad(doc, "bad path", field="spec.rules[0].matches[0].path.value")
    if target == "path-type":
        rule["matches"][0]["path"]["type"] = draw(st.sampled_from(["Glob", "", 3]))
        return Bad(doc, "bad path type", field="spec.rules[0].matches[0].path.type")
    if target == "method":
        rule["matches"][0]["method"] = draw(st.sampled_from(["FETCH", "get", 1]))
        return Bad(doc, "bad method", field="spec.rules[0].matches[0].method")
    if target == "header-name":
        rule["matches"][0]["headers"] = [{"name": draw(st.sampled_from(["bad header", "ünï", "", "a:b"])), "value": "v"}]
        return Bad(doc, "bad header name", field="spec.rules[0].matches[0].headers[0].name")
    if target == "backend-port":
        rule["backendRefs"] = [{"name": "svc", "port": draw(st.sampled_from([0, 70000, "x"]))}]
        return Bad(doc, "bad backend port", field="spec.rules[0].backendRefs[0].port")
    if target == "filter-type":
        rule["filters"] = [{"requestHeaderModifier": {"set": []}}]
        return Bad(doc, "filter without type", field="spec.rules[0].filters[0].type")
    assert target == "redirect", target
    rule["filters"] = [{"type": "RequestRedirect", "requestRedirect": {"statusCode": draw(st.sampled_from([200, 999, "301"]))}}]
    return Bad(doc, "bad redirect status", field="spec.rules[0].filters[0].requestRedirect.statusCode")


def _paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.append((*prefix, i))
            out.extend(_paths(child, (*prefix, i)))
    return out


PROTECTED = {("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"), ("metadata", "namespace")}


@st.composite
def random_mutation(draw: st.DrawFn, base: Doc) -> Bad:
    """``base`` with one value somewhere in it replaced by a random one: the loader may accept
    it (``"80"`` is a fine port), and if not, the error must name the object and a field
    related to the replaced one."""
    doc = copy.deepcopy(base)
    candidates = [p for p in _paths(doc) if p not in PROTECTED]
    deep = [p for p in candidates if len(p) >= 3]
    prefer_deep = draw(st.integers(0, 3)) > 0
    path = draw(st.sampled_from(deep if deep and prefer_deep else candidates))
    value = draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                           st.dictionaries(st.text(max_size=5), SCALARS, max_size=2)))
    _set(doc, path, value)
    return Bad(doc, f"random value at {path_text(path)}", path=path, maybe_valid=True)


def _bomb(levels: int, width: int) -> list[Any]:
    """A list whose expansion is width**levels strings, held as ``levels`` shared lists:
    yaml.safe_dump writes it with anchors and aliases ("billion laughs")."""
    node: list[Any] = ["lol"] * width
    for _ in range(levels - 1):
        node = [node] * width
    return node


def _deep(levels: int) -> list[Any]:
    node: list[Any] = ["bottom"]
    for _ in range(levels - 1):
        node = [node]
    return node


@st.composite
def structural_bad(draw: st.DrawFn, base: Doc, choice: str | None = None) -> Bad:
    """Documents that attack the loader itself: alias bombs, cycles, deep nesting, non-objects,
    unknown kinds."""
    doc = copy.deepcopy(base)
    if choice is None:
        choice = draw(st.sampled_from(STRUCTURAL_TARGETS))
    if choice == "bomb-name":
        doc["metadata"]["name"] = _bomb(draw(st.integers(6, 9)), 9)
        return Bad(doc, "alias bomb in metadata.name", field="metadata.name", yaml_only=True)
    if choice == "bomb-spec":
        doc["spec"]["networks" if doc["kind"] == "EgressNetwork" else "rules"] = _bomb(draw(st.integers(7, 9)), 9)
        return Bad(doc, "alias bomb in spec", path=("spec",), yaml_only=True)
    if choice == "bomb-extra":  # in a field nothing reads: refused all the same
        doc["x-lol"] = _bomb(draw(st.integers(7, 9)), 10)
        return Bad(doc, "alias bomb in an unknown field", field="x-lol", yaml_only=True)
    if choice == "cycle-name":
        loop: list[Any] = []
        loop.append(loop)
        doc["metadata"]["name"] = loop
        return Bad(doc, "self-referencing metadata.name", path=("metadata", "name"), yaml_only=True)
    if choice == "cycle-extra":
        knot: Doc = {"type": "X"}
        knot["self"] = [knot]
        doc["spec"]["x-knot"] = knot
        return Bad(doc, "self-referencing unknown field", path=("spec", "x-knot"), yaml_only=True)
    if choice == "deep-name":
        doc["metadata"]["name"] = _deep(draw(st.integers(101, 400)))
        return Bad(doc, "deeply nested metadata.name", path=("metadata", "name"))
    if choice == "non-object":
        return Bad(draw(st.sampled_from([42, "just text", 3.5, True, ["a", "list"], [base]])),
                   "a document that is not an object", field="")
    if choice == "unknown-kind":
        doc["kind"] = draw(st.sampled_from(["ConfigMap", "Gateway", "Ünïcode", "x" * 300]))
        doc["apiVersion"] = "v1"
        return Bad(doc, "unknown kind", notice=True)
    if choice == "unknown-group":
        doc["apiVersion"] = "example.com/v1"
        return Bad(doc, "kind of an unknown group", notice=True)
    doc["kind"] = draw(st.sampled_from([None, 3, ["EgressNetwork"]]))
    return Bad(doc, "kind of a wrong type", field="kind")


@st.composite
def bad_document(draw: st.DrawFn, index: int, target: str | None = None) -> Bad:
    """A bad document of any family, or made by ``target`` (a known or structural corruption)."""
    if target in KNOWN_TARGETS:
        base = draw(fresh_valid(f"bad-{index}", tuple(k for k in KINDS if target in known_targets(k))))
        return draw(known_bad(base, target))  # type: ignore[no-any-return]
    if target is not None:
        return draw(structural_bad(draw(fresh_valid(f"bad-{index}")), target))  # type: ignore[no-any-return]
    base = draw(fresh_valid(f"bad-{index}"))
    family = draw(st.sampled_from(["known", "known", "known", "random", "random", "structural"]))
    if family == "known":
        return draw(known_bad(base))  # type: ignore[no-any-return]
    if family == "random":
        return draw(random_mutation(base))  # type: ignore[no-any-return]
    return draw(structural_bad(base))  # type: ignore[no-any-return]


# ---- text that is not YAML -----------------------------------------------------------------

# (description, bytes). Each is one parse error; documents before it (after a "---") load.
BROKEN_TEXTS: list[tuple[str, bytes]] = [
    ("unclosed bracket", b"kind: [unclosed\n"),
    ("tab indentation", b"a:\n\tb: 1\n"),
    ("unterminated quote", b"key: 'unterminated\n"),
    ("braces", b"{{{\n"),
    ("mapping in a scalar", b"a: b: c\n"),
    ("undefined alias", b"*undefined\n"),
    ("unsafe python tag", b"!!python/object/apply:os.system ['true']\n"),
    ("unhashable key", b"? [a, b]\n: c\n"),
    ("NUL and control bytes", b"\x00\x01\x02binary"),
    ("terminal colours", b"\x1b[31mred\x1b[0m: x\n"),
    ("integer of 5000 digits", b"a: " + b"9" * 5000 + b"\n"),
    ("nesting beyond libyaml's limit", b"[" * 1200 + b"]" * 1200 + b"\n"),
    ("reserved indicator", b"@reserved\n"),
    ("invalid UTF-8", b"name: \xff\xfe\xfa\n"),
    ("lone continuation byte", b"\x80\n"),
    ("bad explicit timestamp", b"a: !!timestamp 2024-13-45\n"),
]


# ---- directories -------------------------------------------------------------------------


@dataclass
class Entry:
    """One top-level document of a file: a valid object, a bad one, a List of several, or
    an empty document."""

    valid: list[Doc] = field(default_factory=list)  # objects that must load (List items too)
    bad: list[Bad] = field(default_factory=list)
    duplicates: list[Doc] = field(default_factory=list)  # must be reported, never loaded
    as_list: bool = False
    empty: bool = False

    def document(self) -> Any:
        if self.empty:
            return None
        items = [*self.valid, *[b.doc for b in self.bad], *self.duplicates]
        if self.as_list:
            return {"apiVersion": "v1", "kind": "List", "items": items}
        assert len(items) == 1
        return items[0]


@dataclass
class FileSpec:
    name: str
    entries: list[Entry]
    style: bool | None = False  # yaml default_flow_style
    broken: tuple[str, bytes] | None = None  # appended after the documents

    @property
    def json(self) -> bool:
        return self.name.endswith(".json")


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Writes strings such as ``2024-13-45`` unquoted, as a person would."""


_Dumper.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}


def render(spec: FileSpec) -> bytes:
    if spec.json:
        (entry,) = spec.entries
        return json.dumps(entry.document(), ensure_ascii=False).encode()
    parts = []
    for entry in spec.entries:
        doc = entry.document()
        parts.append("" if doc is None else yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False,
                                                      default_flow_style=spec.style, width=120))
    # A leading empty document needs its own "---": the first one only opens a document.
    text = (("---\n" if parts and not parts[0] else "") + "---\n".join(parts)).encode()
    if spec.broken is not None:
        text += b"---\n" + spec.broken[1]
    return text


@dataclass
class Layout:
    files: list[FileSpec]

    def write(self, root: Path) -> None:
        for spec in self.files:
            (root / spec.name).write_bytes(render(spec))

    def valid(self) -> list[Doc]:
        return [d for f in self.files for e in f.entries for d in e.valid]

    def bad(self) -> list[Bad]:
        return [b for f in self.files for e in f.entries for b in e.bad]

    def cases(self) -> int:
        return sum(len(e.valid) + len(e.bad) + len(e.duplicates) for f in self.files for e in f.entries) + sum(
            f.broken is not None for f in self.files)


@st.composite
def directory(draw: st.DrawFn, max_bad: int = 6, target: str | None = None) -> Layout:
    """Valid objects, bad documents, duplicates and broken text spread over files. Valid
    originals always come before their duplicates (in sorted path order), so they win.
    With ``target``, every bad document is that corruption (at least one of them)."""
    world = draw(valid_world())
    bads = [draw(bad_document(i, target)) for i in range(draw(st.integers(1 if target else 0, max_bad)))]
    dups = []
    for original in draw(st.lists(st.sampled_from(world), max_size=3, unique_by=id)) if world else []:
        dup = copy.deepcopy(original)
        if draw(st.booleans()) and dup["kind"] == "EgressNetwork":
            dup["spec"]["trafficPolicy"] = "Deny" if dup["spec"]["trafficPolicy"] == "Allow" else "Allow"
        dups.append(dup)
    count = draw(st.integers(1, 4))
    files: list[list[Entry]] = [[] for _ in range(count)]
    for doc in world:
        files[draw(st.integers(0, count - 1))].append(Entry(valid=[doc]))
    for bad in bads:
        files[draw(st.integers(0, count - 1))].append(Entry(bad=[bad]))
    for _ in range(draw(st.integers(0, 2))):  # List documents mixing good and bad items
        chosen = files[draw(st.integers(0, count - 1))]
        if not chosen:
            continue
        take = [e for e in chosen if not e.empty and not e.as_list][:draw(st.integers(1, 3))]
        for e in take:
            chosen.remove(e)
        merged = Entry(as_list=True)
        for e in take:
            merged.valid += e.valid
            merged.bad += e.bad
        chosen.insert(draw(st.integers(0, len(chosen))), merged)
    for chosen in files:
        for _ in range(draw(st.integers(0, 1))):
            chosen.insert(draw(st.integers(0, len(chosen))), Entry(empty=True))
    # Shuffle within files: valid and bad documents interleave.
    for chosen in files:
        order = draw(st.permutations(list(range(len(chosen)))))
        chosen[:] = [chosen[i] for i in order]
    specs: list[FileSpec] = []
    for i, entries in enumerate(files):
        entries = [e for e in entries if e.valid or e.bad or e.empty]
        single = len([e for e in entries if not e.empty]) == 1 and not any(
            b.yaml_only for e in entries for b in e.bad)
        suffix = draw(st.sampled_from([".yaml", ".yml", ".json"] if single else [".yaml", ".yml"]))
        if suffix == ".json":
            entries = [e for e in entries if not e.empty]
        style = draw(st.sampled_from([False, None, True]))
        broken = draw(st.sampled_from(BROKEN_TEXTS)) if suffix != ".json" and draw(st.integers(0, 3)) == 0 else None
        specs.append(FileSpec(f"f{i}{suffix}", entries, style, broken))
    # Duplicates: after their original, in the same file or in a later one ("zz" sorts last).
    for dup in dups:
        home = next(s for s in specs for e in s.entries if any(d is not None and _same_key(d, dup) for d in e.valid))
        if home.json or draw(st.booleans()):
            specs.append(FileSpec(f"zz-dup-{len(specs)}.yaml", [Entry(duplicates=[dup])]))
        else:
            home.entries.append(Entry(duplicates=[dup]))
    if draw(st.integers(0, 4)) == 0:  # a file that holds nothing but broken text
        specs.append(FileSpec(f"f-broken{draw(st.sampled_from(['.yaml', '.yml']))}", [],
                              broken=draw(st.sampled_from(BROKEN_TEXTS))))
    return Layout(specs)


def _same_key(a: Doc, b: Doc) -> bool:
    return bool(a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"]
                and a["metadata"].get("namespace", "default") == b["metadata"].get("namespace", "default"))
