"""Part 1, translation scaling, in-process, plus the push of a one-namespace change by serve.

Worlds of 10, 100 and 1,000 namespaces (``bench.world``: 2 EgressNetworks and 10 routes
each, 20 global EgressNetworks and 100 global routes, and one consumer namespace per 10 that
uses the global view). Measured the way ``serve`` uses the translator, with serve's collector
policy for reloads (``serve.long_lived_allocations``): the full build is ``Translator.load``
then ``resources(ns)`` for every namespace, on a fresh translator with the builders' memos
dropped (median of 3); a rebuild, after a one-route change in one namespace and after a
global EgressNetwork change, hands the translator the change as the file source does
(unchanged objects of the edited file keep their identity; ``load(objects, changes)``), asks
``changed()`` which namespaces to rebuild and builds only those. Encoding into
snapshots (``cache.Snapshot``) and YAML parsing are reported beside it. The big world kept
in a single file: how long the file source takes to rescan it after a one-route edit. Then
``serve`` on the
big world: one route edited in ``ns-0007`` (file write) until all 10 streams of that
namespace ACKed the new listener/routes.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import world
from bench.bigworld import big_world
from bench.clients import ClientPool, specs, updated_times
from bench.common import PartResult, atomic_write, fitted_exponent, ms, percentile, speed_reference
from egress_xds.cache import Snapshot
from egress_xds.envoy import forget_memoized
from egress_xds.model.load import LoadResult, parse_text
from egress_xds.model.objects import TopLevel
from egress_xds.serve import long_lived_allocations
from egress_xds.sources.files import FileSource, reuse_unchanged
from egress_xds.translate import Translator

EDITED = 7  # the namespace whose route changes


def _parse(files: dict[str, str]) -> dict[str, list[TopLevel]]:
    out = {}
    for name, text in files.items():
        result = parse_text(text, name)
        if result.errors:
            raise ValueError(f"bench world {name}: {result.errors[0]}")
        out[name] = result.objects
    return out


def _flat(per_file: dict[str, list[TopLevel]]) -> list[TopLevel]:
    return [o for name in sorted(per_file) for o in per_file[name]]


class _GcClock:
    """Total time spent in garbage-collection passes while installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


_gc_clock = _GcClock()


def _build_all(tr: Translator, objects: list[TopLevel]) -> tuple[float, dict[str, Any], float]:
    """(seconds, resources by namespace, seconds of it spent in GC), under ``serve``'s
    collector policy for reloads (``long_lived_allocations``)."""
    gc_before = _gc_clock.total
    started = time.perf_counter()
    with long_lived_allocations():
        tr.load(objects)
        built = {ns: tr.resources(ns) for ns in tr.namespaces()}
    return time.perf_counter() - started, built, _gc_clock.total - gc_before


def _edited(per_file: dict[str, list[TopLevel]], name: str, text: str
            ) -> tuple[dict[str, list[TopLevel]], tuple[list[TopLevel], list[TopLevel]]]:
    """The world with file ``name`` rewritten to ``text``, as serve's file source hands it
    over: objects equal to the file's previous ones keep their identity
    (``files.reuse_unchanged``), and the change is (added, removed) by identity
    (``FileSource.last_changes``)."""
    before = per_file.get(name, [])
    parsed = parse_text(text, name)
    objects = reuse_unchanged(parsed, LoadResult(objects=before)).objects
    kept = {id(o) for o in before} & {id(o) for o in objects}
    edited = dict(per_file)
    edited[name] = objects
    return edited, ([o for o in objects if id(o) not in kept], [o for o in before if id(o) not in kept])


def _rebuild(tr: Translator, objects: list[TopLevel], changes: tuple[list[TopLevel], list[TopLevel]]
             ) -> tuple[float, list[str], float]:
    """(seconds, namespaces rebuilt, seconds of it in GC) for a reload the way serve does
    it: the translator gets the change, ``changed()`` names the namespaces to rebuild, and
    only those are built."""
    gc_before = _gc_clock.total
    started = time.perf_counter()
    with long_lived_allocations():
        tr.load(objects, changes)
        rebuilt = tr.changed(tr.namespaces())
        for namespace in rebuilt:
            tr.resources(namespace)
    return time.perf_counter() - started, rebuilt, _gc_clock.total - gc_before


def scale(n: int, reps: int) -> dict[str, float]:
    gc.callbacks.append(_gc_clock)
    try:
        return _scale(n, reps)
    finally:
        gc.callbacks.remove(_gc_clock)


def _scale(n: int, reps: int) -> dict[str, float]:
    files = world.files(n, n // 10)
    t = time.perf_counter()
    per_file = _parse(files)
    parse_s = time.perf_counter() - t
    objects = _flat(per_file)
    # Full build: cold (a fresh translator, the builders' memos dropped, as at start-up),
    # median of 3 (this machine's run-to-run noise is +-30 %).
    fulls: list[tuple[float, float]] = []
    for _ in range(3):
        forget_memoized()
        tr = Translator()
        seconds, built, in_gc = _build_all(tr, objects)
        fulls.append((seconds, in_gc))
    full_s, full_gc = sorted(fulls)[1]
    t = time.perf_counter()
    for resources in built.values():
        Snapshot(resources)  # type: ignore[arg-type]
    encode_s = time.perf_counter() - t
    ns_times: list[float] = []
    glob_times: list[float] = []
    ns_gc: list[float] = []
    glob_gc: list[float] = []
    ns_changed = glob_changed = 0
    for rep in range(reps):
        for edit, times, in_gcs in ((world.namespace_edit(EDITED % n, rep + 1), ns_times, ns_gc),
                                    (world.global_edit(rep + 1), glob_times, glob_gc)):
            name, text = edit
            per_file, changes = _edited(per_file, name, text)
            elapsed, rebuilt, in_gc = _rebuild(tr, _flat(per_file), changes)
            times.append(elapsed)
            in_gcs.append(in_gc)
            if times is ns_times:
                ns_changed = len(rebuilt)
            else:
                glob_changed = len(rebuilt)
    return {"namespaces": len(built), "objects": len(objects), "parse": parse_s, "full": full_s,
            "full_min": min(f[0] for f in fulls), "full_max": max(f[0] for f in fulls),
            "encode": encode_s, "ns_rebuild": statistics.median(ns_times),
            "global_rebuild": statistics.median(glob_times), "ns_changed": ns_changed,
            "global_changed": glob_changed, "full_gc": full_gc,
            "ns_gc": statistics.median(ns_gc), "global_gc": statistics.median(glob_gc)}


def push_latency(part: PartResult, n: int, trials: int) -> None:
    bw = big_world(n)
    serve = bw.serve
    namespace = world.namespace_name(EDITED)
    part.add(f"serve on the {n}-namespace world: start to serving", f"{bw.serve.ready_seconds:.1f} s",
             note="parse + translate + encode every namespace before the ADS port opens")
    pool = ClientPool(serve.ads, specs([namespace], 10, False, prefix="edit"), workers=1)
    latencies: list[float] = []
    reloads: list[float] = []
    gc_window = time.time()
    try:
        ready, errors, _ = pool.connect(timeout=120)
        if ready < 10:
            part.skip("one-namespace change pushed", f"only {ready}/10 streams: {errors[:2]}")
            return
        first_edit = None
        for i in range(-1, trials):  # edit -1: the first after start, reported apart
            pool.mark()
            offset = serve.log_offset()
            name, text = world.namespace_edit(EDITED, 100 + i)
            t_write = atomic_write(bw.manifests / name, text)
            pool.wait_quiet(quiet=0.3, timeout=60)
            times, missing = updated_times(pool.collect())
            if missing or not times:
                part.skip("one-namespace change pushed", f"trial {i}: {missing} streams got nothing")
                return
            if i < 0:
                first_edit = max(times) - t_write
            else:
                latencies.append(max(times) - t_write)
            # wait for the reload to finish before the next edit
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = [e for e in serve.events(offset) if e.get("event") == "config reloaded"]
                if done:
                    if i >= 0:
                        reloads.append(float(done[-1].get("seconds", 0)))
                    break
                time.sleep(0.05)
    finally:
        pool.close()
    pauses = serve.gc_pauses(gc_window, time.time())
    if pauses:
        part.add(f"serve's GC passes > 5 ms during the {trials} edits / the longest",
                 f"{len(pauses)} / {ms(max(p[2] for p in pauses))}",
                 note="a GC pass holds the GIL: reloads and every stream wait (bench/gctrace)")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    part.add(f"one-route change in {namespace} -> its 10 streams ACKed, p50/p99 ({trials} trials)",
             f"{ms(p50)} / {ms(p99)}", "p99 < 50 ms", p99 < 0.050,
             note=(f"file write -> last stream's ACK; serve's whole reload took median "
                   f"{statistics.median(reloads) * 1e3:.0f} ms" if reloads else "")
             + (f"; the first edit after start (not in the figures): {ms(first_edit)}" if first_edit else ""))


def one_file_edit(part: PartResult, n: int, trials: int) -> None:
    """The world of ``n`` namespaces kept in one manifest file: ``FileSource`` (what serve
    reads with) rescans it after a one-route edit in one namespace. The load pairs each
    document's text with its objects, and a changed file is parsed document by document:
    only the edited document is parsed (``model.load.parse_split``), the rest of the time is
    reading, hashing and merging 12,000 objects."""
    files = world.files(n, consumers=n // 10)
    whole = "".join(text if text.startswith("---") else "---\n" + text for _, text in sorted(files.items()))
    name, _ = world.namespace_edit(EDITED, 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "world.yaml"
        path.write_text(whole)
        source = FileSource([tmp])
        with long_lived_allocations():
            started = time.perf_counter()
            source.scan()
            objects = len(source.result().objects)
            load = time.perf_counter() - started
        times = []
        for i in range(-1, trials):  # edit -1: the first after the load, reported apart
            _, text = world.namespace_edit(EDITED, 200 + i)
            edited = whole.replace(files[name], text)
            assert edited != whole
            path.write_text(edited)
            with long_lived_allocations():
                started = time.perf_counter()
                source.scan()
                source.result()
                times.append(time.perf_counter() - started)
        first, rest = times[0], times[1:]
    part.add(f"{n} ns kept in one file ({objects} objects): rescan after a one-route edit, median "
             f"of {trials}", f"{ms(statistics.median(rest))}",
             note=f"read + parse + merge, the translation not included; the first edit after the load: "
                  f"{ms(first)}; the load: {load:.2f} s")


def run(part: PartResult, quick: bool) -> None:
    sizes = [10, 100] if quick else [10, 100, 1000]
    results = []
    reference = (0.0, 0.0)  # the speed reference around the largest world's builds
    for n in sizes:
        largest = n == sizes[-1]
        before = speed_reference() if largest else 0.0
        r = scale(n, reps=2 if n >= 1000 else 3)
        if largest:
            reference = (before, speed_reference())
        results.append(r)
        desc = f"{n} ns ({int(r['namespaces'])} snapshots, {int(r['objects'])} objects)"
        big = n == 1000
        part.add(f"{desc}: full translation (cold, median of 3)", f"{r['full']:.3f} s", "< 2 s" if big else "",
                 (r["full"] < 2.0) if big else None,
                 note=f"runs {r['full_min']:.2f}-{r['full_max']:.2f} s; of which GC {r['full_gc']:.3f} s; "
                      f"+ encode {r['encode']:.3f} s, YAML parse {r['parse']:.3f} s (not in the figure)")
        part.add(f"{desc}: rebuild after a one-route change in one namespace",
                 f"{r['ns_rebuild']:.3f} s", note=f"{int(r['ns_changed'])} namespace(s) re-emitted; "
                                                 f"of which GC {r['ns_gc']:.3f} s")
        part.add(f"{desc}: rebuild after a global EgressNetwork change",
                 f"{r['global_rebuild']:.3f} s", note=f"{int(r['global_changed'])} namespace(s) re-emitted; "
                                                     f"of which GC {r['global_gc']:.3f} s")
    multiple = results[-1]["full"] / statistics.mean(reference)
    part.add(f"machine speed reference (bench.common.speed_reference) before / after the {sizes[-1]} ns builds",
             f"{ms(reference[0])} / {ms(reference[1])}",
             note=f"a fixed pure-Python workload; the full translation of {sizes[-1]} ns took {multiple:.0f}x "
                  f"it, so it is under 2 s on a machine (or at a moment) where the reference takes under "
                  f"{ms(2.0 / multiple)}")
    if len(results) >= 2:
        ns = [r["namespaces"] for r in results]
        part.add("growth exponent k (time ~ namespaces^k): full / one-ns rebuild / global rebuild",
                 " / ".join(f"{fitted_exponent(ns, [r[k] for r in results]):.2f}"
                            for k in ("full", "ns_rebuild", "global_rebuild")),
                 note="1.0 = linear; a one-namespace rebuild should ideally not grow with the world (k ~ 0)")
    one_file_edit(part, sizes[-1], trials=3 if quick else 5)
    push_latency(part, sizes[-1], trials=5 if quick else 20)
