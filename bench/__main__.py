"""``python -m bench`` (``make bench``): the performance benchmarks of issue 6, side by side.

Parts: translation, fanout, propagation, memory, responsiveness, peer (``--only a,b``).
Each prints a table: the measured value, the target and PASS/MISS (INFO where no target
applies, SKIP with the reason when it could not be measured). ``--quick`` is a fast smoke run
on smaller worlds; ``--markdown FILE`` also writes the results (and the machine) as Markdown,
the text of README's Performance section. Benchmarks are not tests: nothing here fails the
build; a part that breaks prints why and the others still run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

PARTS = ("translation", "fanout", "propagation", "memory", "responsiveness", "peer")
TITLES = {
    "translation": "1. Translation scaling",
    "fanout": "2. Fan-out to concurrent ADS streams vs a raw-bytes gRPC baseline",
    "propagation": "3. Propagation through a real Envoy (network-namespace lab)",
    "memory": "4. Resident memory of serve",
    "responsiveness": "5. Responsiveness during a full rebuild",
    "peer": "6. Peer: sovereign (REST) vs egress-xds (ADS), same listener set",
}


def _runner(key: str) -> Callable[..., None]:
    if key == "translation":
        from bench import translation
        return translation.run
    if key == "fanout":
        from bench import fanout
        return fanout.run
    if key == "propagation":
        from bench import propagation
        return propagation.run
    if key == "memory":
        from bench import memory
        return memory.run
    if key == "responsiveness":
        from bench import responsiveness
        return responsiveness.run
    from bench import peer
    return peer.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts (default: all): {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small worlds and few trials (smoke run)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the results as Markdown")
    args = parser.parse_args(argv)
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")

    from bench import bigworld
    from bench.common import PartResult, machine

    info = machine()
    print("egress-xds benchmarks" + (" (--quick)" if args.quick else ""))
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, {info['date']}")
    print("note: clients, baseline and server share these cores; figures are wall-clock.\n",
          flush=True)
    results: list[PartResult] = []
    started = time.monotonic()
    try:
        for key in PARTS:
            if key not in wanted:
                continue
            part = PartResult(key, TITLES[key])
            load_before = os.getloadavg()[0]
            t = time.monotonic()
            try:
                _runner(key)(part, args.quick)
            except Exception as err:  # a broken part must not hide the others
                part.skip("part", f"failed: {err!r}")
                traceback.print_exc(file=sys.stderr)
            part.seconds = time.monotonic() - t
            part.notes.append(f"1-min load average before / after the part: {load_before:.2f} / "
                              f"{os.getloadavg()[0]:.2f} (anything else running shares the 2 cores)")
            results.append(part)
            print(part.table() + "\n", flush=True)
    finally:
        bigworld.stop()
    total = time.monotonic() - started
    verdicts = [r.verdict for p in results for r in p.rows]
    print(f"summary: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS, "
          f"{verdicts.count('SKIP')} SKIP in {total:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, info, args, total))
        print(f"wrote {args.markdown}")
    return 0


def markdown(results: Sequence[object], info: dict[str, str], args: argparse.Namespace, total: float) -> str:
    command = "make bench" if not args.quick and args.only == ",".join(PARTS) else (
        "python -m bench" + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only != ",".join(PARTS) else ""))
    lines = ["## Performance", "",
             f"Latest results of `{command}` ({total / 60:.1f} min), {info['date']}, on "
             f"{info['nproc']} cores ({info['cpu']}), Python {info['python']}, Linux {info['kernel']}.",
             "Memory (`free -h`):", "", "```", info["free -h"], "```", "",
             "Every figure is wall-clock on this one machine, where the benchmark's clients, the "
             "baseline and the peer share the 2 cores with the server. Ratios are measured side by "
             "side in the same run. PASS/MISS compares with the targets of issue 6.", ""]
    for part in results:
        lines += [part.markdown(), ""]  # type: ignore[attr-defined]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
