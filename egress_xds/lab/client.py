"""Lab clients: one TCP, TLS or HTTP exchange from inside a pod, classified for assertions.

In: a destination (address, port), what to send, a namespace (a ``/run/netns`` path, or
``None`` for the current one) and a timeout; out: a :class:`TcpResult`, :class:`TlsResult`
or :class:`HttpResult` whose ``outcome`` is one of ``ok``, ``closed`` (accepted, then EOF
before any answer), ``reset``, ``refused``, ``timeout``, ``unreachable``, ``error``.
Every exchange is bounded by its timeout.

Callers: :class:`egress_xds.lab.pod.Pod` calls the functions in-process (the socket is
created inside the pod's namespace, so its traffic is captured exactly like a container's);
to run as another uid (e.g. the proxy uid, which capture must skip) the pod runs this module
as a program inside the namespace: ``python -m egress_xds.lab.client tcp ADDR PORT ...``,
which prints the result as one JSON object.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import socket
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from egress_xds.lab.netns import netns_socket, setns_current_thread

Outcome = Literal["ok", "closed", "reset", "refused", "timeout", "unreachable", "error"]
DEFAULT_TIMEOUT = 5.0
_READ_LIMIT = 1024 * 1024


@dataclass
class Exchange:
    """What a client saw of one connection: how it ended and whether it was accepted."""

    outcome: Outcome
    connected: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def closed(self) -> bool:
        """Accepted, then closed (FIN or RST) without an answer: how a deny looks."""
        return self.connected and self.outcome in ("closed", "reset")


@dataclass
class TcpResult(Exchange):
    reply: dict[str, Any] | None = None  # the world server's JSON answer, if it was JSON
    raw: str = ""  # everything received, decoded


@dataclass
class TlsResult(Exchange):
    handshake: bool = False
    report: dict[str, Any] | None = None  # the world TLS server's hello (``sni``, ``server``...)
    echo: dict[str, Any] | None = None  # answer to ``payload`` if one was sent

    @property
    def sni(self) -> str | None:
        """The SNI the server reported receiving."""
        return self.report.get("sni") if self.report else None

    @property
    def server(self) -> str | None:
        return self.report.get("server") if self.report else None


@dataclass
class HttpResult(Exchange):
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: str = ""

    @property
    def json(self) -> Any:
        """The body parsed as JSON (the world HTTP echo report), or ``None``."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def server(self) -> str | None:
        return self.headers.get("x-lab-server")


@dataclass
class GrpcResult:
    outcome: Outcome  # "ok" when a gRPC status came back (any code); else how it failed
    code: str = ""  # grpc status name: OK, PERMISSION_DENIED, UNAVAILABLE...
    details: str = ""
    reply: dict[str, Any] | None = None  # the world gRPC server's JSON answer
    trailers: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok" and self.code == "OK"

    @property
    def server(self) -> str | None:
        return self.reply.get("server") if self.reply else self.trailers.get("lab-server")


def classify(exc: BaseException) -> Outcome:
    """Map a socket/TLS/HTTP exception to an outcome."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError | http.client.RemoteDisconnected):
        return "closed"
    if isinstance(exc, http.client.IncompleteRead | http.client.BadStatusLine):
        return "closed"
    if isinstance(exc, ssl.SSLError) and "EOF" in str(exc):
        return "closed"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
        return "reset"
    return "error"


def _connect(netns: str | None, address: str, port: int, timeout: float) -> socket.socket:
    sock = netns_socket(netns) if netns else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Deadline:
    def __init__(self, timeout: float) -> None:
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


def _read_line(sock: socket.socket | ssl.SSLSocket, deadline: _Deadline) -> bytes:
    """Read until a newline or EOF (returns what it got; b"" on immediate EOF)."""
    data = b""
    while b"\n" not in data and len(data) < _READ_LIMIT:
        sock.settimeout(deadline.left())
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _json_line(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tcp_exchange(address: str, port: int, payload: str = "hello", *, netns: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> TcpResult:
    """Connect, send ``payload`` + newline, read one line back (or EOF)."""
    deadline = _Deadline(timeout)
    try:
        sock = _connect(netns, address, port, timeout)
    except OSError as exc:
        return TcpResult(classify(exc), error=repr(exc))
    result = TcpResult("error", connected=True)
    with sock:
        try:
            sock.sendall(payload.encode() + b"\n")
            data = _read_line(sock, deadline)
        except OSError as exc:
            result.outcome, result.error = classify(exc), repr(exc)
            return result
    if not data:
        result.outcome = "closed"
        return result
    result.outcome = "ok"
    result.raw = data.decode(errors="replace")
    result.reply = _json_line(data)
    return result


def tls_exchange(address: str, port: int, sni: str | None, *, payload: str | None = None,
                 alpn: Sequence[str] = (), ca_file: str | None = None,
                 netns: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> TlsResult:
    """TLS handshake with ``sni`` (``None``: send none), then read the server's hello line.

    The certificate is not verified unless ``ca_file`` is given (then the chain is, the
    hostname is not): what matters is what the server saw.
    """
    deadline = _Deadline(timeout)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca_file:
        ctx.load_verify_locations(ca_file)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    try:
        raw = _connect(netns, address, port, timeout)
    except OSError as exc:
        return TlsResult(classify(exc), error=repr(exc))
    result = TlsResult("error", connected=True)
    try:
        with ctx.wrap_socket(raw, server_hostname=sni, do_handshake_on_connect=False) as tls:
            tls.settimeout(deadline.left())
            tls.do_handshake()
            result.handshake = True
            hello = _read_line(tls, deadline)
            if not hello:
                result.outcome = "closed"
                return result
            result.report = _json_line(hello)
            if payload is not None:
                tls.sendall(payload.encode() + b"\n")
                result.echo = _json_line(_read_line(tls, deadline))
            result.outcome = "ok"
    except OSError as exc:  # ssl.SSLError is an OSError
        result.outcome, result.error = classify(exc), repr(exc)
    finally:
        raw.close()
    return result


class NetnsHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` whose socket is created inside a network namespace."""

    def __init__(self, address: str, port: int, *, netns: str | None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(address, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        self.sock = _connect(self.netns, self.host, self.port, float(self.timeout or DEFAULT_TIMEOUT))


def http_exchange(address: str, port: int, path: str = "/", *, method: str = "GET",
                  host: str | None = None, headers: Mapping[str, str] | None = None,
                  body: str | bytes | None = None, netns: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> HttpResult:
    """One HTTP/1.1 request on a fresh connection. ``host`` sets the Host header."""
    conn = NetnsHTTPConnection(address, port, netns=netns, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as exc:
            return HttpResult(classify(exc), error=repr(exc))
        return http_on(conn, path, method=method, host=host, headers=headers, body=body,
                       timeout=timeout)
    finally:
        conn.close()


def http_on(conn: http.client.HTTPConnection, path: str = "/", *, method: str = "GET",
            host: str | None = None, headers: Mapping[str, str] | None = None,
            body: str | bytes | None = None, timeout: float = DEFAULT_TIMEOUT) -> HttpResult:
    """One request on an open (possibly reused) connection, e.g. to prove keep-alive."""
    deadline = _Deadline(timeout)
    result = HttpResult("error", connected=True)
    send_headers = dict(headers or {})
    if host is not None:
        send_headers["Host"] = host
    try:
        conn.request(method, path, body=body, headers=send_headers)
        if conn.sock is not None:
            conn.sock.settimeout(deadline.left())
        response = conn.getresponse()
        data = response.read(_READ_LIMIT)
    except (OSError, http.client.HTTPException) as exc:
        result.outcome, result.error = classify(exc), repr(exc)
        return result
    result.outcome = "ok"
    result.status = response.status
    for name, value in response.getheaders():
        low = name.lower()
        result.headers[low] = f"{result.headers[low]}, {value}" if low in result.headers else value
    result.body = data.decode(errors="replace")
    return result


def grpc_exchange(address: str, port: int, method: str = "/lab.Echo/Call", *,
                  request: str = "", metadata: Mapping[str, str] | None = None,
                  authority: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> GrpcResult:
    """One unary gRPC call (plaintext h2c) from the *current* network namespace.

    gRPC opens its sockets on its own threads, so this cannot target another namespace
    in-process: :meth:`egress_xds.lab.pod.Pod.grpc` runs it as a program inside the pod.
    ``authority`` sets ``:authority`` (what HTTP routing sees as the host). A status from the
    peer (``OK``, ``PERMISSION_DENIED``, also ``UNAVAILABLE`` when Envoy says so) gives
    ``outcome == "ok"``; the ``code`` tells which.
    """
    import grpc

    options: list[tuple[str, str | int]] = [("grpc.enable_retries", 0),
                                            ("grpc.enable_http_proxy", 0)]
    if authority:
        options.append(("grpc.default_authority", authority))
    with grpc.insecure_channel(f"{address}:{port}", options=options) as channel:
        call = channel.unary_unary(method)
        try:
            response, rpc = call.with_call(request.encode(), timeout=timeout,
                                           metadata=tuple((metadata or {}).items()),
                                           wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            result = GrpcResult("ok", code=code.name, details=str(exc.details() or ""))
            trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
            result.trailers = {k: str(v) for k, v in (trailers or ())}
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                result.outcome = "timeout"
            elif code == grpc.StatusCode.UNAVAILABLE and "upstream" not in result.details:
                # The channel could not reach anything (refused/reset/closed before a status).
                result.outcome = _classify_unavailable(result.details)
            return result
    result = GrpcResult("ok", code="OK", reply=_json_line(response))
    result.trailers = {k: str(v) for k, v in (rpc.trailing_metadata() or ())}
    return result


def _classify_unavailable(details: str) -> Outcome:
    low = details.lower()
    if "refused" in low:
        return "refused"
    if "reset" in low:
        return "reset"
    if "unreachable" in low:
        return "unreachable"
    if "closed" in low or "eof" in low or "socket" in low:
        return "closed"
    return "error"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egress_xds.lab.client",
                                     description="One lab exchange; prints the result as JSON.")
    parser.add_argument("--netns", help="enter /run/netns/NAME first (needs root); "
                        "default: the current namespace (use `ip netns exec`)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("tcp", "tls", "http", "grpc"):
        p = sub.add_parser(kind)
        p.add_argument("address")
        p.add_argument("port", type=int)
        if kind == "tcp":
            p.add_argument("--payload", default="hello")
        if kind == "tls":
            p.add_argument("--sni")
            p.add_argument("--payload")
            p.add_argument("--alpn", default="")
            p.add_argument("--ca-file")
        if kind == "http":
            p.add_argument("--path", default="/")
            p.add_argument("--method", default="GET")
            p.add_argument("--host")
            p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
            p.add_argument("--data")
        if kind == "grpc":
            p.add_argument("--method", default="/lab.Echo/Call")
            p.add_argument("--authority")
            p.add_argument("--metadata", action="append", default=[], metavar="NAME:VALUE")
            p.add_argument("--request", default="")
    args = parser.parse_args(argv)
    netns = f"/run/netns/{args.netns}" if args.netns else None
    result: TcpResult | TlsResult | HttpResult | GrpcResult
    if args.kind == "grpc":
        if netns:
            _enter_netns_for_good(netns)
        metadata = {}
        for item in args.metadata:
            name, _, value = item.partition(":")
            metadata[name.strip()] = value.strip()
        result = grpc_exchange(args.address, args.port, args.method, request=args.request,
                               metadata=metadata, authority=args.authority,
                               timeout=args.timeout)
    elif args.kind == "tcp":
        result = tcp_exchange(args.address, args.port, args.payload, netns=netns,
                              timeout=args.timeout)
    elif args.kind == "tls":
        alpn = [a for a in args.alpn.split(",") if a]
        result = tls_exchange(args.address, args.port, args.sni, payload=args.payload, alpn=alpn,
                              ca_file=args.ca_file, netns=netns, timeout=args.timeout)
    else:
        headers = {}
        for item in args.header:
            name, _, value = item.partition(":")
            headers[name.strip()] = value.strip()
        result = http_exchange(args.address, args.port, args.path, method=args.method,
                               host=args.host, headers=headers, body=args.data, netns=netns,
                               timeout=args.timeout)
    print(json.dumps({"kind": args.kind, **asdict(result)}))
    return 0


def _enter_netns_for_good(ns_path: str) -> None:
    """Move this whole (still single-threaded) process into ``ns_path`` (the CLI's grpc)."""
    with open(ns_path, "rb") as target:
        setns_current_thread(target.fileno())


def result_from_json(text: str) -> TcpResult | TlsResult | HttpResult | GrpcResult:
    """Parse :func:`main`'s output back into a result object."""
    data = json.loads(text)
    kind = data.pop("kind")
    cls = {"tcp": TcpResult, "tls": TlsResult, "http": HttpResult, "grpc": GrpcResult}[kind]
    return cls(**data)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
