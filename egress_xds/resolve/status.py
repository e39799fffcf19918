"""Statuses of EgressNetworks and routes in the stable report shape (spec §5).

In: ``Attachments`` and the loader's errors. Out: ``{"objects": [...], "errors": [...]}``
with Kubernetes-style conditions, shared by ``egress-xds validate``, ``/debug/status`` and
the Kubernetes status writer. Called by ``egress_xds.translate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from egress_xds.model.load import LoadError
from egress_xds.resolve.routes import Attachments


def status_report(attachments: Attachments, errors: Iterable[LoadError], controller_name: str) -> dict[str, Any]:
    objects: list[dict[str, Any]] = []
    for (namespace, name), cond in sorted(attachments.egress_status.items()):
        objects.append({"kind": "EgressNetwork", "namespace": namespace, "name": name,
                        "conditions": [cond.as_dict()], "parents": []})
    for rs in attachments.route_status:
        objects.append({
            "kind": rs.route.kind,
            "namespace": rs.route.metadata.namespace,
            "name": rs.route.metadata.name,
            "conditions": [],
            "parents": [
                {
                    "parentRef": {"group": p.parent_ref.group, "kind": p.parent_ref.kind,
                                  "namespace": p.egress_network[0], "name": p.egress_network[1],
                                  **({"port": p.parent_ref.port} if p.parent_ref.port is not None else {})},
                    "controllerName": controller_name,
                    "conditions": [p.accepted.as_dict(), p.resolved_refs.as_dict()],
                }
                for p in rs.parents
            ],
        })
    objects.sort(key=lambda o: (o["kind"], o["namespace"], o["name"]))
    return {"objects": objects, "errors": [e.as_dict() for e in errors]}


def invalid_objects(report: dict[str, Any]) -> list[str]:
    """Human lines for every condition that is not True, for ``validate``'s exit code."""
    lines: list[str] = []
    for obj in report["objects"]:
        label = f"{obj['kind']} {obj['namespace']}/{obj['name']}"
        for cond in obj["conditions"]:
            if cond["status"] != "True":
                lines.append(f"{label}: {cond['type']}={cond['status']} {cond['reason']}: {cond['message']}")
        for parent in obj["parents"]:
            ref = parent["parentRef"]
            for cond in parent["conditions"]:
                if cond["status"] != "True":
                    lines.append(f"{label} (parent EgressNetwork {ref['namespace']}/{ref['name']}"
                                 f"{':' + str(ref['port']) if 'port' in ref else ''}): "
                                 f"{cond['type']}={cond['status']} {cond['reason']}: {cond['message']}")
    return lines
