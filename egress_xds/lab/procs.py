"""Processes the lab starts: a Popen with its output in a log file and a bounded stop.

In: an argv (usually ``ip netns exec NS [setpriv ...] CMD``) and a log path; out: a
:class:`LabProcess` that the owning pod/world stops in its ``close()``. Only processes
started here are ever signalled, by their own pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from egress_xds.lab.netns import LabError

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.1,
             what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` passes.

    For live changes: ``wait_for(lambda: pod.http(ip, 80).status == 403, what="deny")``.
    On timeout raises :class:`LabError` naming ``what`` and the last value (or exception).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # the probe may fail while things settle
            last = exc
        if time.monotonic() >= deadline:
            raise LabError(f"no {what} within {timeout}s (last: {last!r})")
        time.sleep(interval)


class LabProcess:
    """A started process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, start_new_session=True,
            )

    def __repr__(self) -> str:
        return f"LabProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the process output (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:]

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 15.0,
                   interval: float = 0.05) -> None:
        """Poll ``ready`` until true; fail early if the process exits, and after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise LabError(
                    f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.log()}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: no {what} within {timeout}s:\n{self.log()}")
            time.sleep(interval)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit code. Idempotent."""
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        return self.popen.returncode

    def _signal(self, sig: int) -> None:
        # The pid is ours (ip netns exec and setpriv exec in place, so it is the program).
        try:
            os.kill(self.popen.pid, sig)
        except ProcessLookupError:
            pass
