"""The checked-in generated code matches protos/ and imports cleanly with the installed runtime."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("protos_generate", ROOT / "protos" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    assert metadata.version("grpcio-tools") == generate.GRPCIO_TOOLS_VERSION, (
        f"install grpcio-tools=={generate.GRPCIO_TOOLS_VERSION} (the test extra) to check the generated code")
    written = generate.generate(tmp_path)
    assert written, "no proto found"
    stale = [str(p) for p in written if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"regenerate with `.venv/bin/python protos/generate.py`: {stale} differ"
    on_disk = {p.relative_to(ROOT) for p in (ROOT / "egress_xds").rglob("*")
               if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))}
    assert on_disk == set(written), "generated files without a proto (or the reverse)"


def test_generated_modules_import_without_warnings() -> None:
    """Protobuf and grpc check the versions the code was generated with at import time:
    any warning (or error) about a version mismatch fails here."""
    code = ("import egress_xds.admin.v1.admin_pb2, egress_xds.admin.v1.admin_pb2_grpc, "
            "egress_xds.server.admin, egress_xds.server.csds")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_proto_package_does_not_clash_with_envoy_or_xds() -> None:
    from egress_xds.admin.v1 import admin_pb2

    package = admin_pb2.DESCRIPTOR.package
    assert package == "egress_xds.admin.v1"
    assert not package.startswith(("envoy.", "xds.", "udpa."))
