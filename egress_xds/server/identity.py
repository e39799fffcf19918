"""Who is on the other end of an ADS stream: the namespace from the peer's mTLS certificate.

In: a ``grpc.aio`` servicer context of a stream on an mTLS listener (its
``auth_context()`` holds the verified peer certificate as ``x509_pem_cert``).
Out: a :class:`PeerIdentity` parsed from the certificate's SPIFFE URI SAN
``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``, or an
:class:`IdentityError` carrying the gRPC status to refuse the stream with
(UNAUTHENTICATED: no verified certificate; PERMISSION_DENIED: a certificate that names no
usable SPIFFE ID, or one of another trust domain).
Used by ``serve`` (``--client-ca``), injected into ``ads.AdsServer`` as its identity resolver;
the ADS server then refuses a node whose ``metadata.namespace`` is not the certificate's.

The chain was verified by gRPC against ``--client-ca`` before the stream exists; this
module only reads the identity out of it (with ``cryptography``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

DEFAULT_TRUST_DOMAIN = "cluster.local"

# RFC 1123 labels (Kubernetes namespace / service account names) and a trust domain made of
# lowercase letters, digits, dots, dashes and underscores (SPIFFE ID spec).
_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_SPIFFE = re.compile(rf"^spiffe://(?P<td>[a-z0-9._-]+)/ns/(?P<ns>{_NAME})/sa/(?P<sa>{_NAME})$")


@dataclass(frozen=True)
class PeerIdentity:
    spiffe_id: str
    trust_domain: str
    namespace: str
    service_account: str


class IdentityError(Exception):
    """The stream must be refused with ``code``; ``message`` says why (never any secret)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_spiffe_id(uri: str) -> tuple[str, str, str] | None:
    """``spiffe://td/ns/NS/sa/SA`` -> (trust domain, namespace, service account), else None."""
    match = _SPIFFE.match(uri)
    if match is None:
        return None
    return match["td"], match["ns"], match["sa"]


def uri_sans(pem: bytes) -> list[str]:
    """The URI subject alternative names of a PEM certificate."""
    # Imported here: cryptography costs ~10 MB of resident memory, paid only with mTLS.
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]


def identity_from_sans(uris: Sequence[str], trust_domain: str) -> PeerIdentity:
    """Exactly one SPIFFE ID among ``uris``, in ``trust_domain``, naming a namespace."""
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if not spiffe:
        raise IdentityError(grpc.StatusCode.PERMISSION_DENIED,
                            "client certificate has no SPIFFE ID (URI SAN spiffe://"
                            f"{trust_domain}/ns/<namespace>/sa/<service-account>)")
    if len(spiffe) > 1:
        raise IdentityError(grpc.StatusCode.PERMISSION_DENIED,
                            f"client certificate has {len(spiffe)} SPIFFE IDs; exactly one is allowed")
    parsed = parse_spiffe_id(spiffe[0])
    if parsed is None:
        raise IdentityError(grpc.StatusCode.PERMISSION_DENIED,
                            f"client certificate SPIFFE ID {spiffe[0]!r} is not "
                            f"spiffe://{trust_domain}/ns/<namespace>/sa/<service-account>")
    domain, namespace, account = parsed
    if domain != trust_domain:
        raise IdentityError(grpc.StatusCode.PERMISSION_DENIED,
                            f"client certificate SPIFFE ID {spiffe[0]!r} is not in trust domain "
                            f"{trust_domain!r}")
    return PeerIdentity(spiffe[0], domain, namespace, account)


class SpiffeResolver:
    """The identity resolver ``serve --client-ca`` gives ``AdsServer``: context -> identity."""

    def __init__(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.trust_domain = trust_domain

    def __call__(self, context: Any) -> PeerIdentity:
        auth: Mapping[str, Sequence[bytes]] = context.auth_context() or {}
        pems = auth.get("x509_pem_cert") or []
        if not pems:
            raise IdentityError(grpc.StatusCode.UNAUTHENTICATED,
                                "no verified client certificate: this server requires mTLS")
        try:
            uris = uri_sans(pems[0])
        except ValueError as err:
            raise IdentityError(grpc.StatusCode.UNAUTHENTICATED,
                                f"client certificate cannot be read: {err}") from None
        return identity_from_sans(uris, self.trust_domain)
