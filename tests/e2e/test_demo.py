"""``make demo`` / ``make demo-down`` (``python -m egress_xds.demo up|down``) on the real lab.

The demo runs in its own state directory and namespace prefix, so a developer's running
``make demo`` is never touched. What must hold: ``up`` returns (everything keeps running in
the background), every tour request agrees with ``egress-xds explain``, the sidecar stays
connected and keeps capturing after ``up`` exited, a second ``up`` notices it is running,
and ``down`` (twice) removes every process, namespace and file it created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from egress_xds.demo import http_json, tour
from egress_xds.lab.client import result_from_json
from egress_xds.lab.netns import base36, run
from egress_xds.lab.topology import process_start_time

REPO = Path(__file__).resolve().parents[2]


def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "egress_xds.demo", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_demo_up_tour_and_down(lab_required: None, tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    lab_name = f"xd{base36(os.getpid())}"[:11]
    where = ["--state-dir", str(state_dir), "--lab-name", lab_name]
    up = demo("up", *where, "--debug-listen", "127.0.0.1:0")
    state: dict[str, object] = {}
    try:
        out = up.stdout
        assert up.returncode == 0, out + up.stderr
        assert out.count("agrees with explain") == len(tour("web")), out
        assert "DISAGREES" not in out and "ALLOWED" in out and "DENIED" in out
        assert "make demo-down" in out and "ip netns exec" in out and "/debug/proxies" in out
        assert "NetworkPolicy" in out and (state_dir / "networkpolicy.yaml").exists()
        state = json.loads((state_dir / "state.json").read_text())

        # Still running after `up` returned: serve has the sidecar, the sidecar captures.
        proxies = http_json(f"{state['debug_url']}/debug/proxies")["proxies"]
        assert [p["namespace"] for p in proxies] == ["web"]
        netns = str(state["pod_netns"])
        client = run(["ip", "netns", "exec", netns, sys.executable, "-m", "egress_xds.lab.client",
                      "http", "203.0.113.130", "80", "--path", "/nope", "--host", "httpbin.example.com"],
                     env={**os.environ, "PYTHONPATH": str(REPO)})
        denied = result_from_json(client.stdout.strip().splitlines()[-1])
        assert getattr(denied, "status", None) == 403, denied

        again = demo("up", *where)
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    finally:
        down = demo("down", *where)
    assert down.returncode == 0 and "demo is down" in down.stdout, down.stdout + down.stderr
    assert not state_dir.exists()
    names = run(["ip", "netns", "list"]).stdout
    assert lab_name not in names, names
    if state:
        assert process_start_time(int(str(state["serve_pid"]))) != state["serve_start_time"]
    assert "nothing to do" in demo("down", *where).stdout
