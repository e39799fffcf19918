"""The benchmark's stand-ins for sidecars on other nodes really yield the CPU: a niced
client worker gets a scheduling group of its own, niced too (``bench.clients.lower_priority``).
Without that, autogroup scheduling ranks the nice value only within the benchmark's session,
and the workers took half a contended core from ``serve`` and Envoy (bench part 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import os
from bench.clients import lower_priority
session = os.getsid(0)
lower_priority(19)
group = open("/proc/self/autogroup").read().split() if os.path.exists("/proc/self/autogroup") else []
print(os.getpriority(os.PRIO_PROCESS, 0), os.getsid(0) != session, *group)
"""


def test_a_niced_worker_yields_across_scheduling_groups() -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fields = proc.stdout.split()
    assert fields[0] == "19"  # the process itself
    if os.path.exists("/proc/self/autogroup"):  # Linux with autogroup scheduling (this machine)
        assert fields[1] == "True"  # a session, so a scheduling group, of its own
        assert fields[2].startswith("/autogroup-") and fields[3:] == ["nice", "19"]
