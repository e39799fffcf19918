"""One ``serve`` on the big bench world, shared by the parts that need it (translation push
latency, responsiveness) and stopped by the runner at the end.

In: the size (1,000 namespaces, or 100 with ``--quick``). Out: a ``BigWorld`` with the
manifest directory, the running ``ServeProcess`` and how long it took to become ready.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import world
from bench.common import ServeProcess, serve_supports, write_world


@dataclass
class BigWorld:
    namespaces: int
    consumers: int
    tmp: Path
    manifests: Path
    serve: ServeProcess


_current: list[BigWorld] = []


def big_world(namespaces: int) -> BigWorld:
    for bw in _current:
        if bw.namespaces == namespaces and bw.serve.proc.poll() is None:
            return bw
    stop()
    tmp = Path(tempfile.mkdtemp(prefix="bench-big-"))
    manifests = tmp / "manifests"
    consumers = namespaces // 10
    write_world(manifests, world.files(namespaces, consumers))
    # A namespace of its own for probes: one EgressNetwork, one route, never edited.
    (manifests / "probe.yaml").write_text(
        world._en("probe", "deny", "Deny", ["203.0.113.0/24"]) + "---\n"
        + world.http_route("probe", "r", "deny", 80, "probe.example.com", "/p"))
    # The responsiveness probe plays request/response ping-pong as fast as it can: lift the
    # per-stream request rate limit (a guard against misbehaving clients) where serve has one.
    extra = (["--max-requests-per-second", "0"]
             if serve_supports("--max-requests-per-second") else [])
    serve = ServeProcess(manifests, tmp / "serve.log", timeout=600, gc_log=tmp / "gc.log", extra=extra)
    bw = BigWorld(namespaces, consumers, tmp, manifests, serve)
    _current.append(bw)
    return bw


def stop() -> None:
    while _current:
        bw = _current.pop()
        bw.serve.stop()
        shutil.rmtree(bw.tmp, ignore_errors=True)
