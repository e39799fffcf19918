"""The wheel carries what an installed egress-xds needs beyond its package: the files of
``envoy/`` (bootstrap template, capture script), found by ``egress-xds bootstrap`` once
installed (the Dockerfile installs the wheel; so would a user's ``pip install``).

Built offline from a copy of the sources (the checkout stays clean), installed without
dependencies into a fresh venv, and used from outside any checkout: the bootstrap module
needs only the standard library.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from egress_xds.bootstrap import BootstrapOptions, render

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_renders_bootstraps_from_its_own_template(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "egress_xds", source / "egress_xds", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "envoy", source / "envoy")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("egress_xds-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("bootstrap.yaml", "capture.sh"):
        assert any(n.endswith(f".data/data/share/egress-xds/{shipped}") for n in names), (shipped, names)

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
                   check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    script = ("import egress_xds.bootstrap as b; print(b.TEMPLATE); "
              "print(b.render(b.BootstrapOptions(namespace='web')))")
    out = subprocess.run([str(python), "-c", script], cwd=tmp_path, check=True, capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}).stdout
    template, rendered = out.split("\n", 1)
    assert Path(template) == (venv / "share" / "egress-xds" / "bootstrap.yaml").resolve()
    assert Path(template).read_text() == (ROOT / "envoy" / "bootstrap.yaml").read_text()
    assert rendered == render(BootstrapOptions(namespace="web")) + "\n"
