"""Shared pieces of the benchmarks: result rows and tables, statistics, the machine, and
``egress-xds serve`` run as the real product in a subprocess.

In: measurements from each part (``bench.translation``, ``bench.fanout``...). Out: printed
tables (measured value next to its target with PASS/MISS/INFO), the Markdown of the same
rows for ``bench/RESULTS.md``, and a ``ServeProcess`` whose log, debug endpoint and resident
memory the parts read.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent


# ---- results -----------------------------------------------------------------------------


@dataclass
class Row:
    """One measured quantity. ``verdict`` is PASS/MISS when a target applies, INFO otherwise,
    SKIP when it could not be measured (``value`` then says why)."""

    what: str
    value: str
    target: str = ""
    verdict: str = "INFO"
    note: str = ""


@dataclass
class PartResult:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, what: str, value: str, target: str = "", ok: bool | None = None,
            note: str = "") -> None:
        verdict = "INFO" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append(Row(what, value, target, verdict, note))

    def skip(self, what: str, reason: str) -> None:
        self.rows.append(Row(what, "not measured", "", "SKIP", reason))

    def table(self) -> str:
        head = ("measure", "value", "target", "verdict")
        body = [(r.what, r.value, r.target, r.verdict) for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
        line = "  ".join("-" * w for w in widths)
        out = [f"== {self.title} ({self.seconds:.0f} s)",
               "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)), line]
        for r, cells in zip(self.rows, body, strict=False):
            out.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)))
            if r.note:
                out.append("    " + r.note)
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| measure | value | target | verdict |", "|---|---|---|---|"]
        for r in self.rows:
            value = r.value + (f" ({r.note})" if r.note else "")
            out.append(f"| {r.what} | {value} | {r.target} | {r.verdict} |")
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fitted_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) over log(size): time ~ size^k."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(t, 1e-9)) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else math.nan


# ---- the machine -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = subprocess.run(["free", "-h"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        mem = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "free -h": mem,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
    }


def _reference_work() -> int:
    """A fixed pure-Python workload in the translator's style: tuples, dicts, f-strings, a
    sort with a key function, bytes joined."""
    rows: list[tuple[tuple[str, int, str], dict[str, Any]]] = []
    for i in range(20_000):
        key = (f"ns-{i % 1000:04d}", i % 7, f"route-{i}")
        rows.append((key, {"port": i % 65_535, "name": "|".join(map(str, key))}))
    rows.sort(key=lambda r: (r[0][1], r[1]["name"]))
    return len(b"".join(str(r[1]["name"]).encode() for r in rows))


def speed_reference(reps: int = 7) -> float:
    """Seconds (median of ``reps``) the fixed workload ``_reference_work`` takes now: how fast
    this machine runs Python at this moment. Its speed drifts by up to 2x between runs, so a
    CPU-bound figure is best read next to this one (or as a multiple of it)."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        _reference_work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# ---- serve as a subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_world(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def atomic_write(path: Path, text: str) -> float:
    """Replace ``path`` like an editor's atomic save; returns time.time() just before."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    started = time.time()
    os.replace(tmp, path)
    return started


class ServeProcess:
    """``python -m egress_xds.cli serve`` on ``manifests`` with ADS and debug on loopback
    (or ADS on a unix socket). JSON log lines are kept in ``log_path``."""

    def __init__(self, manifests: Path, log_path: Path, *, ads: str = "",
                 extra: Sequence[str] = (), timeout: float = 300.0, gc_log: Path | None = None) -> None:
        self.log_path = log_path
        self.gc_log = gc_log
        self.ads = ads or f"127.0.0.1:{free_port()}"
        self.debug_url = f"http://127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "egress_xds.cli", "serve", "--manifests", str(manifests),
                "--ads-listen", self.ads, "--debug-listen", self.debug_url.removeprefix("http://"),
                *extra]
        env = dict(os.environ)
        paths = [str(REPO), env.get("PYTHONPATH", "")]
        if gc_log is not None:  # bench/gctrace/sitecustomize.py records GC pauses
            paths.insert(0, str(BENCH_DIR / "gctrace"))
            env["BENCH_GC_LOG"] = str(gc_log)
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO, start_new_session=True)
        self.ready_seconds = 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.debug_url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        self.ready_seconds = time.monotonic() - self.started
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve not ready after {timeout} s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Parsed JSON log lines from byte offset ``since``."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            data = f.read()
        out = []
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def gc_pauses(self, since: float, until: float) -> list[tuple[float, int, float]]:
        """(time, generation, seconds) of GC passes > 5 ms between two time.time() values."""
        if self.gc_log is None or not self.gc_log.exists():
            return []
        out = []
        for line in self.gc_log.read_text().splitlines():
            t, gen, took, _ = line.split()
            if since <= float(t) <= until:
                out.append((float(t), int(gen), float(took) / 1000))
        return out

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(self.debug_url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def event_time(event: dict[str, Any]) -> float:
    """time.time() of a serve log event (its ``ts``, millisecond precision)."""
    return datetime.fromisoformat(str(event["ts"])).timestamp()


def wait_events(serve: ServeProcess, since: int, match: Any, timeout: float) -> list[dict[str, Any]]:
    """Poll the log until ``match(events)`` is true; return the events since ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        events = serve.events(since)
        if match(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in tree:
        fields = _stat(pid)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


_serve_help: list[str] = []


def serve_supports(flag: str) -> bool:
    """Whether this checkout's ``egress-xds serve`` has ``flag`` (flags land in parallel)."""
    if not _serve_help:
        proc = subprocess.run([sys.executable, "-m", "egress_xds.cli", "serve", "--help"],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        _serve_help.append(proc.stdout)
    return flag in _serve_help[0]
