"""The bundled examples (what ``serve`` and the demo load by default) are valid and do what
their header comments promise."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from egress_xds.model.load import load_paths
from egress_xds.translate import Translator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCUMENTATION = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24")]


def _translator() -> Translator:
    result = load_paths([EXAMPLES])
    assert not result.errors, [str(e) for e in result.errors]
    assert not result.notices
    t = Translator()
    t.load(result.objects)
    return t


def test_examples_exist_and_every_object_is_accepted_and_resolved() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {"egress.yaml", "routes.yaml", "namespaces.yaml"}
    report = _translator().status_report()
    kinds = {o["kind"] for o in report["objects"]}
    assert kinds == {"EgressNetwork", "HTTPRoute", "TLSRoute", "TCPRoute"}
    for obj in report["objects"]:
        conds = obj["conditions"] + [c for p in obj["parents"] for c in p["conditions"]]
        assert conds and all(c["status"] == "True" for c in conds), obj


def test_examples_use_only_documentation_addresses() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "EgressNetwork":
                for entry in doc["spec"].get("networks", []):
                    for value in [entry["cidr"], *entry.get("except", [])]:
                        net = ipaddress.ip_network(value, strict=False)
                        assert any(net.subnet_of(d) for d in DOCUMENTATION), (path.name, value)
            if doc["kind"] == "Service":
                ip = ipaddress.ip_address(doc["spec"]["clusterIP"])
                assert any(ip in d for d in DOCUMENTATION), (path.name, ip)


def test_every_file_starts_with_a_readme_comment() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        head = path.read_text().splitlines()[:3]
        assert all(line.startswith("#") for line in head), path.name


# (id, namespace, ip, port, request, expected (egress_network, route, action))
PROMISES = [
    ("partners-allowed", "app", "203.0.113.10", 80, {"host": "partner.example.com"},
     ("linkerd-egress/partners", "default", "forward")),
    ("internet-ssh-closed", "app", "203.0.113.130", 22, {}, ("linkerd-egress/internet", "default", "deny")),
    ("get-allowed", "app", "203.0.113.130", 80, {"host": "httpbin.example.com", "path": "/get/anything"},
     ("linkerd-egress/internet", "HTTPRoute linkerd-egress/httpbin-get", "forward")),
    ("post-denied", "app", "203.0.113.130", 80, {"host": "httpbin.example.com", "path": "/post", "method": "POST"},
     ("linkerd-egress/internet", "default", "deny")),
    ("audit-redirected-to-service", "app", "203.0.113.130", 80, {"host": "audit.example.com", "path": "/"},
     ("linkerd-egress/internet", "HTTPRoute linkerd-egress/audit-proxy", "redirect")),
    ("api-tls-allowed", "app", "203.0.113.130", 443, {"sni": "api.example.com"},
     ("linkerd-egress/internet", "TLSRoute linkerd-egress/api-tls", "forward")),
    ("other-tls-closed", "app", "203.0.113.130", 443, {"sni": "evil.example.com"},
     ("linkerd-egress/internet", "default", "deny")),
    ("tcp-9000-allowed", "app", "203.0.113.130", 9000, {}, ("linkerd-egress/internet", "TCPRoute linkerd-egress/echo-tcp", "forward")),
    ("payments-own-policy", "payments", "203.0.113.10", 443, {"sni": "payments.example.com"},
     ("payments/payments-egress", "TLSRoute payments/payment-provider", "forward")),
    ("payments-hides-partners", "payments", "203.0.113.10", 80, {"host": "partner.example.com"},
     ("payments/payments-egress", "default", "deny")),
    ("web-consumer-route", "web", "203.0.113.130", 80, {"host": "h", "path": "/post", "method": "POST"},
     ("linkerd-egress/internet", "HTTPRoute web/httpbin-post", "forward")),
    ("cluster-untouched", "app", "10.96.0.1", 443, {}, (None, None, "forward")),
]


@pytest.mark.parametrize(("namespace", "ip", "port", "request_kw", "expected"), [c[1:] for c in PROMISES],
                         ids=[c[0] for c in PROMISES])
def test_examples_behave_as_documented(namespace: str, ip: str, port: int, request_kw: dict,
                                       expected: tuple) -> None:
    verdict = _translator().explain(namespace, ip, port, **request_kw)
    assert (verdict["egress_network"], verdict["route"], verdict["action"]) == expected


@pytest.mark.envoy
def test_envoy_accepts_the_examples() -> None:
    from tests.support.envoy_validate import validate_resources

    t = _translator()
    for namespace in ("app", "web", "payments", "linkerd-egress"):
        validate_resources(t.resources(namespace))
