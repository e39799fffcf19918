"""The lab's "internet": TLS, HTTP and TCP servers that say who they are and what they saw.

Run as ``python -m egress_xds.lab.world --ready-file F [--cert C --key K]
--listen KIND:ADDR:PORT[:NAME] ...`` inside the world namespace (started by
:class:`egress_xds.lab.topology.World`); one asyncio process serves every address:port
given. It writes ``F`` (JSON, atomically) once every listener is bound, logs one line per
connection to stderr, and exits on SIGTERM/SIGINT.

What each kind answers (all JSON, one object per line for the stream kinds; every report
carries ``kind``, ``server`` (the instance name), ``local`` and ``peer`` as ``ip:port``):

- ``tcp``: for every line received, ``{"kind": "tcp", ..., "echo": "<line>"}``.
- ``tls``: right after the handshake ``{"kind": "tls", ..., "sni": <server name the client
  sent or null>, "alpn": ..., "tls_version": ...}``; then echoes lines like ``tcp``.
  The certificate is the same for every SNI (nobody needs to trust it).
- ``http``: HTTP/1.1 echo; the body is ``{"kind": "http", ..., "method", "path" (with the
  query), "host", "headers" (lower-case names), "body"}``, plus the response header
  ``x-lab-server: <name>``. Query ``status=NNN`` sets the status, ``delay_ms=N`` (at most
  10000) delays the answer.
- ``grpc``: plaintext gRPC (h2c) answering *any* unary method ``/pkg.Service/Method`` with
  raw bytes ``{"kind": "grpc", ..., "method", "metadata" (client metadata), "request"}``
  (no protobuf needed; see :func:`egress_xds.lab.client.grpc_exchange`). Metadata
  ``lab-status: <code name>`` makes it fail with that status instead.

:class:`WorldServer` is the spec a caller builds (and :mod:`egress_xds.lab.topology` turns
into ``--listen`` arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["tcp", "tls", "http", "grpc"]
KINDS: tuple[Kind, ...] = ("tcp", "tls", "http", "grpc")
_MAX_LINE = 64 * 1024
_MAX_DELAY_MS = 10_000


@dataclass(frozen=True)
class WorldServer:
    """One server instance: ``kind`` on ``address:port`` answering as ``name``."""

    kind: Kind
    address: str
    port: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown world server kind {self.kind!r} (one of {KINDS})")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.kind}-{self.address}:{self.port}")
        if ":" in self.name or "," in self.name:
            raise ValueError(f"server name {self.name!r} must not contain ':' or ','")

    @classmethod
    def tcp(cls, address: str, port: int, name: str = "") -> WorldServer:
        return cls("tcp", address, port, name)

    @classmethod
    def tls(cls, address: str, port: int, name: str = "") -> WorldServer:
        return cls("tls", address, port, name)

    @classmethod
    def http(cls, address: str, port: int, name: str = "") -> WorldServer:
        return cls("http", address, port, name)

    @classmethod
    def grpc(cls, address: str, port: int, name: str = "") -> WorldServer:
        return cls("grpc", address, port, name)

    def to_arg(self) -> str:
        return f"{self.kind}:{self.address}:{self.port}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> WorldServer:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"expected KIND:ADDR:PORT[:NAME], got {text!r}")
        kind = parts[0]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        name = parts[3] if len(parts) == 4 else ""
        return cls(kind, parts[1], int(parts[2]), name)


def _addr(sockname: Any) -> str:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return f"{sockname[0]}:{sockname[1]}"
    return str(sockname)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Stream:
    """Line-echo protocol shared by ``tcp`` and (after the handshake) ``tls``."""

    def __init__(self, spec: WorldServer, sni_seen: weakref.WeakKeyDictionary[Any, str | None]):
        self.spec = spec
        self.sni_seen = sni_seen

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        base: dict[str, Any] = {
            "kind": self.spec.kind,
            "server": self.spec.name,
            "local": _addr(writer.get_extra_info("sockname")),
            "peer": _addr(writer.get_extra_info("peername")),
        }
        try:
            if self.spec.kind == "tls":
                sslobj = writer.get_extra_info("ssl_object")
                base["sni"] = self.sni_seen.get(sslobj) if sslobj is not None else None
                hello = dict(base)
                hello["alpn"] = sslobj.selected_alpn_protocol() if sslobj is not None else None
                hello["tls_version"] = sslobj.version() if sslobj is not None else None
                _log(f"{self.spec.name}: tls from {base['peer']} sni={base['sni']}")
                writer.write(json.dumps(hello).encode() + b"\n")
                await writer.drain()
            else:
                _log(f"{self.spec.name}: tcp from {base['peer']}")
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line = exc.partial
                except asyncio.LimitOverrunError:
                    line = await reader.read(_MAX_LINE)
                if not line:
                    break
                reply = dict(base)
                reply["echo"] = line.decode(errors="replace").rstrip("\n")
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
                pass


def _tls_context(cert: str, key: str,
                 sni_seen: weakref.WeakKeyDictionary[Any, str | None]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])

    def remember_sni(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sni_seen[sslobj] = server_name

    ctx.sni_callback = remember_sni
    return ctx


async def _serve(specs: Sequence[WorldServer], ready_file: str | None, cert: str | None,
                 key: str | None) -> None:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    sni_seen: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
    tls_ctx = _tls_context(cert, key, sni_seen) if cert and key else None
    servers: list[asyncio.AbstractServer] = []
    runners: list[web.AppRunner] = []
    grpc_servers: list[Any] = []
    try:
        for spec in specs:
            if spec.kind == "grpc":
                grpc_servers.append(await _start_grpc(spec))
            elif spec.kind == "http":
                runner = web.AppRunner(_http_app(spec), access_log=None, handle_signals=False)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, spec.address, spec.port, reuse_address=True).start()
            else:
                if spec.kind == "tls" and tls_ctx is None:
                    raise SystemExit(f"{spec.name}: tls needs --cert and --key")
                server = await asyncio.start_server(
                    _Stream(spec, sni_seen).handle, spec.address, spec.port,
                    ssl=tls_ctx if spec.kind == "tls" else None,
                    ssl_handshake_timeout=5 if spec.kind == "tls" else None,
                    reuse_address=True, limit=_MAX_LINE,
                )
                servers.append(server)
            _log(f"{spec.name}: listening on {spec.kind}://{spec.address}:{spec.port}")
        if ready_file:
            tmp = f"{ready_file}.tmp"
            with open(tmp, "w") as out:
                json.dump({"pid": os.getpid(), "servers": [s.to_arg() for s in specs]}, out)
            os.replace(tmp, ready_file)
        await stop.wait()
    finally:
        for listening in servers:
            listening.close()
        for runner in runners:
            await runner.cleanup()
        for grpc_server in grpc_servers:
            await grpc_server.stop(0.5)


def _http_app(spec: WorldServer) -> Any:
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        transport = request.transport
        status = 200
        try:
            status = int(request.query.get("status", "200"))
            delay_ms = min(int(request.query.get("delay_ms", "0")), _MAX_DELAY_MS)
        except ValueError:
            return web.Response(status=400, text="bad status/delay_ms")
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            low = name.lower()
            headers[low] = f"{headers[low]}, {value}" if low in headers else value
        report: dict[str, Any] = {
            "kind": "http",
            "server": spec.name,
            "local": _addr(transport.get_extra_info("sockname") if transport else None),
            "peer": _addr(transport.get_extra_info("peername") if transport else None),
            "method": request.method,
            "path": request.path_qs,
            "host": request.headers.get("Host"),
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": headers,
            "body": body.decode(errors="replace"),
        }
        _log(f"{spec.name}: {request.method} {request.host}{request.path_qs} -> {status}")
        return web.json_response(report, status=status, headers={"x-lab-server": spec.name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def _start_grpc(spec: WorldServer) -> Any:
    import grpc
    import grpc.aio

    async def echo(method: str, request: bytes, context: Any) -> bytes:
        metadata = {k: v if isinstance(v, str) else v.decode(errors="replace")
                    for k, v in (context.invocation_metadata() or ())}
        _log(f"{spec.name}: grpc {method} from {context.peer()}")
        context.set_trailing_metadata((("lab-server", spec.name),))
        wanted = metadata.get("lab-status")
        if wanted:
            code = getattr(grpc.StatusCode, wanted.upper(), grpc.StatusCode.UNKNOWN)
            await context.abort(code, f"{spec.name} answered {code.name} as asked")
        report = {"kind": "grpc", "server": spec.name, "local": f"{spec.address}:{spec.port}",
                  "peer": context.peer(), "method": method, "metadata": metadata,
                  "request": request.decode(errors="replace")}
        return json.dumps(report).encode()

    class AnyMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
        """Serves every unary method name, so routes can match any service/method."""

        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            method = details.method

            async def handler(request: bytes, context: Any) -> bytes:
                return await echo(method, request, context)

            return grpc.unary_unary_rpc_method_handler(handler)

    server = grpc.aio.server(handlers=[AnyMethod()])
    server.add_insecure_port(f"{spec.address}:{spec.port}")
    await server.start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egress_xds.lab.world",
                                     description="Lab world servers (TLS/HTTP/TCP).")
    parser.add_argument("--listen", action="append", default=[], metavar="KIND:ADDR:PORT[:NAME]",
                        help=f"a server to run; KIND is one of {', '.join(KINDS)}")
    parser.add_argument("--ready-file", help="written (JSON) once every listener is bound")
    parser.add_argument("--cert", help="PEM certificate chain for tls servers")
    parser.add_argument("--key", help="PEM private key for tls servers")
    args = parser.parse_args(argv)
    try:
        specs = [WorldServer.parse(item) for item in args.listen]
    except ValueError as exc:
        parser.error(str(exc))
    if not specs:
        parser.error("nothing to serve: give at least one --listen")
    asyncio.run(_serve(specs, args.ready_file, args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
