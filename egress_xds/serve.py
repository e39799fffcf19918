"""``egress-xds serve | bootstrap | status``: wiring of source -> translator -> cache -> servers.

In: CLI arguments (``register`` adds the three subcommands to the ``egress-xds`` parser), a
manifest directory. Out: a running control plane: the gRPC ADS server (TCP or unix socket)
with the admin API and CSDS (or those on ``--admin-listen``), the HTTP debug endpoint, a
directory watcher that re-translates on change; or a printed Envoy bootstrap; or a
proxy-status table read from a running server's debug endpoint or admin API.
This is the only module that joins the translator (``egress_xds.translate``) to the server
side (``egress_xds.cache``, ``egress_xds.server``). Called by ``egress_xds.cli``.

Translation runs in a worker thread, one namespace at a time, so ADS streams keep being
served while a big world is translated; snapshots are installed in batches of about 50 ms of
building, namespaces with connected sidecars first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import Message

from egress_xds import bootstrap
from egress_xds.cache import InconsistentSnapshot, Snapshot, SnapshotCache
from egress_xds.model.load import LoadError
from egress_xds.server.admin import AdminServicer, ExplainQuery, add_admin_services
from egress_xds.server.ads import SERVICE as ADS_SERVICE
from egress_xds.server.ads import AdsServer, Limits
from egress_xds.server.csds import CsdsServicer
from egress_xds.server.debug import build_app
from egress_xds.server.identity import DEFAULT_TRUST_DOMAIN, SpiffeResolver
from egress_xds.server.metrics import Metrics
from egress_xds.sources import Source
from egress_xds.sources.files import FileSource
from egress_xds.translate import Translator, TranslatorOptions

log = logging.getLogger("egress_xds.serve")

DEFAULT_MANIFESTS = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_ADS_LISTEN = "127.0.0.1:18000"
DEFAULT_DEBUG_LISTEN = "127.0.0.1:19000"

# Envoy pings the ADS connection every 30 s (bootstrap); grpc's defaults would answer
# frequent pings on an idle stream with GOAWAY "too_many_pings".
GRPC_SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 60000),
    ("grpc.keepalive_timeout_ms", 10000),
]

# Built snapshots are installed (pushed) in batches of at most this much building time.
INSTALL_BATCH_SECONDS = 0.05

DEFAULT_MAX_STREAMS = 10_000
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_REQUESTS_PER_SECOND = 100.0

# ---- logging ---------------------------------------------------------------------------------

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# ---- the control plane -----------------------------------------------------------------------


@contextlib.contextmanager
def long_lived_allocations() -> Iterator[None]:
    """Collector policy while a reload allocates objects meant to live (parsed objects,
    worlds, snapshots): the oldest generation is not collected meanwhile, and what survives
    is frozen at the end (``gc.freeze``: out of every later collection, still freed by
    reference counting when dropped). A full collection over ~10^6 live objects holds the
    GIL for a few hundred ms and stalls every stream (bench part 5); young collections
    still run and free short-lived cycles."""
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, oldest)
        gc.freeze()


class ControlPlane:
    """Turns the file source into snapshots: reload on change, compute unseen namespaces."""

    def __init__(self, source: Source, translator: Translator, cache: SnapshotCache,
                 metrics: Metrics) -> None:
        self.source = source
        self.translator = translator
        self.cache = cache
        self.metrics = metrics
        self.loaded = False
        self._lock = asyncio.Lock()
        self._report: dict[str, Any] = {"objects": [], "errors": []}
        self._snapshot_errors: dict[str, dict[str, str]] = {}
        # namespace -> (the translator's resources object, its snapshot): the translator
        # returns the same object while a namespace's IR is unchanged, so nothing is
        # re-serialized for namespaces a change did not touch.
        self._built: dict[str, tuple[Any, Snapshot]] = {}

    def status(self) -> dict[str, Any]:
        """``/debug/status``: object conditions, load errors, snapshots that were refused."""
        report = dict(self._report)
        report["errors"] = list(report.get("errors", [])) + [
            self._snapshot_errors[ns] for ns in sorted(self._snapshot_errors)]
        return report

    async def reload(self) -> bool:
        """Rescan the manifests; if anything changed, translate and install snapshots."""
        async with self._lock:
            with long_lived_allocations():
                return await self._reload()

    async def _reload(self) -> bool:
        started = time.perf_counter()
        changed, load_errors = await asyncio.to_thread(self._load)
        if not changed and self.loaded:
            return False
        loaded_at = time.perf_counter()
        errors = len(load_errors)
        watched = self.cache.watched_namespaces()
        wanted = set(self.translator.namespaces()) | set(watched)
        order = sorted(wanted, key=lambda ns: (ns not in watched, ns))
        # Only namespaces whose inputs changed are rebuilt; the others keep their
        # snapshot (and its serialized bytes) untouched.
        order = await asyncio.to_thread(self.translator.changed, order)
        planned_at = time.perf_counter()
        # Snapshots are installed in batches of about INSTALL_BATCH_SECONDS of building: a
        # change to a few namespaces reaches all their streams at once, with no translation
        # competing with the push for the interpreter, and a big rebuild still reaches the
        # first sidecars early (namespaces with connected sidecars are built first).
        batch: list[tuple[str, Snapshot]] = []
        batch_started = time.perf_counter()
        for namespace in order:
            snapshot = await asyncio.to_thread(self._build, namespace)
            if snapshot is not None:
                batch.append((namespace, snapshot))
            if time.perf_counter() - batch_started >= INSTALL_BATCH_SECONDS:
                for item in batch:
                    self._install(*item)
                batch = []
                batch_started = time.perf_counter()
        for item in batch:
            self._install(*item)
        for namespace in set(self.cache.namespaces()) - wanted:
            self.cache.clear_snapshot(namespace)
            self.translator.forget(namespace)
            self._built.pop(namespace, None)
            self.metrics.config_bytes.remove(namespace)
        installed_at = time.perf_counter()
        # Statuses after the snapshots: sidecars do not wait for them. One turn of the loop
        # first: the streams just woken hand their responses to gRPC before the statuses
        # (a walk over every object, tens of ms in a big world) take the interpreter.
        await asyncio.sleep(0)
        self._report = await asyncio.to_thread(self.translator.status_report, load_errors)
        await asyncio.to_thread(self.translator.release_retired)
        elapsed = time.perf_counter() - started
        self.metrics.translation_seconds.observe(elapsed)
        self.metrics.snapshots.set(len(self.cache.namespaces()))
        self.metrics.load_errors.set(errors)
        self.loaded = True
        log.info("config reloaded", extra={
            "namespaces": len(order), "errors": errors, "seconds": round(elapsed, 4),
            # where the time went: read + parse + world update, finding the namespaces
            # to rebuild, building and installing their snapshots, statuses
            "load_seconds": round(loaded_at - started, 4),
            "plan_seconds": round(planned_at - loaded_at, 4),
            "build_seconds": round(installed_at - planned_at, 4),
            "status_seconds": round(elapsed - (installed_at - started), 4)})
        return True

    async def explain(self, query: ExplainQuery) -> dict[str, Any]:
        """Admin ``Explain``: the verdict in the world being served. Waits for a running
        reload (the translator is not shared across threads while one runs)."""
        async with self._lock:
            return await asyncio.to_thread(
                self.translator.explain, query.namespace, query.ip, query.port, sni=query.sni,
                host=query.host, path=query.path, method=query.method, headers=query.headers or None)

    async def compute(self, namespace: str) -> Snapshot | None:
        """Cache hook: the snapshot of a namespace first seen on an ADS stream."""
        async with self._lock:
            if self.cache.get_snapshot(namespace) is not None:
                return self.cache.get_snapshot(namespace)
            snapshot = await asyncio.to_thread(self._build, namespace)
            if snapshot is not None:
                self._install(namespace, snapshot)
            return snapshot

    def _load(self) -> tuple[bool, list[LoadError]]:
        changed = self.source.scan()
        if not changed and self.loaded:
            return False, []
        result = self.source.result()
        self.translator.load(result.objects, self.source.last_changes())
        return True, result.errors

    def _build(self, namespace: str) -> Snapshot | None:
        try:
            resources: dict[str, dict[str, Message]] = self.translator.resources(namespace)
        except Exception as err:  # a translator bug must not take the server down
            log.exception("translation failed", extra={"namespace": namespace})
            self._snapshot_errors[namespace] = _error(namespace, f"translation failed: {err}")
            return None
        previous = self._built.get(namespace)
        if previous is not None and previous[0] is resources:
            return previous[1]
        snapshot = Snapshot(resources)
        self._built[namespace] = (resources, snapshot)
        return snapshot

    def _install(self, namespace: str, snapshot: Snapshot) -> None:
        try:
            self.cache.set_snapshot(namespace, snapshot)
        except InconsistentSnapshot as err:
            log.error("snapshot refused, previous kept", extra={"namespace": namespace, "error": str(err)})
            self._snapshot_errors[namespace] = _error(namespace, f"snapshot not served: {err}")
            return
        self._snapshot_errors.pop(namespace, None)
        self.metrics.config_bytes.labels(namespace).set(snapshot.size_bytes)


def _namespaces_field(names: list[str], shown: int = 20) -> dict[str, Any]:
    """Log fields naming the namespaces served: all of them in a small world, the first
    ``shown`` and how many more in a big one (one log line, not a 10 kB one)."""
    if len(names) <= shown:
        return {"namespaces": names}
    return {"namespaces": [*names[:shown], f"... {len(names) - shown} more"], "namespace_count": len(names)}


def _error(namespace: str, message: str) -> dict[str, str]:
    return {"file": "", "kind": "", "namespace": namespace, "name": "", "field": "", "message": message}


# ---- the servers -----------------------------------------------------------------------------


@dataclass
class ServeConfig:
    manifests: list[str] = field(default_factory=lambda: [str(DEFAULT_MANIFESTS)])
    ads_listen: str = DEFAULT_ADS_LISTEN
    debug_listen: str = DEFAULT_DEBUG_LISTEN
    options: TranslatorOptions = field(default_factory=TranslatorOptions)
    watch: bool = True
    # How the manifests are watched: "auto" (inotify on Linux, else watchfiles), "inotify",
    # "watchfiles" (``egress_xds.sources.watch``).
    watcher: str = "auto"
    shutdown_grace: float = 2.0
    # The admin API and CSDS: "" serves them on the ADS server, else on this address.
    admin_listen: str = ""
    # ``serve --kubernetes``: a ``sources.kubernetes.KubernetesConfig``; None reads manifests.
    kubernetes: Any = None
    # TLS for the ADS (and admin) listener: PEM files. ``client_ca`` turns on mTLS, and the
    # sidecar's namespace then comes from its certificate's SPIFFE ID in ``trust_domain``.
    # The files are reread when they change (``server.tls``): rotation needs no restart.
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    max_streams: int = DEFAULT_MAX_STREAMS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_requests_per_second: float = DEFAULT_MAX_REQUESTS_PER_SECOND
    # The watched TLS files (a ``server.tls.TlsFiles``), shared by the listeners' credentials.
    _tls_files: Any = field(default=None, init=False, repr=False, compare=False)

    def grpc_options(self) -> list[tuple[str, Any]]:
        # The ADS handler enforces --max-message-bytes itself (with a log line); gRPC's own
        # limit, which rejects silently, is a backstop at twice that.
        return [*GRPC_SERVER_OPTIONS, ("grpc.max_receive_message_length", 2 * self.max_message_bytes)]

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for one listener (call it once per listener), or None for plaintext.
        New handshakes use the files as they are on disk then. Raises ValueError on a bad
        combination or unusable files and OSError on an unreadable file."""
        if not self.tls_cert and not self.tls_key:
            if self.client_ca:
                raise ValueError("--client-ca needs --tls-cert and --tls-key")
            return None
        if not (self.tls_cert and self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self._tls_files is None:
            from egress_xds.server.tls import TlsFiles

            self._tls_files = TlsFiles(self.tls_cert, self.tls_key, self.client_ca)
        return self._tls_files.credentials()

    def transport(self) -> str:
        return "mtls" if self.client_ca else "tls" if self.tls_cert else "plaintext"


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{flag} {value!r}: expected host:port")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


class Server:
    """The whole control plane in one asyncio loop; ``start()``/``stop()`` for tests and ``run``."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.cache = SnapshotCache()
        self.ads = AdsServer(
            self.cache, self.metrics,
            identity=SpiffeResolver(config.trust_domain) if config.client_ca else None,
            limits=Limits(max_streams=config.max_streams,
                          max_requests_per_second=config.max_requests_per_second,
                          burst=max(1, int(config.max_requests_per_second * 2)),
                          max_message_bytes=config.max_message_bytes))
        self.source: Source = FileSource(config.manifests, watcher=config.watcher)
        if config.kubernetes is not None:  # kubernetes is imported only in this mode
            from egress_xds.sources.kubernetes import KubernetesSource

            self.source = KubernetesSource(config.kubernetes, report=lambda: self.control_plane.status())
        self.control_plane = ControlPlane(self.source, Translator(config.options), self.cache, self.metrics)
        self.cache.compute = self.control_plane.compute
        self.admin = AdminServicer(self.cache, self.ads, self.control_plane)
        self.csds = CsdsServicer(self.cache, self.ads)
        self.ads_address = ""
        self.admin_address = ""
        self._admin_grpc: grpc.aio.Server | None = None
        self.debug_url = ""
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._stop_watch = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._serving = False

    def ready(self) -> bool:
        return self._serving and self.control_plane.loaded

    async def start(self) -> None:
        for path in self.config.manifests if self.config.kubernetes is None else ():
            if not Path(path).exists():
                raise FileNotFoundError(f"--manifests {path}: no such file or directory")
        credentials = self.config.credentials()
        await self.control_plane.reload()
        self._grpc = grpc.aio.server(options=self.config.grpc_options())
        self._grpc.add_generic_rpc_handlers([self.ads.handler()])
        if not self.config.admin_listen and not self.config.client_ca:
            add_admin_services(self._grpc, self.admin, self.csds, also_served=(ADS_SERVICE,))
        elif not self.config.admin_listen:
            # With mTLS every sidecar holds a valid client certificate; the admin API and CSDS
            # show every namespace, so they are not offered where sidecars connect.
            log.warning("admin API and CSDS not served: with --client-ca they need their own "
                        "--admin-listen (keep it on loopback or a private socket)")
        listen = self.config.ads_listen
        if listen.startswith("unix:"):
            path = listen.removeprefix("unix:").removeprefix("//")
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            _add_port(self._grpc, f"unix:{path}", credentials)
            self.ads_address = f"unix:{path}"
        else:
            host, port = _host_port(listen, "--ads-listen")
            bound = _add_port(self._grpc, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                              credentials)
            self.ads_address = f"{host}:{bound}"
        await self._grpc.start()
        if listen.startswith("unix:"):
            # Sidecars in other network namespaces (and as other users) connect through it.
            os.chmod(self.ads_address.removeprefix("unix:"), 0o666)
        self.admin_address = self.ads_address
        if self.config.admin_listen:
            self._admin_grpc = grpc.aio.server(options=self.config.grpc_options())
            add_admin_services(self._admin_grpc, self.admin, self.csds)
            # Credentials of its own: gRPC's reloadable TLS credentials serve one listener.
            self.admin_address = _bind_admin(self._admin_grpc, self.config.admin_listen, self.config.credentials())
            await self._admin_grpc.start()
        app = build_app(self.cache, self.ads, self.metrics, self.control_plane.status, self.ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = _host_port(self.config.debug_listen, "--debug-listen")
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.debug_url = f"http://{bound_host}:{bound_port}"
        if self.config.watch:
            self._watcher = asyncio.create_task(
                self.source.watch(self.control_plane.reload, self._stop_watch))
        self._serving = True
        log.info("serving", extra={"ads": self.ads_address, "admin": self.admin_address, "debug": self.debug_url,
                                   "transport": self.config.transport(),
                                   "max_streams": self.config.max_streams,
                                   "max_message_bytes": self.config.max_message_bytes,
                                   "max_requests_per_second": self.config.max_requests_per_second,
                                   "manifests": self.config.manifests,
                                   **_namespaces_field(self.cache.namespaces())})

    async def stop(self) -> None:
        """Stop accepting, end every ADS stream with status OK, stop the watcher."""
        self._serving = False
        log.info("stopping")
        self._stop_watch.set()
        self.ads.close()
        self.admin.close()
        # The ADS streams end themselves (status OK) before gRPC shuts down: a call still
        # open when the shutdown begins may be cancelled by gRPC instead (its debug log said
        # "RPC cancelled" after our "stopped"). Waiting and stopping share one grace period.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        await self.ads.wait_closed(self.config.shutdown_grace)
        if self._grpc is not None:
            await self._grpc.stop(max(0.0, deadline - loop.time()))
        if self._admin_grpc is not None:
            await self._admin_grpc.stop(self.config.shutdown_grace)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._runner is not None:
            await self._runner.cleanup()
        for address in {self.ads_address, self.admin_address}:
            if address.startswith("unix:"):
                with contextlib.suppress(OSError):
                    os.unlink(address.removeprefix("unix:"))
        log.info("stopped")


def _add_port(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


def _bind_admin(server: grpc.aio.Server, listen: str,
                credentials: grpc.ServerCredentials | None = None) -> str:
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:").removeprefix("//")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        _add_port(server, f"unix:{path}", credentials)
        return f"unix:{path}"
    host, port = _host_port(listen, "--admin-listen")
    bound = _add_port(server, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}", credentials)
    return f"{host}:{bound}"


async def serve(config: ServeConfig) -> int:
    server = Server(config)
    try:
        await server.start()
    except (OSError, ValueError, RuntimeError) as err:
        log.error("cannot start", extra={"error": str(err)})
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


# ---- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from egress_xds.commands import translator_options

    setup_logging(args.log_level)
    config = ServeConfig(
        manifests=args.manifests or [str(DEFAULT_MANIFESTS)],
        ads_listen=args.ads_listen,
        debug_listen=args.debug_listen,
        options=translator_options(args),
        admin_listen=args.admin_listen or "",
        tls_cert=args.tls_cert or "",
        tls_key=args.tls_key or "",
        client_ca=args.client_ca or "",
        trust_domain=args.trust_domain,
        max_streams=args.max_streams,
        max_message_bytes=args.max_message_bytes,
        max_requests_per_second=args.max_requests_per_second,
        watcher=args.watcher,
    )
    if args.kubernetes:
        config.kubernetes = kubernetes_config(args, config.options.controller_name)
    return asyncio.run(serve(config))


def kubernetes_config(args: argparse.Namespace, controller_name: str) -> Any:
    from egress_xds.sources.kubernetes import KubernetesConfig

    cfg = KubernetesConfig(kubeconfig=args.kubeconfig, lease_name=args.lease_name,
                           lease_duration=args.lease_duration, renew_deadline=args.lease_renew_deadline,
                           retry_period=args.lease_retry_period, resync_period=args.status_resync,
                           write_status=not args.no_status, controller_name=controller_name)
    if args.lease_namespace:
        cfg.lease_namespace = args.lease_namespace
    if not 0 < cfg.retry_period < cfg.renew_deadline < cfg.lease_duration:
        raise SystemExit("egress-xds: need 0 < --lease-retry-period < --lease-renew-deadline < --lease-duration")
    return cfg


def cmd_bootstrap(args: argparse.Namespace) -> int:
    try:
        text = bootstrap.generate(bootstrap.BootstrapOptions(
            namespace=args.namespace, node_id=args.node_id, ads=args.ads, admin=args.admin,
            outbound_port=args.outbound_port, delta=args.delta, access_log_path=args.access_log,
            tls_ca=_absolute(args.tls_ca), tls_cert=_absolute(args.tls_cert), tls_key=_absolute(args.tls_key),
            tls_server_name=args.tls_server_name or "", sds_dir=_absolute(args.sds_dir)))
    except ValueError as err:
        print(f"egress-xds bootstrap: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _absolute(path: str | None) -> str:
    return str(Path(path).absolute()) if path else ""


def fetch_proxies(debug_url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    with urllib.request.urlopen(debug_url.rstrip("/") + "/debug/proxies", timeout=timeout) as response:
        data: dict[str, Any] = json.load(response)
    proxies: list[dict[str, Any]] = data["proxies"]
    return proxies


STATUS_COLUMNS = (("CDS", "clusters"), ("EDS", "endpoints"), ("LDS", "listeners"), ("RDS", "routes"))


def proxy_table(proxies: list[dict[str, Any]]) -> str:
    """``istioctl proxy-status``-like table: one row per connected sidecar."""
    rows = [["NAME", "NAMESPACE", "MODE", *(c for c, _ in STATUS_COLUMNS), "VERSION"]]
    for proxy in proxies:
        types = proxy.get("types", {})
        cells = []
        for _, key in STATUS_COLUMNS:
            info = types.get(key)
            cells.append(info["state"] if info else "NOT SENT")
        rows.append([proxy["node_id"], proxy["namespace"], proxy["mode"].upper(), *cells,
                     (proxy.get("snapshot_version") or "-")[:12]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    if args.server:
        from egress_xds.admin import client

        try:
            proxies = client.list_proxies(args.server, tls=client.tls_from_args(args))
        except client.AdminError as err:
            print(f"egress-xds status: {err}", file=sys.stderr)
            return 1
    else:
        try:
            proxies = fetch_proxies(args.debug_url)
        except (urllib.error.URLError, OSError, ValueError) as err:
            print(f"egress-xds status: cannot read {args.debug_url}/debug/proxies: {err}", file=sys.stderr)
            return 1
    if args.output == "json":
        print(json.dumps(proxies, indent=2))
    else:
        sys.stdout.write(proxy_table(proxies))
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from egress_xds.admin import client
    from egress_xds.commands import add_translator_options

    serve_p = sub.add_parser("serve", help="run the ADS control plane on a watched manifest directory")
    serve_p.add_argument("--manifests", action="append", metavar="DIR",
                         help=f"manifest directory or file, watched for changes (repeatable; default: {DEFAULT_MANIFESTS})")
    serve_p.add_argument("--watcher", choices=("auto", "inotify", "watchfiles"), default="auto",
                         help="how --manifests are watched: inotify read by the server's event loop (Linux), "
                              "or watchfiles' polling thread (~8 ms later per change); auto: inotify "
                              "where it can be set up, else watchfiles, with a warning (default: %(default)s)")
    serve_p.add_argument("--ads-listen", default=DEFAULT_ADS_LISTEN, metavar="ADDR",
                         help="gRPC ADS address: host:port or unix:PATH (default: %(default)s)")
    serve_p.add_argument("--debug-listen", default=DEFAULT_DEBUG_LISTEN, metavar="HOST:PORT",
                         help="HTTP debug endpoint (default: %(default)s)")
    serve_p.add_argument("--admin-listen", metavar="ADDR",
                         help="gRPC admin API and CSDS: host:port or unix:PATH (default: on the ADS address)")
    serve_p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                         help="log level (default: %(default)s); logs are JSON lines on stderr")
    tls = serve_p.add_argument_group(
        "TLS for the ADS and admin listeners (default: plaintext); the files are reread when they "
        "change: new connections get the new ones, open streams are kept")
    tls.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="PEM", help="server private key (PEM)")
    tls.add_argument("--client-ca", metavar="PEM",
                     help="mTLS: require client certificates signed by this CA; the sidecar's namespace is "
                          "then taken from its SPIFFE ID spiffe://TRUST-DOMAIN/ns/NS/sa/SA")
    tls.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN,
                     help="SPIFFE trust domain client certificates must be in (default: %(default)s)")
    limits = serve_p.add_argument_group("limits (0 disables one)")
    limits.add_argument("--max-streams", type=_non_negative_int, default=DEFAULT_MAX_STREAMS, metavar="N",
                        help="ADS streams open at once; more get RESOURCE_EXHAUSTED (default: %(default)s)")
    limits.add_argument("--max-message-bytes", type=_positive_int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        metavar="BYTES", help="largest gRPC request accepted (default: %(default)s)")
    limits.add_argument("--max-requests-per-second", type=float, default=DEFAULT_MAX_REQUESTS_PER_SECOND,
                        metavar="N", help="requests per ADS stream and second, bursts of twice that; a stream "
                                          "beyond it ends with RESOURCE_EXHAUSTED (default: %(default)s)")
    add_translator_options(serve_p)
    k8s = serve_p.add_argument_group("kubernetes (instead of --manifests)")
    k8s.add_argument("--kubernetes", action="store_true",
                     help="list/watch the objects from the Kubernetes API and write their status back")
    k8s.add_argument("--kubeconfig", metavar="FILE",
                     help="kubeconfig (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
    k8s.add_argument("--lease-name", default="egress-xds", help="Lease that elects the status writer (default: %(default)s)")
    k8s.add_argument("--lease-namespace", help="namespace of the Lease (default: $POD_NAMESPACE or the pod's namespace)")
    k8s.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS", help="default: %(default)s")
    k8s.add_argument("--lease-renew-deadline", type=float, default=10.0, metavar="SECONDS", help="default: %(default)s")
    k8s.add_argument("--lease-retry-period", type=float, default=2.0, metavar="SECONDS", help="default: %(default)s")
    k8s.add_argument("--status-resync", type=float, default=60.0, metavar="SECONDS",
                     help="how often the leader reconciles every status (default: %(default)s)")
    k8s.add_argument("--no-status", action="store_true", help="never write status (no Lease either)")
    serve_p.set_defaults(func=cmd_serve)

    boot = sub.add_parser("bootstrap", help="print an Envoy sidecar bootstrap that connects to serve")
    boot.add_argument("--namespace", "-n", required=True, help="the sidecar's namespace (node.metadata.namespace)")
    boot.add_argument("--node-id", help="node id (default: sidecar~<hostname>.<namespace>)")
    boot.add_argument("--ads", default=bootstrap.DEFAULT_ADS, metavar="ADDR",
                      help="ADS server: host:port or unix:PATH (default: %(default)s)")
    boot.add_argument("--outbound-port", type=int, default=bootstrap.DEFAULT_OUTBOUND_PORT,
                      help="the outbound listener's port, recorded in node metadata (default: %(default)s)")
    boot.add_argument("--admin", default=bootstrap.DEFAULT_ADMIN, metavar="ADDR",
                      help="Envoy admin address, loopback (default: %(default)s)")
    boot.add_argument("--delta", action="store_true", help="use delta xDS (DELTA_GRPC) instead of SotW")
    boot.add_argument("--access-log", default="/dev/stdout", metavar="PATH",
                      help="admin access log path (default: %(default)s)")
    boot_tls = boot.add_argument_group("TLS to serve (default: plaintext)")
    boot_tls.add_argument("--tls-ca", metavar="PEM", help="CA that signed serve's certificate; turns TLS on")
    boot_tls.add_argument("--tls-cert", metavar="PEM",
                          help="client certificate chain for mTLS (SPIFFE ID spiffe://TD/ns/NS/sa/SA)")
    boot_tls.add_argument("--tls-key", metavar="PEM", help="client private key for mTLS")
    boot_tls.add_argument("--tls-server-name", metavar="NAME",
                          help="SNI and DNS name serve's certificate must carry (default: the --ads host)")
    boot_tls.add_argument("--sds-dir", metavar="DIR",
                          help="write file-based SDS secrets for --tls-ca/--tls-cert/--tls-key into DIR (one "
                               "per sidecar, readable by Envoy) and use them: Envoy then reloads rotated "
                               "certificate, key and CA files without a restart (default: read them once)")
    boot.set_defaults(func=cmd_bootstrap)

    status = sub.add_parser("status", help="show connected sidecars and their sync state")
    status.add_argument("--debug-url", default=f"http://{DEFAULT_DEBUG_LISTEN}",
                        help="debug endpoint of a running serve (default: %(default)s)")
    status.add_argument("--server", metavar="ADDR",
                        help="read the admin API of a running serve instead (its ADS or --admin-listen address)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    client.add_tls_arguments(status)
    status.set_defaults(func=cmd_status)
