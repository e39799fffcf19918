"""Loaded by ``serve`` processes the benchmarks start with ``bench/gctrace`` on PYTHONPATH:
records every garbage-collection pass longer than 5 ms as a line in ``$BENCH_GC_LOG``
("time.time() generation milliseconds collected"), so a stall can be told apart from a GC pause.
Experiment knob: ``BENCH_SERVE_GC=freeze`` makes serve's automatic collection ignore long-lived
objects after startup (``gc.freeze()`` on every generation-2 pass), ``BENCH_SERVE_GC=off``
disables it (``gc.disable()``); both only to measure what GC costs the streams.
Not imported by anything else."""

import gc
import os
import time

_path = os.environ.get("BENCH_GC_LOG")
_started = [0.0]


def _trace(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    if took > 0.005 and _path:
        with open(_path, "a") as log:
            log.write(f"{time.time():.4f} {info['generation']} {took * 1000:.1f} {info['collected']}\n")


def _freeze(phase, info):
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


if _path:
    gc.callbacks.append(_trace)
    if os.environ.get("BENCH_SERVE_GC") == "off":
        gc.disable()
    elif os.environ.get("BENCH_SERVE_GC") == "freeze":
        gc.callbacks.append(_freeze)

# Experiment knob: BENCH_SERVE_PROFILE=FILE writes a cProfile of the whole serve process
# (main thread: the event loop and every stream) to FILE when it exits.
if _path and os.environ.get("BENCH_SERVE_PROFILE"):
    import atexit
    import cProfile

    _profile = cProfile.Profile()
    _profile.enable()
    def _dump_profile() -> None:
        _profile.disable()
        _profile.dump_stats(os.environ["BENCH_SERVE_PROFILE"])

    atexit.register(_dump_profile)
