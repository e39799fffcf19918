"""Command line: ``egress-xds serve | translate | validate | explain | bootstrap | status``.

Wiring only: parses flags, calls the pipeline (model -> resolve -> envoy) or the server, and
prints. Called by the ``egress-xds`` console script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from egress_xds import commands, serve

    parser = argparse.ArgumentParser(
        prog="egress-xds",
        description="xDS control plane giving Envoy sidecars Linkerd-style egress control.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    serve.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
