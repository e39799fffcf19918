"""Statuses of EgressNetworks and routes in the stable report shape (spec §5).

In: ``Attachments`` and the loader's errors. Out: ``{"objects": [...], "errors": [...]}``
with Kubernetes-style conditions, shared by ``egress-xds validate``, ``/debug/status`` and
the Kubernetes status writer. ``StatusReporter`` keeps the entries of the previous report and
re-renders only objects whose attachment changed (entries are shared: treat reports as
read-only). Called by ``egress_xds.translate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from egress_xds.model.load import LoadError
from egress_xds.model.objects import Route
from egress_xds.resolve.routes import (
    Attachments,
    Condition,
    ParentAttachment,
    ParentStatus,
    parent_slots,
)
from egress_xds.resolve.world import ENKey


class StatusReporter:
    """Builds status reports, reusing the entry of every object whose status is the same
    object as in the previous report (a change re-renders only what it touched). Entries
    are shared between reports: treat reports as read-only."""

    def __init__(self, controller_name: str) -> None:
        self.controller_name = controller_name
        self._egress: dict[tuple[str, str], tuple[Condition, dict[str, Any]]] = {}
        # id(route) -> (route, its EgressNetwork parent slots, their statuses, entry)
        self._routes: dict[int, tuple[Route, tuple[tuple[ENKey, int | None], ...],
                                      tuple[ParentStatus, ...], dict[str, Any]]] = {}
        self._parents: dict[ENKey, ParentAttachment] = {}  # as of the last report

    def report(self, attachments: Attachments, errors: Iterable[LoadError]) -> dict[str, Any]:
        objects: list[dict[str, Any]] = []
        egress: dict[tuple[str, str], tuple[Condition, dict[str, Any]]] = {}
        for key, cond in attachments.egress_status.items():  # sorted by key
            found = self._egress.get(key)
            if found is None or found[0] is not cond:
                found = (cond, {"kind": "EgressNetwork", "namespace": key[0], "name": key[1],
                                "conditions": [cond.as_dict()], "parents": []})
            egress[key] = found
            objects.append(found[1])
        routes: dict[int, tuple[Route, tuple[tuple[ENKey, int | None], ...],
                                tuple[ParentStatus, ...], dict[str, Any]]] = {}
        parents = attachments.parents
        # Only routes naming an EgressNetwork whose attachment changed can have a new status.
        touched = {id(route) for key, p in parents.items() if self._parents.get(key) is not p
                   for route in p.routes}
        touched.update(id(route) for key, p in self._parents.items() if parents.get(key) is not p
                       for route in p.routes)
        for route in attachments.routes:  # sorted by kind, namespace, name: after every EgressNetwork
            rid = id(route)
            memo = self._routes.get(rid)
            if memo is not None and memo[0] is route and rid not in touched:
                routes[rid] = memo
                if memo[1]:
                    objects.append(memo[3])
                continue
            slots = memo[1] if memo is not None and memo[0] is route else parent_slots(route)
            if not slots:
                routes[rid] = (route, slots, (), {})
                continue
            statuses = tuple(parents[key].statuses[(rid, port)] for key, port in slots)
            if memo is None or memo[0] is not route or any(
                    a is not b for a, b in zip(statuses, memo[2], strict=True)):
                memo = (route, slots, statuses, self._route_entry(route, statuses))
            routes[rid] = memo
            objects.append(memo[3])
        self._egress, self._routes, self._parents = egress, routes, dict(parents)
        return {"objects": objects, "errors": [e.as_dict() for e in errors]}

    def _route_entry(self, route: Route, statuses: tuple[ParentStatus, ...]) -> dict[str, Any]:
        return {
            "kind": route.kind,
            "namespace": route.metadata.namespace,
            "name": route.metadata.name,
            "conditions": [],
            "parents": [
                {
                    "parentRef": {"group": p.parent_ref.group, "kind": p.parent_ref.kind,
                                  "namespace": p.egress_network[0], "name": p.egress_network[1],
                                  **({"port": p.parent_ref.port} if p.parent_ref.port is not None else {})},
                    "controllerName": self.controller_name,
                    "conditions": [p.accepted.as_dict(), p.resolved_refs.as_dict()],
                }
                for p in statuses
            ],
        }


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
