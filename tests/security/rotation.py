"""Helpers for the certificate rotation tests: a Kubernetes-style secret volume, a TLS probe.

In: PEM bytes (from ``tests.security.pki``), a loopback port. Out: :class:`SecretMount`, a
directory laid out and updated the way the kubelet updates a secret volume (files are
symlinks through ``..data`` to a timestamped directory; an update writes a new directory and
renames a new ``..data`` symlink over the old one, so every file changes at once);
:func:`server_serial`, the serial of the certificate a TLS server presents to a new
handshake; :class:`PeerRecorder`, which records the client certificate serial ``serve``
verified on each ADS stream; :func:`rotating_server`, ``serve`` in-process on given files.
Used by ``test_rotation.py`` and ``test_envoy_rotation.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from egress_xds.serve import ServeConfig, Server
from egress_xds.translate import TranslatorOptions
from tests.security.pki import SERVER_NAME, Leaf, Pki
from tests.server.envoy_proc import EGRESS, ROUTE_TEMPLATE, free_port


class SecretMount:
    """A directory like a mounted Kubernetes secret: ``NAME -> ..data/NAME``, ``..data -> ..TS``."""

    def __init__(self, directory: Path, files: Mapping[str, bytes]) -> None:
        self.dir = directory
        directory.mkdir(parents=True)
        self.generation = 0
        self.update(files)

    def path(self, name: str) -> Path:
        return self.dir / name

    def update(self, files: Mapping[str, bytes]) -> None:
        """Replace every file at once: one rename of the ``..data`` symlink (as the kubelet does)."""
        self.generation += 1
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.generation}"
        target = self.dir / stamp
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
            (target / name).chmod(0o644)
        old = os.readlink(self.dir / "..data") if (self.dir / "..data").is_symlink() else None
        os.symlink(stamp, self.dir / "..data_tmp")
        os.rename(self.dir / "..data_tmp", self.dir / "..data")
        for name in files:
            link = self.dir / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if old is not None:
            shutil.rmtree(self.dir / old)


def tls_files(leaf: Leaf, ca: bytes) -> dict[str, bytes]:
    """What cert-manager puts in a certificate's secret: tls.crt, tls.key, ca.crt."""
    return {"tls.crt": leaf.cert.read_bytes(), "tls.key": leaf.key.read_bytes(), "ca.crt": ca}


def serial(leaf: Leaf) -> str:
    return f"{x509.load_pem_x509_certificate(leaf.cert.read_bytes()).serial_number:x}"


def pem_serial(pem: bytes) -> str:
    return f"{x509.load_pem_x509_certificate(pem).serial_number:x}"


def server_serial(port: int, ca: bytes, client: Leaf | None = None) -> str:
    """A new TLS handshake with 127.0.0.1:``port`` (blocking: call it in a thread): the serial
    of the certificate the server presents, verified against ``ca`` and SERVER_NAME."""
    context = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return f"{x509.load_der_x509_certificate(der).serial_number:x}"


class PeerRecorder:
    """Wraps ``AdsServer.identity``: records the serial of each verified client certificate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.serials: list[str] = []

    def __call__(self, context: Any) -> Any:
        pems = (context.auth_context() or {}).get("x509_pem_cert") or []
        if pems:
            self.serials.append(pem_serial(pems[0]))
        return self.inner(context)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def start_server(tmp_path: Path, cert: Path, key: Path, client_ca: Path | None,
                       **config: Any) -> Server:
    """``serve`` in-process with --tls-cert/--tls-key[/--client-ca] at the given paths; no
    manifest watching, so only the test changes snapshots (``tmp_path/manifests``, written
    if missing). ``server.ads.identity`` is a :class:`PeerRecorder` with mTLS."""
    manifests = tmp_path / "manifests"
    if not manifests.exists():
        manifests.mkdir()
        (manifests / "egress.yaml").write_text(EGRESS)
        (manifests / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com")
    settings: dict[str, Any] = {
        "manifests": [str(manifests)], "ads_listen": "127.0.0.1:0", "debug_listen": "127.0.0.1:0",
        "options": TranslatorOptions(outbound_port=free_port(), listener_addresses=("127.0.0.1",)),
        "watch": False, "tls_cert": str(cert), "tls_key": str(key),
        "client_ca": str(client_ca) if client_ca else "", **config}
    server = Server(ServeConfig(**settings))
    await server.start()
    if server.ads.identity is not None:
        server.ads.identity = PeerRecorder(server.ads.identity)
    return server


@contextlib.asynccontextmanager
async def rotating_server(tmp_path: Path, cert: Path, key: Path, client_ca: Path | None,
                          **config: Any) -> AsyncIterator[Server]:
    """:func:`start_server`, stopped at the end."""
    server = await start_server(tmp_path, cert, key, client_ca, **config)
    try:
        yield server
    finally:
        await server.stop()


def two_cas(tmp_path: Path) -> tuple[Pki, Pki]:
    """The CA in use and the one that replaces it."""
    return Pki(tmp_path / "ca-1", "old CA"), Pki(tmp_path / "ca-2", "new CA")


def server_leaf(pki: Pki, stem: str) -> Leaf:
    return pki.issue(stem, dns=(SERVER_NAME, "localhost"), ips=("127.0.0.1",), server=True)
