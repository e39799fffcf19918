"""Typed, validated input objects and the loader that produces them from YAML/JSON.

In: manifest text (multi-document YAML or JSON, ``List`` kinds included).
Out: ``LoadResult`` = the valid objects plus one ``LoadError`` per rejected object, each naming
file, kind, namespace/name and the field path. Called by ``sources`` (files, Kubernetes) and
by the CLI; nothing here does I/O except ``load_paths`` reading the files it is given.
"""

from egress_xds.model.load import LoadError, LoadResult, load_paths, parse_text
from egress_xds.model.objects import (
    BackendRef,
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    ObjectKey,
    ParentRef,
    Route,
    Service,
    TCPRoute,
    TLSRoute,
    TopLevel,
)

__all__ = [
    "BackendRef",
    "EgressNetwork",
    "GRPCRoute",
    "HTTPRoute",
    "LoadError",
    "LoadResult",
    "ObjectKey",
    "ParentRef",
    "Route",
    "Service",
    "TCPRoute",
    "TLSRoute",
    "TopLevel",
    "load_paths",
    "parse_text",
]
