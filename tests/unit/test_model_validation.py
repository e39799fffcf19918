"""Spec §1: what the loader accepts and how it names what it rejects.

Every rejection must name the file, the kind, namespace/name and the field path, and must not
hide the valid objects next to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egress_xds.model.load import load_paths, parse_text
from tests.unit.manifests import (
    GLOBAL,
    egress,
    explain,
    http_route,
    load,
    tcp_route,
    tls_route,
    to_yaml,
)

# (id, EgressNetwork networks, field path, message fragment)
BAD_NETWORKS = [
    ("not-an-ip", ["300.1.2.0/24"], "spec.networks[0].cidr", "'300.1.2.0/24' is not a valid IP network or address"),
    ("garbage", ["internet"], "spec.networks[0].cidr", "is not a valid IP network or address"),
    ("bad-prefix-length", ["203.0.113.0/33"], "spec.networks[0].cidr", "is not a valid IP network or address"),
    ("second-entry", ["203.0.113.0/24", "nope"], "spec.networks[1].cidr", "'nope' is not a valid IP network"),
    ("empty-list", [], "spec.networks", "at least one network must be specified"),
    ("except-outside", [{"cidr": "203.0.113.0/24", "except": ["198.51.100.0/25"]}], "spec.networks[0].except",
     "cidr 203.0.113.0/24 does not include exception 198.51.100.0/25"),
    ("except-equal", [{"cidr": "203.0.113.0/24", "except": ["203.0.113.0/24"]}], "spec.networks[0].except",
     "cidr 203.0.113.0/24 is completely negated by exception 203.0.113.0/24"),
    ("except-containing", [{"cidr": "203.0.113.0/25", "except": ["203.0.113.0/24"]}], "spec.networks[0].except",
     "cidr 203.0.113.0/25 is completely negated by exception 203.0.113.0/24"),
    ("except-bare-ip-equal", [{"cidr": "203.0.113.7", "except": ["203.0.113.7"]}], "spec.networks[0].except",
     "cidr 203.0.113.7/32 is completely negated by exception 203.0.113.7/32"),
    ("except-mixed-families", [{"cidr": "203.0.113.0/24", "except": ["2001:db8::/64"]}], "spec.networks[0].except",
     "mix IPv4 and IPv6"),
    ("except-mixed-families-v6", [{"cidr": "2001:db8::/32", "except": ["203.0.113.0/24"]}],
     "spec.networks[0].except", "mix IPv4 and IPv6"),
    ("except-garbage", [{"cidr": "203.0.113.0/24", "except": ["nonsense"]}], "spec.networks[0].except[0]",
     "'nonsense' is not a valid IP network or address"),
]


@pytest.mark.parametrize(("networks", "field", "message"), [c[1:] for c in BAD_NETWORKS],
                         ids=[c[0] for c in BAD_NETWORKS])
def test_invalid_networks_are_rejected_naming_the_field(networks: list, field: str, message: str) -> None:
    result = load([egress("bad", networks=networks), egress("good", networks=["198.51.100.0/24"])], "nets.yaml")
    assert [o.name for o in result.objects] == ["good"], "one bad object must not hide the good one"
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.file, error.kind, error.namespace, error.name, error.field) == (
        "nets.yaml", "EgressNetwork", GLOBAL, "bad", field)
    assert message in error.message
    text = str(error)
    for part in ("nets.yaml", "EgressNetwork", f"{GLOBAL}/bad", field, message):
        assert part in text


# (id, written, an address it must cover, an address it must not cover)
GOOD_NETWORKS = [
    ("bare-ipv4-is-/32", "203.0.113.7", "203.0.113.7", "203.0.113.8"),
    ("bare-ipv6-is-/128", "2001:db8::7", "2001:db8::7", "2001:db8::8"),
    ("host-bits-set-ipv4", "203.0.113.77/24", "203.0.113.1", "198.51.100.1"),
    ("host-bits-set-ipv6", "2001:db8::1/32", "2001:db8:0:1::5", "2001:db9::1"),
    ("plain-cidr", "198.51.100.0/25", "198.51.100.127", "198.51.100.128"),
]


@pytest.mark.parametrize(("cidr", "inside", "outside"), [c[1:] for c in GOOD_NETWORKS],
                         ids=[c[0] for c in GOOD_NETWORKS])
def test_valid_network_spellings_capture_exactly_their_block(cidr: str, inside: str, outside: str) -> None:
    docs = [egress("block", policy="Deny", networks=[cidr])]
    assert not load(docs).errors
    assert explain(docs, "app", inside, 80)["egress_network"] == f"{GLOBAL}/block"
    assert explain(docs, "app", outside, 80)["egress_network"] is None


def test_valid_except_inside_cidr_is_accepted() -> None:
    docs = [egress("a", networks=[{"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25", "203.0.113.5"]}])]
    result = load(docs)
    assert not result.errors and len(result.objects) == 1


# (id, document, field, message fragment)
BAD_OBJECTS = [
    ("name-uppercase-underscore", egress("Bad_Name"), "metadata.name", "'Bad_Name' is not a valid name"),
    ("namespace-uppercase", egress("ok", namespace="Team"), "metadata.namespace", "'Team' is not a valid namespace"),
    ("traffic-policy", egress("ok", policy="Audit"), "spec.trafficPolicy", "'Allow' or 'Deny'"),
    ("traffic-policy-missing", {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
                                "metadata": {"name": "ok", "namespace": GLOBAL}, "spec": {}},
     "spec.trafficPolicy", "required"),
    ("hostname-with-space", http_route("ok", hostnames=["exa mple.com"]), "spec.hostnames[0]",
     "'exa mple.com' is not a valid hostname"),
    ("hostname-bare-star", http_route("ok", hostnames=["*"]), "spec.hostnames[0]", "'*' is not a valid hostname"),
    ("hostname-inner-wildcard", tls_route("ok", hostnames=["*w.example.com"]), "spec.hostnames[0]",
     "is not a valid hostname"),
    ("hostname-second", tls_route("ok", hostnames=["a.example.com", "b_.example.com"]), "spec.hostnames[1]",
     "is not a valid hostname"),
    ("parent-port-too-big", http_route("ok", port=70000), "spec.parentRefs[0].port", "less than or equal to 65535"),
    ("opaque-ports-annotation", egress("ok", annotations={"config.linkerd.io/opaque-ports": "abc"}), "metadata",
     "config.linkerd.io/opaque-ports"),
    ("unsupported-api-version", egress("ok") | {"apiVersion": "policy.linkerd.io/v1beta1"}, "apiVersion",
     "policy.linkerd.io/v1beta1 is not supported; use policy.linkerd.io/v1alpha1"),
    ("route-api-version", tcp_route("ok") | {"apiVersion": "gateway.networking.k8s.io/v1"}, "apiVersion",
     "use gateway.networking.k8s.io/v1alpha2"),
]


@pytest.mark.parametrize(("doc", "field", "message"), [c[1:] for c in BAD_OBJECTS], ids=[c[0] for c in BAD_OBJECTS])
def test_invalid_objects_are_rejected_with_file_kind_name_and_field(doc: dict, field: str, message: str) -> None:
    result = load([doc, egress("survivor")], "objs.yaml")
    assert [o.name for o in result.objects] == ["survivor"]
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.file, error.kind, error.field) == ("objs.yaml", doc["kind"], field)
    assert (error.namespace, error.name) == (doc["metadata"]["namespace"], doc["metadata"]["name"])
    assert message in error.message
    assert str(error).startswith(f"objs.yaml: {doc['kind']} {doc['metadata']['namespace']}/{doc['metadata']['name']}")


def test_ip_address_is_not_a_hostname() -> None:
    result = load([http_route("by-ip", hostnames=["203.0.113.5"])])
    assert [e.field for e in result.errors] == ["spec.hostnames[0]"]


# (id, apiVersion, kind)
ACCEPTED_VERSIONS = [
    ("gateway-httproute-v1", "gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway-httproute-v1beta1", "gateway.networking.k8s.io/v1beta1", "HTTPRoute"),
    ("linkerd-httproute-v1beta3", "policy.linkerd.io/v1beta3", "HTTPRoute"),
]


@pytest.mark.parametrize(("api_version", "kind"), [c[1:] for c in ACCEPTED_VERSIONS],
                         ids=[c[0] for c in ACCEPTED_VERSIONS])
def test_every_documented_httproute_version_is_read(api_version: str, kind: str) -> None:
    docs = [egress("internet"), http_route("r", api_version=api_version)]
    result = load(docs)
    assert not result.errors
    assert explain(docs, "app", "203.0.113.5", 80, host="h", path="/")["route"] == f"{kind} {GLOBAL}/r"


UNKNOWN_KINDS = [
    ("deployment", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "app"}}),
    ("gateway", {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                 "metadata": {"name": "gw", "namespace": "app"}}),
    ("linkerd-server", {"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
                        "metadata": {"name": "srv", "namespace": "app"}}),
]


@pytest.mark.parametrize("doc", [c[1] for c in UNKNOWN_KINDS], ids=[c[0] for c in UNKNOWN_KINDS])
def test_unknown_kinds_are_skipped_with_a_notice(doc: dict) -> None:
    result = load([doc, egress("internet")], "mixed.yaml")
    assert not result.errors
    assert [o.name for o in result.objects] == ["internet"]
    assert len(result.notices) == 1
    notice = result.notices[0]
    for part in ("mixed.yaml", doc["kind"], f"{doc['metadata']['namespace']}/{doc['metadata']['name']}"):
        assert part in notice


def test_yaml_syntax_error_keeps_the_documents_before_it() -> None:
    text = to_yaml([egress("before")]) + "---\nkind: [unclosed\n---\n" + to_yaml([egress("after")])
    result = parse_text(text, "broken.yaml")
    assert [o.name for o in result.objects] == ["before"]
    assert len(result.errors) == 1
    assert result.errors[0].file == "broken.yaml"
    assert "cannot parse" in result.errors[0].message


def test_yaml_syntax_error_in_one_file_does_not_hide_other_files(tmp_path: Path) -> None:
    (tmp_path / "a-broken.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "b-good.yaml").write_text(to_yaml([egress("internet")]))
    result = load_paths([tmp_path])
    assert [o.name for o in result.objects] == ["internet"]
    assert [Path(e.file).name for e in result.errors] == ["a-broken.yaml"]


def test_document_that_is_not_an_object_is_an_error_naming_the_document() -> None:
    result = parse_text(to_yaml([egress("ok")]) + "---\n- just\n- a list\n", "list.yaml")
    assert [o.name for o in result.objects] == ["ok"]
    assert len(result.errors) == 1
    assert "document 2" in str(result.errors[0])


def test_kubernetes_list_kind_is_flattened() -> None:
    text = to_yaml([{"apiVersion": "v1", "kind": "List", "items": [egress("a"), egress("b")]}])
    assert sorted(o.name for o in parse_text(text, "list.yaml").objects) == ["a", "b"]


def test_json_manifests_are_read(tmp_path: Path) -> None:
    import json

    (tmp_path / "en.json").write_text(json.dumps(egress("internet")))
    result = load_paths([tmp_path])
    assert [o.name for o in result.objects] == ["internet"] and not result.errors


# (id, layout: {file: [names]}, expected kept file for "dup", number of errors)
DUPLICATES = [
    ("same-file", {"a.yaml": ["dup", "dup"]}, "a.yaml"),
    ("two-files-first-sorted-wins", {"b.yaml": ["dup"], "a.yaml": ["dup"]}, "a.yaml"),
]


@pytest.mark.parametrize(("layout", "kept"), [c[1:] for c in DUPLICATES], ids=[c[0] for c in DUPLICATES])
def test_duplicate_objects_are_reported_and_the_first_definition_wins(tmp_path: Path, layout: dict, kept: str) -> None:
    for file, names in layout.items():
        policies = ["Allow", "Deny"]
        (tmp_path / file).write_text(to_yaml([egress(n, policy=policies[i % 2]) for i, n in enumerate(names)]))
    result = load_paths([tmp_path])
    assert [o.name for o in result.objects] == ["dup"]
    assert Path(result.objects[0].source_file).name == kept
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.kind, error.namespace, error.name) == ("EgressNetwork", GLOBAL, "dup")
    assert "duplicate" in error.message and kept in error.message


def test_same_name_in_different_kinds_or_namespaces_is_not_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(to_yaml([egress("x"), egress("x", namespace="team"), http_route("x")]))
    result = load_paths([tmp_path])
    assert not result.errors and len(result.objects) == 3


def test_many_bad_objects_each_get_their_own_error() -> None:
    docs = [egress("a", networks=[]), egress("B"), http_route("r", hostnames=["*"]), egress("good")]
    result = load(docs)
    assert [o.name for o in result.objects] == ["good"]
    assert sorted(e.field for e in result.errors) == ["metadata.name", "spec.hostnames[0]", "spec.networks"]
