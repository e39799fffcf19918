"""Generate the Python code of the project's own API (``protos/``) with grpcio-tools.

In: every ``*.proto`` below ``protos/`` (today ``egress_xds/admin/v1/admin.proto``; the
directory layout is the proto package). Out: ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` beside the package in the repository (``egress_xds/admin/v1/``). The
output is checked in; ``tests/admin/test_generated.py`` regenerates into a temporary
directory and fails if anything differs, so the checked-in code always matches the protos.

Run from anywhere: ``.venv/bin/python protos/generate.py`` (``--out DIR`` to write elsewhere).
The output depends on the grpcio-tools version (its bundled protoc): it must be exactly
``GRPCIO_TOOLS_VERSION``, the version pinned in the ``test`` extra. Imports of Google's
well-known types come from grpcio-tools' own copies; Envoy and xDS APIs are not generated
here (they come from xds-protos).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata, resources
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.85.1"
PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc on every proto into ``out``; return the files written (relative to ``out``)."""
    installed = metadata.version("grpcio-tools")
    if installed != GRPCIO_TOOLS_VERSION:
        raise SystemExit(f"grpcio-tools {installed} is installed; the checked-in code is generated "
                         f"with {GRPCIO_TOOLS_VERSION}: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}")
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    sources = [str(p.relative_to(PROTOS)) for p in proto_files()]
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *sources]
    # protoc resolves the inputs against -I; run it with relative names so the output does
    # not depend on where the repository is checked out.
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    written = []
    for source in sources:
        stem = source.removesuffix(".proto")
        written += [Path(stem + "_pb2.py"), Path(stem + "_pb2.pyi"), Path(stem + "_pb2_grpc.py")]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(args.out / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
