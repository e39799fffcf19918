"""``python -m bench`` runs: a quick translation part prints its table (a smoke test, not a
benchmark: no figure is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_translation_part_prints_a_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "translation"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "== 1. Translation scaling" in out, out
    header = next(line for line in out.splitlines() if line.startswith("measure"))
    assert header.split() == ["measure", "value", "target", "verdict"]
    assert "100 ns" in out and "full translation" in out
    assert "p99 < 50 ms" in out  # the push target is shown next to its measurement
    assert "machine speed reference" in out  # CPU-bound figures can be read against it
    assert "summary:" in out
