"""Throwaway TLS material for the world's TLS servers.

In: a directory; out: :class:`CertFiles` (a CA and one server certificate/key in PEM).
The world TLS servers present this certificate whatever SNI they receive; lab clients do
not verify it by default (the point is the SNI the server saw, not trust). Uses ``trustme``
(a test dependency, imported lazily so importing the lab costs nothing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Names written into the server certificate; clients may verify against the CA for these.
DEFAULT_NAMES = ("example.com", "*.example.com", "example.org", "*.example.org", "localhost")


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path  # server certificate chain (leaf first)
    key: Path


def make_certs(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> CertFiles:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="egress-xds lab")
    leaf = ca.issue_cert(*names)
    files = CertFiles(ca=directory / "ca.pem", cert=directory / "server.pem",
                      key=directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    with open(files.cert, "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    os.chmod(files.key, 0o600)
    return files
