"""The HTTP debug endpoint (aiohttp, JSON), on the same asyncio loop as the ADS server.

In: the ``SnapshotCache``, the ``AdsServer`` (connected streams), ``Metrics``, and two
callables from ``serve``: the status report (object conditions, load errors) and readiness.
Out: ``/debug/snapshots``, ``/debug/snapshots/{ns}`` (``resources.dump``, the same form as
``egress-xds translate``), ``/debug/proxies``, ``/debug/status``, ``/metrics``, ``/healthz``,
``/readyz``. Read by operators and by ``egress-xds status``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from egress_xds.cache import SnapshotCache, describe
from egress_xds.resources import dump
from egress_xds.server.ads import AdsServer
from egress_xds.server.metrics import Metrics

StatusProvider = Callable[[], dict[str, Any]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def build_app(cache: SnapshotCache, ads: AdsServer, metrics: Metrics,
              status: StatusProvider | None = None,
              ready: Callable[[], bool] | None = None) -> web.Application:
    async def snapshots(_: web.Request) -> web.Response:
        return _json({"snapshots": {ns: describe(s) for ns, s in sorted(cache.snapshots().items())}})

    async def snapshot(request: web.Request) -> web.Response:
        namespace = request.match_info["ns"]
        snap = cache.get_snapshot(namespace)
        if snap is None:
            return _json({"error": f"no snapshot for namespace {namespace!r}",
                          "namespaces": cache.namespaces()}, status=404)
        return _json(dump(snap.resources))

    async def proxies(_: web.Request) -> web.Response:
        return _json({"proxies": ads.describe()})

    async def status_view(_: web.Request) -> web.Response:
        return _json(status() if status else {"objects": [], "errors": []})

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready is None or ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready: initial snapshots not computed yet\n", status=503)

    app = web.Application()
    app.router.add_get("/debug/snapshots", snapshots)
    app.router.add_get("/debug/snapshots/{ns}", snapshot)
    app.router.add_get("/debug/proxies", proxies)
    app.router.add_get("/debug/status", status_view)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
