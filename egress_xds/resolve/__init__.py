"""Resolve validated objects into per-namespace egress decisions (the IR) and statuses.

In: ``World`` (objects + options). Out: ``ir.NamespaceEgress`` per client namespace
(``translate_namespace``), ``Attachments`` and a status report, and ``explain`` verdicts.
Pure functions: no I/O, no clock. Called by ``egress_xds.translate``.
"""

from egress_xds.resolve.explain import Verdict, explain
from egress_xds.resolve.namespace import translate_namespace
from egress_xds.resolve.routes import Attachments, attach_routes
from egress_xds.resolve.status import StatusReporter, invalid_objects
from egress_xds.resolve.world import TranslatorOptions, World

__all__ = [
    "Attachments",
    "StatusReporter",
    "TranslatorOptions",
    "Verdict",
    "World",
    "attach_routes",
    "explain",
    "invalid_objects",
    "translate_namespace",
]
