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


class Translator:
    def __init__(self, options: TranslatorOptions | None = None) -> None:
        self.options = options or TranslatorOptions()
        self._world = World.build((), self.options)
        self._attachments: Attachments = attach_routes(self._world)
        self._egress: dict[str, ir.NamespaceEgress] = {}
        # namespace -> (IR, resources) of the last build, kept across loads
        self._built: dict[str, tuple[ir.NamespaceEgress, dict[str, dict[str, Message]]]] = {}

    def load(self, objects: Iterable[TopLevel]) -> None:
        """Replace the world. Cheap: namespaces are translated lazily."""
        self._world = World.build(objects, self.options)
        self._attachments = attach_routes(self._world)
        self._egress = {}

    @property
    def world(self) -> World:
        return self._world

    def namespaces(self) -> list[str]:
        """Namespaces that hold objects, plus the global egress namespace."""
        return self._world.namespaces()

    def egress(self, namespace: str) -> ir.NamespaceEgress:
        found = self._egress.get(namespace)
        if found is None:
            found = translate_namespace(self._world, self._attachments, namespace)
            self._egress[namespace] = found
        return found

    def resources(self, namespace: str) -> dict[str, dict[str, Message]]:
        egress = self.egress(namespace)
        previous = self._built.get(namespace)
        if previous is not None and previous[0] == egress:
            return previous[1]
        built = build_resources(egress)
        self._built[namespace] = (egress, built)
        return built

    def forget(self, namespace: str) -> None:
        """Drop memoized state of a namespace no sidecar uses any more."""
        self._built.pop(namespace, None)
        self._egress.pop(namespace, None)

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
