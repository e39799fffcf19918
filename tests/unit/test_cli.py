"""The offline CLI: ``egress-xds translate | validate | explain`` on manifest files, through
``egress_xds.cli.main`` exactly as the console script runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from egress_xds.cli import main
from tests.unit.manifests import (
    GLOBAL,
    egress,
    http_route,
    path_rule,
    svc_backend,
    tls_route,
    to_yaml,
)

GOOD = [
    egress("internet", policy="Deny"),
    egress("partners", policy="Allow", networks=["203.0.113.0/25"]),
    http_route("web", hostnames=["api.example.com"], rules=[path_rule("/get", method="GET")]),
    tls_route("tls", hostnames=["secure.example.com"]),
]


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "egress.yaml").write_text(to_yaml(GOOD))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------
# explain

# (id, extra args, egress_network, route, action, destination)
EXPLAIN = [
    ("http-route-forward", ["--to", "198.51.100.7:80", "--host", "api.example.com", "--path", "/get"],
     f"{GLOBAL}/internet", f"HTTPRoute {GLOBAL}/web", "forward", "198.51.100.7:80"),
    ("http-method-mismatch-denied", ["--to", "198.51.100.7:80", "--host", "api.example.com", "--path", "/get",
                                     "--method", "POST"], f"{GLOBAL}/internet", "default", "deny", None),
    ("tls-sni-forward", ["--to", "198.51.100.7:443", "--sni", "secure.example.com"],
     f"{GLOBAL}/internet", f"TLSRoute {GLOBAL}/tls", "forward", "198.51.100.7:443"),
    ("tls-other-sni-denied", ["--to", "198.51.100.7:443", "--sni", "evil.example.com"],
     f"{GLOBAL}/internet", "default", "deny", None),
    ("allow-network", ["--to", "203.0.113.9:22"], f"{GLOBAL}/partners", "default", "forward", "203.0.113.9:22"),
    ("in-cluster", ["--to", "10.96.0.1:443"], None, None, "forward", "10.96.0.1:443"),
    ("ipv6", ["--to", "[2001:db8::1]:80", "--host", "x"], f"{GLOBAL}/internet", "default", "deny", None),
]


@pytest.mark.parametrize(("args", "en", "route", "action", "destination"), [c[1:] for c in EXPLAIN],
                         ids=[c[0] for c in EXPLAIN])
def test_explain_json(capsys: pytest.CaptureFixture[str], manifests: Path, args: list[str], en: str | None,
                      route: str | None, action: str, destination: str | None) -> None:
    code, out, err = run(capsys, "explain", "-f", str(manifests), "-n", "app", *args, "-o", "json")
    assert code == 0 and err == ""
    verdict = json.loads(out)
    assert list(verdict) == ["egress_network", "route", "action", "destination", "reason"]
    assert (verdict["egress_network"], verdict["route"], verdict["action"], verdict["destination"]) == (
        en, route, action, destination)
    assert verdict["reason"]


def test_explain_text(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    code, out, _ = run(capsys, "explain", "-f", str(manifests), "-n", "app", "--to", "198.51.100.7:80",
                       "--host", "api.example.com", "--path", "/nope")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split(":", 1)[1].strip() == f"{GLOBAL}/internet"
    assert lines[1].split(":", 1)[1].strip() == "default"
    assert lines[2].split(":", 1)[1].strip() == "deny"
    assert "403" in lines[3]


@pytest.mark.parametrize("to", ["198.51.100.7", "not-an-ip:80", "198.51.100.7:0", "198.51.100.7:70000"])
def test_explain_rejects_bad_destinations(capsys: pytest.CaptureFixture[str], manifests: Path, to: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["explain", "-f", str(manifests), "-n", "app", "--to", to])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "IP:PORT" in err or "port must be within 1-65535" in err


def test_explain_sni_and_host_are_exclusive(manifests: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["explain", "-f", str(manifests), "-n", "app", "--to", "198.51.100.7:443", "--sni", "a", "--host", "b"])
    assert exc.value.code == 2


def test_explain_honours_translation_options(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    code, out, _ = run(capsys, "explain", "-f", str(manifests), "-n", "app", "--to", "198.51.100.7:80",
                       "--cluster-networks", "198.51.100.0/24", "-o", "json")
    assert code == 0
    assert json.loads(out)["egress_network"] is None


# ---------------------------------------------------------------------------------------
# validate

def test_validate_all_good_exits_0(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    code, out, _ = run(capsys, "validate", "-f", str(manifests))
    assert code == 0
    assert f"EgressNetwork {GLOBAL}/internet: Accepted=True (Accepted)" in out
    assert f"HTTPRoute {GLOBAL}/web -> EgressNetwork {GLOBAL}/internet:80: Accepted=True" in out
    assert out.splitlines()[-1] == "4 objects, 0 not accepted or unresolved, 0 errors"


# (id, documents, exit code, text that must appear)
INVALID = [
    ("load-error", [egress("bad", networks=[])], "at least one network must be specified"),
    ("non-accepted-egress-network", [egress("overlap", networks=["10.0.0.0/8"])], "EgressReasonNetworkOverlap"),
    ("route-without-parent", [http_route("orphan", en="ghost")], "NoMatchingParent"),
    ("unresolved-backend", [http_route("r", en="internet", rules=[path_rule("/", backends=[svc_backend("ghost")])])],
     "BackendNotFound"),
    ("yaml-syntax", None, "cannot parse"),
]


@pytest.mark.parametrize(("docs", "text"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_validate_exits_1_when_anything_is_invalid(capsys: pytest.CaptureFixture[str], manifests: Path,
                                                    docs: list | None, text: str) -> None:
    extra = manifests / "extra.yaml"
    extra.write_text("kind: [unclosed\n" if docs is None else to_yaml(docs))
    code, out, _ = run(capsys, "validate", "-f", str(manifests))
    assert code == 1
    assert text in out
    # The good objects are still reported.
    assert f"EgressNetwork {GLOBAL}/internet: Accepted=True" in out


def test_validate_json_is_the_status_report(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    (manifests / "extra.yaml").write_text(to_yaml([egress("Bad")]))
    code, out, _ = run(capsys, "validate", "-f", str(manifests), "-o", "json")
    assert code == 1
    report = json.loads(out)
    assert set(report) == {"objects", "errors"}
    assert len(report["objects"]) == 4
    assert [(e["kind"], e["name"], e["field"]) for e in report["errors"]] == [("EgressNetwork", "Bad", "metadata.name")]
    assert report["errors"][0]["file"].endswith("extra.yaml")


def test_validate_prints_notices_for_skipped_kinds(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    (manifests / "deploy.yaml").write_text(to_yaml([{"apiVersion": "apps/v1", "kind": "Deployment",
                                                      "metadata": {"name": "web", "namespace": "app"}}]))
    code, out, _ = run(capsys, "validate", "-f", str(manifests))
    assert code == 0
    assert "notice:" in out and "Deployment app/web" in out


# ---------------------------------------------------------------------------------------
# translate

@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_translate_prints_the_resources(capsys: pytest.CaptureFixture[str], manifests: Path, fmt: str) -> None:
    code, out, err = run(capsys, "translate", "-f", str(manifests), "-n", "app", "-o", fmt)
    assert code == 0 and err == ""
    data = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert list(data) == ["clusters", "listeners", "routes"]
    assert [item["name"] for item in data["listeners"]] == ["outbound"]
    chain_names = {c["name"] for c in data["listeners"][0]["filter_chains"]}
    assert "443|linkerd-egress/internet|sni:linkerd-egress/tls" in chain_names


def test_translate_is_deterministic(capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    _, first, _ = run(capsys, "translate", "-f", str(manifests), "-n", "app")
    _, second, _ = run(capsys, "translate", "-f", str(manifests), "-n", "app")
    assert first == second


def test_translate_reports_load_errors_on_stderr_and_still_translates(
        capsys: pytest.CaptureFixture[str], manifests: Path) -> None:
    (manifests / "bad.yaml").write_text(to_yaml([egress("Bad")]))
    code, out, err = run(capsys, "translate", "-f", str(manifests), "-n", "app")
    assert code == 0
    assert "error:" in err and "Bad" in err
    assert yaml.safe_load(out)["listeners"]


def test_translate_global_egress_namespace_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(to_yaml([egress("internet", "egress")]))
    _, default_ns, _ = run(capsys, "translate", "-f", str(tmp_path), "-n", "app", "-o", "json")
    _, custom_ns, _ = run(capsys, "translate", "-f", str(tmp_path), "-n", "app", "-o", "json",
                          "--global-egress-namespace", "egress")
    assert "egress/internet" not in default_ns
    assert "egress/internet" in custom_ns


@pytest.mark.parametrize(("flag", "value"), [("--cluster-networks", "nonsense"), ("--opaque-ports", "x"),
                                             ("--outbound-port", "0")])
def test_bad_options_exit_with_a_message(manifests: Path, flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["translate", "-f", str(manifests), "-n", "app", flag, value])
    assert exc.value.code not in (0, None)


def test_the_serving_line_names_a_big_worlds_namespaces_in_brief() -> None:
    from egress_xds.serve import _namespaces_field

    assert _namespaces_field(["a", "b"]) == {"namespaces": ["a", "b"]}
    names = [f"ns-{i:04d}" for i in range(1101)]
    field = _namespaces_field(names)
    assert field["namespaces"] == [*names[:20], "... 1081 more"] and field["namespace_count"] == 1101
