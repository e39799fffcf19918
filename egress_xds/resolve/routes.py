"""Route attachment to EgressNetworks, backend resolution and route/EgressNetwork statuses.

In: a ``World`` (and the previous world's ``Attachments``).
Out: ``Attachments``: which routes are programmed on each (EgressNetwork, port), with their
backends resolved per parent, and the status of every EgressNetwork and route (spec §3, §5).
Statuses are global (one per object); programming per client namespace happens in
``resolve.namespace``. Called by ``egress_xds.translate`` once per world change.

Everything about one EgressNetwork key (its condition, the routes naming it, their conflicts
and backends) depends only on that EgressNetwork, those routes and the Services and
EgressNetworks their backends name, so attachment is computed per key (``ParentAttachment``)
and a key's previous result is reused, the same object, while all of those are the same
objects as before: a change in one namespace re-attaches only the keys it touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from egress_xds import ir
from egress_xds.model.objects import (
    POLICY_GROUP,
    ROUTE_KIND_RANK,
    BackendRef,
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    ParentRef,
    Route,
    TCPRoute,
    TLSRoute,
)
from egress_xds.resolve.partition import egress_accepted
from egress_xds.resolve.world import ENKey, TranslatorOptions, World

SUPPORTED_HTTP_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
SUPPORTED_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")

@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


_TRUE = {kind: Condition(kind, "True", kind) for kind in ("Accepted", "ResolvedRefs")}


def _true(kind: str) -> Condition:
    return _TRUE[kind]


@dataclass(frozen=True)
class ParentStatus:
    """The route's status towards one EgressNetwork parentRef."""

    parent_ref: ParentRef
    egress_network: ENKey
    accepted: Condition
    resolved_refs: Condition
    # Backends per rule (index-aligned with spec.rules), resolved against this parent.
    backends: tuple[tuple[ir.Backend, ...], ...] = ()

    @property
    def programmed(self) -> bool:
        return self.accepted.status == "True"


# What resolving a key's backends looked up: (table, key, the object found or None).
Lookup = tuple[str, ENKey, object]


@dataclass(frozen=True, eq=False)
class ParentAttachment:
    """Attachment of every route naming one EgressNetwork key as a parent."""

    key: ENKey
    egress: EgressNetwork | None
    routes: tuple[Route, ...]
    condition: Condition | None  # None when no such EgressNetwork exists
    # (id(route), parentRef port) -> that parent's status; the routes are held in ``routes``
    statuses: dict[tuple[int, int | None], ParentStatus]
    # port -> programmed (route, parent status), in ``World.routes`` order
    by_port: dict[int, list[tuple[Route, ParentStatus]]]
    lookups: tuple[Lookup, ...]

    def still_valid(self, world: World) -> bool:
        """True when everything this result was computed from is the same object in ``world``."""
        if world.egress_networks.get(self.key) is not self.egress:
            return False
        routes = world.routes_by_parent.get(self.key, ())
        if routes is not self.routes and (
                len(routes) != len(self.routes) or any(a is not b for a, b in zip(routes, self.routes, strict=True))):
            return False
        for table, key, found in self.lookups:
            source: dict[ENKey, Any] = world.services if table == "service" else world.egress_networks
            if source.get(key) is not found:
                return False
        return True


@dataclass
class Attachments:
    """Result of attaching all routes of a world."""

    options: TranslatorOptions | None = None
    routes: tuple[Route, ...] = ()
    parents: dict[ENKey, ParentAttachment] = field(default_factory=dict)
    egress_status: dict[ENKey, Condition] = field(default_factory=dict)

    def programmed_on(self, key: ENKey) -> dict[int, list[tuple[Route, ParentStatus]]]:
        """Programmed routes of one EgressNetwork by port."""
        found = self.parents.get(key)
        return found.by_port if found is not None else {}

    def accepted(self, key: ENKey) -> bool:
        cond = self.egress_status.get(key)
        return cond is not None and cond.status == "True"


def parent_slots(route: Route) -> tuple[tuple[ENKey, int | None], ...]:
    """The route's EgressNetwork parentRefs as (key, port), each once, in parentRef order:
    one status entry each."""
    slots: dict[tuple[ENKey, int | None], None] = {}
    for ref in route.spec.parentRefs:
        if ref.is_egress_network:
            slots[((ref.namespace or route.metadata.namespace, ref.name), ref.port)] = None
    return tuple(slots)


def egress_condition(en: EgressNetwork, world: World) -> Condition:
    overlap = egress_accepted(en, world.options)
    if overlap is None:
        return _true("Accepted")
    return Condition("Accepted", "False", "EgressReasonNetworkOverlap", f"networks overlap with clusterNetworks: {overlap}")


def resolve_backend(route: Route, ref: BackendRef, parent: ENKey, world: World,
                    lookups: list[Lookup] | None = None) -> tuple[ir.Backend, Condition | None]:
    """One backendRef -> an IR backend and, when invalid, the ResolvedRefs condition (spec §3).
    Appends what it looked up in the world to ``lookups``."""
    namespace = ref.namespace or route.metadata.namespace  # Decision: the Gateway API rule.
    if lookups is None:
        lookups = []
    label = f"{namespace}/{ref.name}"

    def invalid(reason: str, message: str) -> tuple[ir.Backend, Condition]:
        backend = ir.Backend("invalid", ref.weight, namespace, ref.name, reason=f"{reason}: {message}")
        return backend, Condition("ResolvedRefs", "False", reason, message)

    if ref.group == POLICY_GROUP and ref.kind == "EgressNetwork":
        lookups.append(("egress", (namespace, ref.name), world.egress_networks.get((namespace, ref.name))))
        if (namespace, ref.name) not in world.egress_networks:
            return invalid("BackendNotFound", f"EgressNetwork {label} not found")
        if (namespace, ref.name) != parent:
            return invalid(
                "InvalidKind",
                "EgressNetwork backend needs to be on a route that has an EgressNetwork parent"
                f" ({label} is not the parent {parent[0]}/{parent[1]})",
            )
        return ir.Backend("passthrough", ref.weight, namespace, ref.name), None
    if ref.group in ("", "core") and ref.kind == "Service":
        if ref.port is None:
            return invalid("UnsupportedValue", f"Service backend {label} needs a port")
        service = world.services.get((namespace, ref.name))
        lookups.append(("service", (namespace, ref.name), service))
        if service is None:
            return invalid("BackendNotFound", f"Service {label} not found")
        if service.spec.clusterIP is None:
            return invalid("BackendNotFound", f"Service {label} has no clusterIP")
        if service.spec.ports and ref.port not in {p.port for p in service.spec.ports}:
            return invalid("BackendNotFound", f"Service {label} has no port {ref.port}")
        return ir.Backend("service", ref.weight, namespace, ref.name, service.spec.clusterIP, ref.port), None
    group_kind = f"{ref.group}/{ref.kind}" if ref.group else ref.kind
    return invalid("InvalidKind", f"backendRef kind {group_kind} is not supported (use Service or EgressNetwork)")


def _rules(route: Route) -> Sequence[Any]:
    return route.spec.rules


def _replaces_prefix(rule: Any) -> bool:
    for f in rule.filters:
        modifier = f.urlRewrite or f.requestRedirect
        if modifier is not None and modifier.path is not None and modifier.path.type == "ReplacePrefixMatch":
            return True
    return False


def _route_problem(route: Route, port: int, en: EgressNetwork, world: World) -> str | None:
    """Why the route cannot be programmed on this parent (Accepted=False UnsupportedValue)."""
    if isinstance(route, TLSRoute | TCPRoute) and len(route.spec.rules) != 1:
        return f"{route.kind} must have exactly one rule, found {len(route.spec.rules)}"
    if port == world.options.outbound_port:
        return f"port {port} is the sidecar's outbound listener port; connections to it are always closed"
    if isinstance(route, HTTPRoute | GRPCRoute):
        allowed = SUPPORTED_HTTP_FILTERS if isinstance(route, HTTPRoute) else SUPPORTED_GRPC_FILTERS
        for i, rule in enumerate(_rules(route)):
            for f in rule.filters:
                if f.type not in allowed:
                    return f"spec.rules[{i}].filters: filter type {f.type} is not supported (supported: {', '.join(allowed)})"
            if isinstance(route, HTTPRoute) and _replaces_prefix(rule) and any(
                    m.path.type != "PathPrefix" for m in rule.matches):
                return (f"spec.rules[{i}].filters: ReplacePrefixMatch needs every match of the rule to be a "
                        "PathPrefix match")
    for i, rule in enumerate(_rules(route)):
        for j, ref in enumerate(rule.backendRefs):
            if ref.filters:
                return f"spec.rules[{i}].backendRefs[{j}].filters: backend filters are not supported"
    if not isinstance(route, TCPRoute) and port in world.opaque_ports(en):
        return f"port {port} is opaque on EgressNetwork {en.metadata.namespace}/{en.metadata.name}; only a TCPRoute applies there"
    return None


def _conflict_slot(route: Route, key: ENKey, port: int) -> tuple[str, str, int, str]:
    """(EgressNetwork, port, audience): the audience of a producer route is the
    EgressNetwork's namespace itself; a consumer route's is its own namespace."""
    return (key[0], key[1], port, route.metadata.namespace)


def attach_routes(world: World, previous: Attachments | None = None,
                  touched: set[ENKey] | None = None) -> Attachments:
    """Attach every route of ``world``; keys whose inputs are the same objects as in
    ``previous`` keep their ``ParentAttachment`` from it. ``touched``: the caller knows that
    only these keys can differ from ``previous`` (a change made of routes only: no
    EgressNetwork or Service, which other keys' backends may name, changed), so the other
    keys are not even looked at."""
    reusable = previous.parents if previous is not None and previous.options is world.options else {}
    if touched is not None and previous is not None and reusable:
        parents = dict(reusable)
        for key in touched:
            if key in world.egress_networks or key in world.routes_by_parent:
                found = reusable.get(key)
                parents[key] = found if found is not None and found.still_valid(world) else attach_parent(world, key)
            else:
                parents.pop(key, None)
        return Attachments(options=world.options, routes=world.routes, parents=parents,
                           egress_status=previous.egress_status)
    parents = {}
    for key in world.egress_networks.keys() | world.routes_by_parent.keys():
        found = reusable.get(key)
        if found is None or not found.still_valid(world):
            found = attach_parent(world, key)
        parents[key] = found
    egress_status = {key: cond for key in world.egress_networks
                     if (cond := parents[key].condition) is not None}
    return Attachments(options=world.options, routes=world.routes, parents=parents, egress_status=egress_status)


def attach_parent(world: World, key: ENKey) -> ParentAttachment:
    """The attachment of every route naming EgressNetwork ``key`` as a parent."""
    en = world.egress_networks.get(key)
    condition = egress_condition(en, world) if en is not None else None
    accepted = condition is not None and condition.status == "True"
    routes = world.routes_by_parent.get(key, ())
    lookups: list[Lookup] = []

    # First pass: per-parent checks that do not depend on other routes.
    pending: list[tuple[Route, ParentRef, Condition | None]] = []
    for route in routes:
        seen: set[int | None] = set()
        for ref in route.spec.parentRefs:
            if not ref.is_egress_network or (ref.namespace or route.metadata.namespace, ref.name) != key:
                continue  # another controller's parent, or another EgressNetwork
            if ref.port in seen:
                continue  # the same parent twice: one status entry, programmed once
            seen.add(ref.port)
            cond: Condition | None = None
            if en is None:
                cond = Condition("Accepted", "False", "NoMatchingParent", f"EgressNetwork {key[0]}/{key[1]} not found")
            elif not accepted:
                cond = Condition("Accepted", "False", "NoMatchingParent", "EgressNetwork parent has not been accepted")
            elif ref.port is None:
                cond = Condition("Accepted", "False", "UnsupportedValue",
                                 "a parentRef to an EgressNetwork must set port")
            else:
                unsupported = _route_problem(route, ref.port, en, world)
                if unsupported:
                    cond = Condition("Accepted", "False", "UnsupportedValue", unsupported)
            pending.append((route, ref, cond))

    # Second pass: kinds do not mix on one (EgressNetwork, port); the highest kind wins.
    # A producer route (in the EgressNetwork's namespace) is seen by every client, so it
    # is conflicted only by other producer routes. A consumer route is seen only by its own
    # namespace, so it is conflicted by producer routes and by consumer routes of that
    # namespace, and never changes what another namespace receives (spec §3, §4).
    best_rank: dict[tuple[str, str, int, str], int] = {}
    for route, ref, cond in pending:
        if cond is None and ref.port is not None:
            slot = _conflict_slot(route, key, ref.port)
            best_rank[slot] = min(best_rank.get(slot, 99), ROUTE_KIND_RANK[route.kind])

    statuses: dict[tuple[int, int | None], ParentStatus] = {}
    by_port: dict[int, list[tuple[Route, ParentStatus]]] = {}
    for route, ref, cond in pending:
        if cond is None and ref.port is not None:
            slot = _conflict_slot(route, key, ref.port)
            producers = best_rank.get((key[0], key[1], ref.port, key[0]), 99)
            best = min(best_rank[slot], producers)
            if ROUTE_KIND_RANK[route.kind] > best:
                winner = next(k for k, r in ROUTE_KIND_RANK.items() if r == best)
                cond = Condition("Accepted", "False", "RouteReasonConflicted",
                                 f"a {winner} on EgressNetwork {key[0]}/{key[1]} port {ref.port} takes precedence")
        backends: list[tuple[ir.Backend, ...]] = []
        problems: list[Condition] = []
        for rule in _rules(route):
            rule_backends: list[ir.Backend] = []
            for backend_ref in rule.backendRefs:
                backend, problem = resolve_backend(route, backend_ref, key, world, lookups)
                rule_backends.append(backend)
                if problem is not None:
                    problems.append(problem)
            backends.append(tuple(rule_backends))
        resolved: Condition | None = None
        if problems:  # the first problem's reason, every problem's message
            resolved = Condition("ResolvedRefs", "False", problems[0].reason,
                                 "; ".join(dict.fromkeys(p.message for p in problems)))
        status = ParentStatus(ref, key, cond or _true("Accepted"), resolved or _true("ResolvedRefs"), tuple(backends))
        statuses[(id(route), ref.port)] = status
        if status.programmed and ref.port is not None:
            by_port.setdefault(ref.port, []).append((route, status))
    return ParentAttachment(key, en, routes, condition, statuses, by_port, tuple(lookups))
