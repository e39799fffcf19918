"""kind-cluster/, Dockerfile and scripts, checked offline (no container engine here).

Every manifest parses; core objects round-trip through the official client's models (a wrong
type or an unknown field fails); the egress objects load through our own models and are
Accepted, and they produce the verdicts demo.sh expects; the EgressNetwork CRD's OpenAPI
schema accepts every EgressNetwork we ship and rejects what §1 forbids; RBAC is
least-privilege and covers what the source reads and writes; the scripts pass ``bash -n``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from egress_xds.model.load import load_paths, parse_document
from egress_xds.sources.kubernetes import KINDS
from egress_xds.translate import Translator

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "kind-cluster"
MANIFESTS = sorted(KIND.rglob("*.yaml"))
CORE_MODELS = {
    "Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding", "Role": "V1Role", "RoleBinding": "V1RoleBinding",
    "Deployment": "V1Deployment", "Service": "V1Service", "Lease": "V1Lease", "NetworkPolicy": "V1NetworkPolicy",
    "CustomResourceDefinition": "V1CustomResourceDefinition",
}
EGRESS_KINDS = {"EgressNetwork", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc.get("kind") == kind]


def test_every_manifest_parses_and_names_its_objects() -> None:
    docs = documents()
    assert len(MANIFESTS) >= 6 and len(docs) >= 20
    for path, doc in docs:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Cluster":  # kind's own config
            assert doc["metadata"]["name"], path
    assert {doc["kind"] for _, doc in docs} >= set(CORE_MODELS) | {"EgressNetwork", "HTTPRoute", "TLSRoute"}


def test_core_objects_match_the_kubernetes_schemas() -> None:
    api = client.ApiClient()
    checked = 0
    for path, doc in documents():
        model = CORE_MODELS.get(doc["kind"])
        if model is None:
            continue
        obj = api.deserialize(json.dumps(doc), model, "application/json")  # wrong types raise
        assert api.sanitize_for_serialization(obj) == doc, f"{path}: {doc['kind']} has unknown fields"
        checked += 1
    assert checked >= 14


def test_a_wrong_field_is_caught() -> None:
    api = client.ApiClient()
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "egress-xds"]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Never"
    assert api.sanitize_for_serialization(api.deserialize(json.dumps(typo), "V1Deployment", "application/json")) != typo
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(ValueError):
        api.deserialize(json.dumps(wrong), "V1Deployment", "application/json")


def egress_translator() -> Translator:
    objects = []
    for path, doc in documents():
        if doc["kind"] in EGRESS_KINDS:
            obj, error, _ = parse_document(doc, file=str(path))
            assert error is None, str(error)
            assert obj is not None
            objects.append(obj)
    translator = Translator()
    translator.load(objects)
    return translator


def test_egress_objects_load_with_our_models_and_are_accepted() -> None:
    report = egress_translator().status_report()
    assert len(report["objects"]) >= 4 and not report["errors"]
    for obj in report["objects"]:
        for cond in obj["conditions"] + [c for p in obj["parents"] for c in p["conditions"]]:
            assert cond["status"] == "True", (obj["kind"], obj["name"], cond)


@pytest.mark.parametrize(("namespace", "port", "request_", "action"), [
    ("demo", 80, {"host": "httpbin.org", "path": "/get", "method": "GET"}, "forward"),
    ("demo", 80, {"host": "httpbin.org", "path": "/headers", "method": "GET"}, "forward"),
    ("demo", 80, {"host": "httpbin.org", "path": "/anything", "method": "POST"}, "forward"),
    ("other", 80, {"host": "httpbin.org", "path": "/anything", "method": "POST"}, "deny"),  # consumer route
    ("demo", 80, {"host": "httpbin.org", "path": "/post", "method": "POST"}, "deny"),
    ("demo", 80, {"host": "example.com", "path": "/", "method": "GET"}, "deny"),
    ("demo", 443, {"sni": "example.com"}, "forward"),
    ("demo", 443, {"sni": "httpbin.org"}, "deny"),
    ("demo", 22, {}, "deny"),
])
def test_demo_sh_expectations_match_the_translator(namespace: str, port: int, request_: dict[str, str],
                                                   action: str) -> None:
    verdict = egress_translator().explain(namespace, "198.51.100.20", port, **request_)  # type: ignore[arg-type]
    assert verdict["action"] == action, verdict
    demo = (KIND / "demo.sh").read_text()
    if namespace == "demo" and "path" in request_:
        assert f"{request_['host']}{request_['path']}" in demo  # demo.sh really tries it


# ---- the EgressNetwork CRD -------------------------------------------------------------------


def schema_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The subset of OpenAPI v3 structural schemas the API server enforces that the CRD uses."""
    errors: list[str] = []
    kind = schema.get("type")
    python = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
    if kind and not isinstance(value, python[kind]):
        return [f"{path}: expected {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            errors.append(f"{path}: bad length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: does not match {schema['pattern']}")
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 30):
            errors.append(f"{path}: bad number of items")
        for i, item in enumerate(value):
            errors += schema_errors(schema.get("items", {}), item, f"{path}[{i}]")
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        properties = schema.get("properties")
        for name, item in value.items():
            if properties is not None and name in properties:
                errors += schema_errors(properties[name], item, f"{path}.{name}")
            elif properties is not None and name not in properties and path.startswith(".spec"):
                errors.append(f"{path}.{name}: unknown field")
    return errors


def crd_schema() -> dict[str, Any]:
    (crd,) = [c for c in of_kind("CustomResourceDefinition") if c["spec"]["names"]["kind"] == "EgressNetwork"]
    assert crd["metadata"]["name"] == "egressnetworks.policy.linkerd.io"
    assert crd["spec"]["group"] == "policy.linkerd.io" and crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}  # statuses are written to the subresource
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_the_crd_accepts_every_egress_network_we_ship() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["trafficPolicy"]
    assert spec["properties"]["trafficPolicy"]["enum"] == ["Allow", "Deny"]
    shipped = of_kind("EgressNetwork") + [o.model_dump(mode="json", by_alias=True, exclude_none=True)
                                          for o in load_paths([ROOT / "examples"]).objects
                                          if o.kind == "EgressNetwork"]
    assert len(shipped) >= 3
    for obj in shipped:
        assert schema_errors(schema, obj) == [], obj["metadata"]["name"]
    status = {"conditions": [{"type": "Accepted", "status": "False", "reason": "EgressReasonNetworkOverlap",
                              "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]}
    assert schema_errors(schema, {**shipped[0], "status": status}) == []


@pytest.mark.parametrize("spec", [
    {},
    {"trafficPolicy": "Maybe"},
    {"trafficPolicy": "Deny", "networks": []},
    {"trafficPolicy": "Deny", "networks": [{"except": ["10.0.0.0/8"]}]},
    {"trafficPolicy": "Deny", "networks": [{"cidr": "example.com"}]},
    {"trafficPolicy": "Deny", "network": [{"cidr": "10.0.0.0/8"}]},
])
def test_the_crd_rejects_what_the_spec_forbids(spec: dict[str, Any]) -> None:
    obj = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
           "metadata": {"name": "x", "namespace": "y"}, "spec": spec}
    assert schema_errors(crd_schema(), obj)


# ---- RBAC, the Lease, the Deployment -----------------------------------------------------------


def rules(kind: str, name: str) -> list[dict[str, Any]]:
    (role,) = [r for r in of_kind(kind) if r["metadata"]["name"] == name]
    found: list[dict[str, Any]] = role["rules"]
    return found


def test_rbac_is_least_privilege_and_covers_the_source() -> None:
    cluster = rules("ClusterRole", "egress-xds")
    election = rules("Role", "egress-xds-leader-election")
    for rule in cluster + election:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not set(rule["verbs"]) & {"create", "delete", "deletecollection", "escalate", "bind", "impersonate"}
        writes = set(rule["verbs"]) & {"patch", "update"}
        if writes:
            assert all(r.endswith("/status") for r in rule["resources"]) or rule.get("resourceNames") == ["egress-xds"]

    def allowed(group: str, resource: str, verb: str) -> bool:
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in cluster)

    for kind in KINDS:
        assert allowed(kind.group, kind.plural, "list") and allowed(kind.group, kind.plural, "watch"), kind
        if kind.kind != "Service":
            assert allowed(kind.group, f"{kind.plural}/status", "patch"), kind
    assert not allowed("", "services", "patch")
    (lease,) = of_kind("Lease")
    assert election == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "resourceNames": [lease["metadata"]["name"]], "verbs": ["get", "update"]}]
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "egress-xds"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--lease-name={lease['metadata']['name']}" in args
    assert lease["metadata"]["namespace"] == deployment["metadata"]["namespace"]  # POD_NAMESPACE is the default


def test_the_control_plane_runs_non_root_on_a_read_only_filesystem() -> None:
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "egress-xds"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["args"][:2] == ["serve", "--kubernetes"]
    assert deployment["spec"]["replicas"] >= 2  # every replica serves xDS, one writes status
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert pod["serviceAccountName"] == "egress-xds"


def test_the_demo_pod_is_wired_to_the_control_plane() -> None:
    (client_deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "client"]
    pod = client_deployment["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}
    containers = {c["name"]: c for c in pod["containers"]}
    proxy_uid = containers["envoy"]["securityContext"]["runAsUser"]
    capture_args = init["capture"]["args"]
    assert capture_args[0] == "apply" and capture_args[capture_args.index("--proxy-uid") + 1] == str(proxy_uid)
    assert containers["app"]["securityContext"]["runAsUser"] != proxy_uid
    assert set(init["capture"]["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    bootstrap = " ".join(init["bootstrap"]["args"])
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "egress-xds"]
    ads_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc-ads")
    assert f"--ads egress-xds.egress-xds.svc.cluster.local:{ads_port}" in bootstrap
    assert "egress-xds bootstrap" in bootstrap and "/etc/envoy/bootstrap.yaml" in containers["envoy"]["args"]
    (policy,) = of_kind("NetworkPolicy")
    assert policy["metadata"]["namespace"] == client_deployment["metadata"]["namespace"]
    assert policy["spec"]["policyTypes"] == ["Egress"]


# ---- scripts and the Dockerfile ----------------------------------------------------------------


@pytest.mark.parametrize("script", ["kind-cluster/up.sh", "kind-cluster/demo.sh", "kind-cluster/down.sh",
                                    "envoy/capture.sh"])
def test_scripts_pass_bash_n(script: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(ROOT / script)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"


def test_up_sh_installs_what_the_cluster_needs() -> None:
    up = (KIND / "up.sh").read_text()
    assert re.search(r"gateway-api/releases/download/\$\{GATEWAY_API_VERSION\}/experimental-install\.yaml", up)
    for needed in ("kind create cluster", "kind-config.yaml", "crds/", "kind load docker-image",
                   "manifests/egress-xds.yaml", "manifests/demo.yaml", "manifests/egress-policy.yaml",
                   "manifests/networkpolicy.yaml", "--target runtime", "--target capture"):
        assert needed in up, needed


def test_the_dockerfile_is_multi_stage_non_root_and_serves_kubernetes() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE)
    assert stages == ["build", "capture", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    user = re.search(r"^USER\s+(\d+)(?::(\d+))?", runtime, flags=re.MULTILINE)
    assert user is not None and int(user.group(1)) != 0
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])", runtime, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])", runtime, flags=re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert entrypoint + cmd == ["egress-xds", "serve", "--kubernetes"]
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime and "compileall" in runtime
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for copied in re.findall(r"^COPY\s+(?!--)(\S+)", text, flags=re.MULTILINE):
        assert f"!{copied.rstrip('/')}" in ignore or f"!{copied.rstrip('/')}/" in ignore, copied
