"""Admin API messages <-> the JSON values the CLI and the debug endpoint print.

In: plain dicts (a verdict of ``Translator.explain``, an element of ``/debug/proxies``, the
``/debug/status`` report) on the server side; ``egress_xds.admin.v1`` messages on the client
side. Out: the other form. ``*_to_dict(*_message(d)) == d`` with the same key order, which is
what makes ``explain --server`` and ``status --server`` print byte for byte what the offline
command and the debug endpoint print. Conventions: a JSON null is an unset ``optional``
field; ``"*"`` subscriptions are ``wildcard``. Used by ``egress_xds.server.admin`` and
``egress_xds.admin.client``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from egress_xds.admin.v1 import admin_pb2


def _opt(message: Message, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


# ---- Verdict ---------------------------------------------------------------------------------


def verdict_message(verdict: dict[str, Any]) -> admin_pb2.Verdict:
    out = admin_pb2.Verdict(action=verdict["action"], reason=verdict["reason"])
    for name in ("egress_network", "route", "destination"):
        if verdict.get(name) is not None:
            setattr(out, name, verdict[name])
    return out


def verdict_to_dict(message: admin_pb2.Verdict) -> dict[str, Any]:
    return {
        "egress_network": _opt(message, "egress_network"),
        "route": _opt(message, "route"),
        "action": message.action,
        "destination": _opt(message, "destination"),
        "reason": message.reason,
    }


# ---- Proxies ---------------------------------------------------------------------------------


def proxy_message(proxy: dict[str, Any]) -> admin_pb2.Proxy:
    out = admin_pb2.Proxy(
        id=proxy["id"], node_id=proxy["node_id"], cluster=proxy["cluster"],
        namespace=proxy["namespace"], mode=proxy["mode"], peer=proxy["peer"],
        connected_at=proxy["connected_at"])
    if proxy.get("snapshot_version") is not None:
        out.snapshot_version = proxy["snapshot_version"]
    for short, info in proxy["types"].items():
        status = out.types.add(type=short, type_url=info["type_url"], state=info["state"],
                               resources=info["resources"])
        for name in ("version_sent", "version_acked", "nonce"):
            if info.get(name) is not None:
                setattr(status, name, info[name])
        if info["subscribed"] == "*":
            status.wildcard = True
        else:
            status.subscribed.extend(info["subscribed"])
        nack = info.get("last_nack")
        if nack is not None:
            status.last_nack.CopyFrom(admin_pb2.Nack(
                version=nack["version"], nonce=nack["nonce"], message=nack["message"],
                code=nack["code"], at=nack["at"]))
    return out


def proxy_to_dict(message: admin_pb2.Proxy) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for status in message.types:
        nack = status.last_nack if status.HasField("last_nack") else None
        types[status.type] = {
            "type_url": status.type_url,
            "state": status.state,
            "version_sent": _opt(status, "version_sent"),
            "version_acked": _opt(status, "version_acked"),
            "nonce": _opt(status, "nonce"),
            "subscribed": "*" if status.wildcard else list(status.subscribed),
            "resources": status.resources,
            "last_nack": None if nack is None else {
                "version": nack.version, "nonce": nack.nonce, "message": nack.message,
                "code": nack.code, "at": nack.at},
        }
    return {
        "id": message.id,
        "node_id": message.node_id,
        "cluster": message.cluster,
        "namespace": message.namespace,
        "mode": message.mode,
        "peer": message.peer,
        "connected_at": message.connected_at,
        "snapshot_version": _opt(message, "snapshot_version"),
        "types": types,
    }


# ---- Status report ---------------------------------------------------------------------------


def _condition(cond: dict[str, Any]) -> admin_pb2.Condition:
    return admin_pb2.Condition(type=cond["type"], status=cond["status"], reason=cond["reason"],
                               message=cond.get("message", ""))


def _condition_dict(cond: admin_pb2.Condition) -> dict[str, Any]:
    return {"type": cond.type, "status": cond.status, "reason": cond.reason, "message": cond.message}


_REF_KEYS = ("group", "kind", "namespace", "name", "port")


def status_message(report: dict[str, Any]) -> admin_pb2.StatusReport:
    out = admin_pb2.StatusReport()
    for obj in report.get("objects", []):
        status = out.objects.add(kind=obj["kind"], namespace=obj["namespace"], name=obj["name"],
                                 conditions=[_condition(c) for c in obj["conditions"]])
        for parent in obj["parents"]:
            ref = parent["parentRef"]
            parent_ref = admin_pb2.ParentReference(namespace=ref["namespace"], name=ref["name"])
            for key in ("group", "kind", "port"):
                if ref.get(key) is not None:
                    setattr(parent_ref, key, ref[key])
            status.parents.add(parent_ref=parent_ref, controller_name=parent["controllerName"],
                               conditions=[_condition(c) for c in parent["conditions"]])
    for error in report.get("errors", []):
        out.errors.add(**{k: error.get(k, "") for k in ("file", "kind", "namespace", "name", "field", "message")})
    return out


def status_to_dict(message: admin_pb2.StatusReport) -> dict[str, Any]:
    objects = []
    for obj in message.objects:
        parents = []
        for parent in obj.parents:
            ref = parent.parent_ref
            values = {"group": _opt(ref, "group"), "kind": _opt(ref, "kind"), "namespace": ref.namespace,
                      "name": ref.name, "port": _opt(ref, "port")}
            parents.append({
                "parentRef": {k: values[k] for k in _REF_KEYS if values[k] is not None},
                "controllerName": parent.controller_name,
                "conditions": [_condition_dict(c) for c in parent.conditions],
            })
        objects.append({"kind": obj.kind, "namespace": obj.namespace, "name": obj.name,
                        "conditions": [_condition_dict(c) for c in obj.conditions], "parents": parents})
    errors = [{"file": e.file, "kind": e.kind, "namespace": e.namespace, "name": e.name,
               "field": e.field, "message": e.message} for e in message.errors]
    return {"objects": objects, "errors": errors}
