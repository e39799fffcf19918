"""The translation pipeline as one object: objects -> World -> IR per namespace -> Envoy.

In: validated objects (``load``), then questions: ``resources(ns)``, ``explain(...)``,
``status_report(errors)``. Out: Envoy resources, verdicts, statuses.
Incremental: after ``load``, a namespace's IR is rebuilt on demand and its Envoy resources
are rebuilt only when the IR differs from the previous world's, so a change confined to one
namespace re-serializes only that namespace. Pure apart from memoization: no I/O, no clock.
Called by the CLI commands and by ``serve`` wiring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from egress_xds import ir
from egress_xds.envoy import build_resources
from egress_xds.model.load import LoadError
from egress_xds.model.objects import TopLevel
from egress_xds.resolve import (
    Attachments,
    TranslatorOptions,
    World,
    attach_routes,
    explain,
    status_report,
    translate_namespace,
)

__all__ = ["Translator", "TranslatorOptions"]


Resources = dict[str, dict[str, Message]]


class Translator:
    def __init__(self, options: TranslatorOptions | None = None) -> None:
        self.options = options or TranslatorOptions()
        self._world = World.build((), self.options)
        self._attachments: Attachments = attach_routes(self._world)
        # Per namespace, for the current world: its inputs and IR (filled lazily).
        self._inputs: dict[str, tuple[object, ...]] = {}
        self._egress: dict[str, ir.NamespaceEgress] = {}
        # namespace -> (inputs, IR, resources) of the last build, kept across loads
        self._built: dict[str, tuple[tuple[object, ...], ir.NamespaceEgress, Resources]] = {}

    def load(self, objects: Iterable[TopLevel]) -> None:
        """Replace the world. Cheap: namespaces are translated lazily, and only when their
        inputs (``namespace_inputs``) differ from those of their last build."""
        self._world = World.build(objects, self.options)
        self._attachments = attach_routes(self._world)
        self._inputs = {}
        self._egress = {}

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

    def changed(self, namespaces: Iterable[str]) -> list[str]:
        """The namespaces among ``namespaces`` whose resources differ from their last build
        (or that were never built)."""
        out = []
        for namespace in namespaces:
            built = self._built.get(namespace)
            if built is None or built[0] != self.namespace_inputs(namespace):
                out.append(namespace)
        return out

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
            if built is not None and built[0] == self.namespace_inputs(namespace):
                found = built[1]
            else:
                found = translate_namespace(self._world, self._attachments, namespace)
            self._egress[namespace] = found
        return found

    def resources(self, namespace: str) -> Resources:
        """The namespace's Envoy resources; the very same object as last time when its
        inputs did not change (callers may rely on identity to skip re-serializing)."""
        inputs = self.namespace_inputs(namespace)
        previous = self._built.get(namespace)
        if previous is not None and previous[0] == inputs:
            return previous[2]
        egress = self.egress(namespace)
        if previous is not None and previous[1] == egress:
            built = previous[2]  # other inputs, same IR (e.g. a route edit that changed nothing)
        else:
            built = build_resources(egress)
        self._built[namespace] = (inputs, egress, built)
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
        return status_report(self._attachments, errors, self.options.controller_name)
