"""The translation pipeline as one object: objects -> World -> IR per namespace -> Envoy.

In: validated objects (``load``), then questions: ``resources(ns)``, ``explain(...)``,
``status_report(errors)``. Out: Envoy resources, verdicts, statuses.
Incremental: ``load`` diffs the objects against the previous load by identity and patches
the world (``World.updated``); route attachment is redone only for the EgressNetworks the
change touches; ``changed`` finds, among the namespaces the change can reach, those whose
inputs are not the same objects as at their last build; only those get a new IR, and new
Envoy resources only when the IR differs.
So a change confined to one namespace costs about the same in a world of 10 or of 1,000
namespaces. Pure apart from memoization: no I/O, no clock.
Called by the CLI commands and by ``serve`` wiring.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from egress_xds import ir
from egress_xds.envoy import SharedBuilds, build_resources
from egress_xds.model.load import LoadError
from egress_xds.model.objects import EgressNetwork, TopLevel
from egress_xds.resolve import (
    Attachments,
    TranslatorOptions,
    World,
    attach_routes,
    explain,
    translate_namespace,
)
from egress_xds.resolve.namespace import SharedWork
from egress_xds.resolve.status import StatusReporter
from egress_xds.resolve.world import IncrementalUpdateUnsupported, egress_parents, is_route

__all__ = ["Translator", "TranslatorOptions"]


Resources = dict[str, dict[str, Message]]


@dataclass
class _Built:
    """A namespace's last build: what it was computed from, and the results."""

    sources: tuple[object, ...]  # ``Translator._sources``: compared by identity
    inputs: tuple[object, ...]  # ``Translator.namespace_inputs``: compared by value
    egress: ir.NamespaceEgress
    resources: Resources


def _identical(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class Translator:
    def __init__(self, options: TranslatorOptions | None = None) -> None:
        self.options = options or TranslatorOptions()
        self._world = World.build((), self.options)
        self._attachments: Attachments = attach_routes(self._world)
        # The objects of the current world by identity: the next load diffs against them.
        self._objects: dict[int, TopLevel] = {}
        self._reporter = StatusReporter(self.options.controller_name)
        # Per namespace, for the current world: its inputs and IR (filled lazily).
        self._inputs: dict[str, tuple[object, ...]] = {}
        self._egress: dict[str, ir.NamespaceEgress] = {}
        self._shared = SharedWork()  # for the current world
        self._shared_builds = SharedBuilds()  # for the current world
        # memos of replaced worlds, until ``release_retired``
        self._retired: list[tuple[object, ...]] = []
        # namespace -> its last build, kept across loads
        self._built: dict[str, _Built] = {}
        # Built namespaces whose build may not match the current world (None: any may not).
        # Loads add the namespaces their change can reach; a build takes its namespace out.
        self._dirty: set[str] | None = set()

    def load(self, objects: Iterable[TopLevel],
             changes: tuple[Sequence[TopLevel], Sequence[TopLevel]] | None = None) -> None:
        """Replace the world. Cheap: namespaces are translated lazily, and only when their
        inputs (``namespace_inputs``) differ from those of their last build.

        Sources keep unchanged objects (the same Python objects) across reloads, so the new
        world is the previous one patched with the objects added and removed, and route
        attachment is redone only for the EgressNetworks those touch. ``changes``: (added,
        removed) relative to the previous ``objects``, when the caller knows them (a source's
        ``last_changes``); otherwise every object is diffed by identity. Claimed changes
        that do not fit the previous objects are ignored and the objects diffed."""
        listed = list(objects)
        delta = self._claimed(changes, len(listed)) if changes is not None else None
        if delta is not None:
            added, removed = delta
            current = dict(self._objects)
            for obj in removed:
                del current[id(obj)]
            current.update((id(obj), obj) for obj in added)
        else:
            current = {id(obj): obj for obj in listed}
            added = [obj for i, obj in current.items() if i not in self._objects]
            removed = [obj for i, obj in self._objects.items() if i not in current]
        if not added and not removed:
            return
        world = None
        if len(added) + len(removed) < len(current) // 2:
            try:
                world = self._world.updated(added, removed)
            except IncrementalUpdateUnsupported:
                world = None
        self._world = world if world is not None else World.build(listed, self.options)
        reach = self._reach([*added, *removed]) if world is not None else None
        self._dirty = None if reach is None or self._dirty is None else self._dirty | reach
        touched = None
        routes = [o for o in (*added, *removed) if is_route(o)]
        if world is not None and len(routes) == len(added) + len(removed):
            # routes only: just the EgressNetworks they name can attach differently
            touched = {key for route in routes for key in egress_parents(route)}
        self._attachments = attach_routes(self._world, self._attachments, touched)
        self._objects = current
        # The previous world's memos are retired, not dropped here: after a full build they
        # hold every namespace's work, and freeing them took ~30 ms of the first change's
        # critical path. ``release_retired`` frees them (serve calls it after the push).
        self._retired.append((self._inputs, self._egress, self._shared, self._shared_builds))
        self._inputs = {}
        self._egress = {}
        self._shared = SharedWork()
        self._shared_builds = SharedBuilds()

    def release_retired(self) -> None:
        """Free the memos of the worlds replaced since the last call, one entry at a time.
        Dropped at once, a full build's memos are one deallocation of 30-40 ms that holds the
        interpreter: every stream waits (bench part 5). Entry by entry, the thread freeing
        them yields the interpreter between entries like any Python code."""
        while self._retired:
            for memo in self._retired.pop():
                tables = [memo] if isinstance(memo, dict) else list(vars(memo).values())
                for table in tables:
                    while isinstance(table, dict) and table:
                        table.popitem()

    def _claimed(self, changes: tuple[Sequence[TopLevel], Sequence[TopLevel]], count: int
                 ) -> tuple[list[TopLevel], list[TopLevel]] | None:
        """``changes`` when they fit the previous objects: every removed object is one of
        them, no added one is, and the counts add up to ``count``."""
        added, removed = list(changes[0]), list(changes[1])
        previous = self._objects
        if len(previous) - len(removed) + len(added) != count:
            return None
        if any(id(obj) not in previous for obj in removed) or any(id(obj) in previous for obj in added):
            return None
        if len({id(obj) for obj in added}) != len(added) or len({id(obj) for obj in removed}) != len(removed):
            return None
        return added, removed

    def _reach(self, changed: Iterable[TopLevel]) -> set[str] | None:
        """The namespaces whose inputs a change to ``changed`` (objects added and removed)
        can reach, or None when it may reach any. An EgressNetwork outside the global
        namespace governs clients of its own namespace only (``World.candidates``). A route
        on parent P is seen by namespace N only when P is one of N's candidates (N's own or
        a global one) and the route lives in P's namespace or in N (``translate_namespace``),
        so a route outside the global namespace is seen by its own namespace only; it
        competes only with routes of that namespace (``routes._conflict_slot``).
        EgressNetworks and routes of the global namespace, and Services (any route may name
        them), reach any namespace. ``tests/property/test_incremental_matches_fresh.py``
        changes one object of each kind at a time and checks every namespace."""
        global_namespace = self.options.global_namespace
        reach: set[str] = set()
        for obj in changed:
            namespace = obj.metadata.namespace
            if isinstance(obj, EgressNetwork) and namespace != global_namespace:
                reach.add(namespace)
            elif is_route(obj) and namespace != global_namespace:
                reach.add(namespace)
            else:
                return None
        return reach

    def namespace_inputs(self, namespace: str) -> tuple[object, ...]:
        """Everything a namespace's IR depends on: its candidate EgressNetworks and, per
        candidate and port, the programmed routes it sees with their resolved backends
        (which carry the Services' addresses). Equal inputs give an equal IR, so a change
        confined to other namespaces leaves this one untouched. Unchanged objects keep their
        identity across loads, so comparing inputs is mostly identity checks."""
        found = self._inputs.get(namespace)
        if found is not None:
            return found
        candidates = self._world.candidates(namespace)
        parts: list[object] = [candidates]
        for en in candidates:
            key = (en.metadata.namespace, en.metadata.name)
            for port, items in sorted(self._attachments.programmed_on(key).items()):
                seen = tuple((route, status.backends) for route, status in items
                             if route.metadata.namespace in (key[0], namespace))
                if seen:
                    parts.append((key, port, seen))
        found = tuple(parts)
        self._inputs[namespace] = found
        return found

    def _sources(self, namespace: str) -> tuple[object, ...]:
        """What ``namespace_inputs`` is computed from: the candidate EgressNetworks and their
        attachments. When these are the same objects as at the last build, so are the inputs."""
        candidates = self._world.candidates(namespace)
        parents = self._attachments.parents
        return (candidates, *(parents.get((en.metadata.namespace, en.metadata.name)) for en in candidates))

    def _unchanged(self, namespace: str, built: _Built | None) -> bool:
        """Whether ``namespace`` has the same inputs as at its last build: by identity of
        their sources (cheap, the common case), else by comparing the inputs themselves."""
        if built is None:
            return False
        sources = self._sources(namespace)
        if _identical(sources, built.sources):
            return True
        if built.inputs == self.namespace_inputs(namespace):
            built.sources = sources  # same inputs from new sources (e.g. another namespace's route)
            return True
        return False

    def changed(self, namespaces: Iterable[str]) -> list[str]:
        """The namespaces among ``namespaces`` whose resources differ from their last build
        (or that were never built). Only namespaces the loads since their build could reach
        are looked at (``_reach``): a one-namespace change costs the same in any world."""
        listed = list(namespaces)
        dirty = self._dirty
        if dirty is None:
            found = [ns for ns in listed if not self._unchanged(ns, self._built.get(ns))]
            looked = set(listed)
            self._dirty = {ns for ns in self._built if ns not in looked} | set(found)
            return found
        return [ns for ns in listed
                if (ns in dirty or ns not in self._built) and not self._unchanged(ns, self._built.get(ns))]

    @property
    def world(self) -> World:
        return self._world

    def namespaces(self) -> list[str]:
        """Namespaces that hold objects, plus the global egress namespace."""
        return self._world.namespaces()

    def egress(self, namespace: str) -> ir.NamespaceEgress:
        found = self._egress.get(namespace)
        if found is None:
            built = self._built.get(namespace)
            if built is not None and self._unchanged(namespace, built):
                found = built.egress
            else:
                found = translate_namespace(self._world, self._attachments, namespace, self._shared)
            self._egress[namespace] = found
        return found

    def resources(self, namespace: str) -> Resources:
        """The namespace's Envoy resources; the very same object as last time when its
        inputs did not change (callers may rely on identity to skip re-serializing)."""
        previous = self._built.get(namespace)
        if previous is not None and self._unchanged(namespace, previous):
            if self._dirty is not None:
                self._dirty.discard(namespace)
            return previous.resources
        egress = self.egress(namespace)
        if previous is not None and previous.egress == egress:
            built = previous.resources  # other inputs, same IR (e.g. a route edit that changed nothing)
        else:
            built = build_resources(egress, self._shared_builds)
        self._built[namespace] = _Built(self._sources(namespace), self.namespace_inputs(namespace), egress, built)
        if self._dirty is not None:
            self._dirty.discard(namespace)
        return built

    def forget(self, namespace: str) -> None:
        """Drop memoized state of a namespace no sidecar uses any more."""
        self._built.pop(namespace, None)
        self._egress.pop(namespace, None)
        self._inputs.pop(namespace, None)

    def explain(
        self,
        namespace: str,
        ip: str,
        port: int,
        sni: str | None = None,
        host: str | None = None,
        path: str | None = None,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        verdict = explain(self.egress(namespace), ip, port, sni=sni, host=host, path=path, method=method,
                          headers=headers)
        return verdict.as_dict()

    def status_report(self, errors: Iterable[LoadError] = ()) -> dict[str, Any]:
        return self._reporter.report(self._attachments, errors)
