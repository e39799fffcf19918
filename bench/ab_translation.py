"""``python -m bench.ab_translation REV``: full translation of the 1,000-namespace world by
the code at git revision ``REV`` and by the working tree, alternately in one run.

The machine's speed drifts by up to 2x over an evening (same code, same world), so a figure
from an earlier ``make bench`` does not tell what a change bought; this does. Each tree runs
in its own process (``--rounds`` times, alternating), building cold: a fresh translator with
the builders' memos dropped, 3 builds per process, median kept. Prints both medians and
new / old. ``REV`` is exported with ``git archive`` into a temporary directory; it must have
``bench/world.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run inside the tree under test (its own egress_xds and bench.world).
_CHILD = r"""
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
from bench import world
from bench.translation import _flat, _parse
from egress_xds.envoy import common, listener, route
from egress_xds.serve import long_lived_allocations
from egress_xds.translate import Translator
objects = _flat(_parse(world.files(1000, 100)))
def forget():
    for module in (common, listener, route):
        for value in list(vars(module).values()):
            if hasattr(value, "cache_clear"):
                value.cache_clear()
    for name in ("_MATCHES", "_RANGES"):
        getattr(listener, name, {}).clear()
runs = []
for _ in range(3):
    forget()
    translator = Translator()
    started = time.perf_counter()
    with long_lived_allocations():
        translator.load(objects)
        built = {ns: translator.resources(ns) for ns in translator.namespaces()}
    runs.append(time.perf_counter() - started)
    del built, translator
print(statistics.median(runs))
"""


def cold_build(tree: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tree)], check=True, capture_output=True,
                         text=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_translation", description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="git revision to compare with the working tree")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.rev], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            times["old"].append(cold_build(old))
            times["new"].append(cold_build(REPO))
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"full translation, 1,000 namespaces, cold: {args.rev} {o:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times['old'])}), working tree {n:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times['new'])}); new / old = {n / o:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
