"""TLS for serve's listeners that follows certificate rotation on disk, without a restart.

In: the paths of ``serve --tls-cert``, ``--tls-key`` and (mTLS) ``--client-ca``: PEM files that
cert-manager, a Kubernetes secret volume or any other tool replaces from time to time.
Out: :class:`TlsFiles`, whose :meth:`TlsFiles.credentials` gives one ``grpc.ServerCredentials``
per listener, built with ``grpc.dynamic_ssl_server_credentials``. Called by
``serve.ServeConfig.credentials`` (once per listener: the ADS one and ``--admin-listen``).

gRPC calls the fetcher before every new TLS handshake, on one of its own threads (never the
asyncio loop). The fetcher stats the three paths (device, inode, size, mtime, ctime, after
symlinks: a Kubernetes ``..data`` symlink swap shows as new inodes) and rereads the files only
when that changed. A new set is checked first: each file is PEM, the key is the certificate's,
the client CA holds a certificate. If not (a half-written file, a key that belongs to another
certificate, a missing file) the previous certificates stay in use and one error naming the
file is logged per change, not per handshake; the next change is tried again. Established
connections are never touched: a TLS session keeps the certificate it was made with, so ADS
streams survive a rotation, and only new handshakes see the new certificate or client CA.

gRPC hands the initial certificate configuration to the first listener that asks for it
only; a listener that starts later asks the fetcher and fails to bind if it answers
"unchanged". So each listener gets credentials of its own, which remember what that listener
last got, over one shared file watcher (one read and one log line per change).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

log = logging.getLogger(__name__)

# What a path looks like without reading it: (st_dev, st_ino, st_size, st_mtime_ns,
# st_ctime_ns) after symlinks, or None when it cannot be stat'ed.
_Stat = tuple[int, int, int, int, int] | None


class TlsFileError(ValueError):
    """A TLS file that cannot be used: ``path`` names it, the message says why (no secrets)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class CertificateInfo:
    """What the log says about a loaded set: the leaf's serial, expiry and subject."""

    serial: str  # lowercase hex, as Envoy's /certs and openssl print it
    not_after: datetime
    subject: str
    client_cas: int  # certificates in the client CA bundle (0 without mTLS)

    def log_fields(self) -> dict[str, Any]:
        return {"serial": self.serial, "not_after": self.not_after.isoformat(), "subject": self.subject,
                "client_cas": self.client_cas}


@dataclass(frozen=True)
class _Loaded:
    generation: int
    stats: tuple[_Stat, ...]
    config: grpc.ServerCertificateConfiguration
    info: CertificateInfo


def _stat(path: str) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise TlsFileError(path, f"cannot be read: {err.strerror or err}") from None


def check_files(cert_path: str, key_path: str, ca_path: str = "") -> tuple[bytes, bytes, bytes | None,
                                                                        CertificateInfo]:
    """Read and check a certificate chain, its key and an optional client CA bundle.

    Returns (cert PEM, key PEM, CA PEM or None, what the leaf says). Raises
    :class:`TlsFileError` naming the first file that is unreadable, not PEM, or (the key)
    not the certificate's.
    """
    # Imported here: cryptography costs ~10 MB of resident memory, paid only with TLS.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = _read(cert_path), _read(key_path)
    ca_pem = _read(ca_path) if ca_path else None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as err:
        raise TlsFileError(cert_path, f"not a PEM certificate chain ({err})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise TlsFileError(key_path, f"not an unencrypted PEM private key ({err})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    leaf = chain[0]
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TlsFileError(key_path, f"private key does not match the certificate in {cert_path} "
                                     f"(serial {leaf.serial_number:x})")
    cas = 0
    if ca_pem is not None:
        try:
            cas = len(x509.load_pem_x509_certificates(ca_pem))
        except ValueError as err:
            raise TlsFileError(ca_path, f"not a PEM CA bundle ({err})") from None
    info = CertificateInfo(serial=f"{leaf.serial_number:x}", not_after=leaf.not_valid_after_utc,
                           subject=leaf.subject.rfc4514_string(), client_cas=cas)
    return cert_pem, key_pem, ca_pem, info


class TlsFiles:
    """The server certificate, key and client CA on disk, reread when they change.

    The constructor reads them and raises (OSError: unreadable file, ValueError: unusable
    content, with the file's name) so ``serve`` refuses to start on bad files; later changes
    never raise, they are logged and the previous set is kept.
    """

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.paths = (cert, key, client_ca)
        self.require_client_auth = bool(client_ca)
        self._lock = threading.Lock()
        self._failed: tuple[_Stat, ...] | None = None  # the stats of the set last refused
        self.reloads = 0
        self.errors = 0
        stats = self._stats()
        for path, stat in zip(self.paths, stats, strict=True):
            if path and stat is None:
                os.stat(path)  # raises the OSError that names the file
        self._current = self._load(stats, 1)
        log.info("tls certificates loaded", extra={"certificate": cert, "key": key, "client_ca": client_ca,
                                                   **self._current.info.log_fields()})

    @property
    def info(self) -> CertificateInfo:
        return self._current.info

    def _stats(self) -> tuple[_Stat, ...]:
        return tuple(_stat(p) if p else None for p in self.paths)

    def _load(self, stats: tuple[_Stat, ...], generation: int) -> _Loaded:
        cert, key, ca = self.paths
        cert_pem, key_pem, ca_pem, info = check_files(cert, key, ca)
        config = grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=ca_pem)
        return _Loaded(generation, stats, config, info)

    def current(self) -> _Loaded:
        """The set to use now: the stats of the three paths, and a reread only if they changed."""
        stats = self._stats()
        loaded = self._current
        if stats == loaded.stats or stats == self._failed:
            return loaded
        with self._lock:
            loaded = self._current
            if stats == loaded.stats or stats == self._failed:
                return loaded
            try:
                # The stats were taken before reading: a write that lands after the read
                # changes them again, and the next handshake rereads.
                fresh = self._load(stats, loaded.generation + 1)
            except TlsFileError as err:
                self._failed = stats
                self.errors += 1
                log.error("tls certificates not reloaded, the previous ones stay in use",
                          extra={"file": err.path, "error": err.reason,
                                 "serial": loaded.info.serial})
                return loaded
            self._current = fresh
            self._failed = None
            self.reloads += 1
        log.info("tls certificates reloaded", extra={"certificate": self.paths[0], "client_ca": self.paths[2],
                                                     "previous_serial": loaded.info.serial,
                                                     **fresh.info.log_fields()})
        return fresh

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one listener (one ``add_secure_port``); never share them."""
        start = self.current()
        delivered = [start.generation]
        lock = threading.Lock()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC before each handshake on this listener; None = keep the current.
            now = self.current()
            with lock:
                if now.generation == delivered[0]:
                    return None
                delivered[0] = now.generation
            return now.config

        return grpc.dynamic_ssl_server_credentials(start.config, fetch,
                                                   require_client_authentication=self.require_client_auth)
