"""Objects from the Kubernetes API: list/watch, status write-back, Lease (``serve --kubernetes``).

In: a kubeconfig (or the in-cluster service account) and ``KubernetesConfig``.
Out: the same ``scan()``/``result()``/``watch()`` surface as ``FileSource``: ``result()`` is the
``LoadResult`` of every EgressNetwork, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and Service the
API server holds (``source_file`` ""), and ``watch`` calls back after each batch of changes,
so ``egress_xds.serve`` feeds it into the same translation and snapshot path as files.
Alongside, a ``LeaseElector`` (``sources.lease``) and a ``StatusWriter``
(``sources.status_writer``) write statuses back from the Lease holder only.
Called by ``egress_xds.serve``; parses with ``egress_xds.model.load.parse_document``.

How each kind is followed (one thread per kind, the official synchronous client):
1. List (paginated), remember ``metadata.resourceVersion``, diff against what we held:
   objects that vanished are deletions, so a re-list never loses one.
2. Watch from that resourceVersion with bookmarks, a server-side ``timeoutSeconds`` (jittered)
   and a client-side read timeout; a watch that ends is resumed from the last
   resourceVersion seen (event or bookmark).
3. 410 Gone (compacted history, as an ERROR event or an HTTP status): back to 1.
4. 404 (the CRD is not installed, e.g. the experimental TLSRoute): warn, hold no objects of
   that kind, keep serving, try again every ``missing_retry`` seconds.
5. Any other failure: exponential backoff with full jitter, then back to 2 (or 1).
Changes reach the asyncio loop through ``loop.call_soon_threadsafe``; changes that arrive while
a translation runs are folded into one next translation. A change to ``status`` only (our own
writes, other controllers') does not trigger a translation.
An object that no longer validates keeps its previous version in force, as in file mode; the
error is reported on ``/debug/status`` and written to its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from egress_xds.model.load import LoadError, LoadResult, parse_document
from egress_xds.model.objects import TopLevel
from egress_xds.sources.lease import LeaseElector
from egress_xds.sources.status_writer import Key, StatusWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS: tuple[Kind, ...] = (
    Kind("EgressNetwork", "policy.linkerd.io", "v1alpha1", "egressnetworks"),
    Kind("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes"),
    Kind("GRPCRoute", "gateway.networking.k8s.io", "v1", "grpcroutes"),
    Kind("TLSRoute", "gateway.networking.k8s.io", "v1alpha2", "tlsroutes"),
    Kind("TCPRoute", "gateway.networking.k8s.io", "v1alpha2", "tcproutes"),
    Kind("Service", "", "v1", "services"),
)
KINDS_BY_NAME = {k.kind: k for k in KINDS}


def default_identity() -> str:
    """The pod name (``POD_NAME``, from the downward API) or hostname, plus a random suffix
    so a restarted replica never mistakes the previous holder's Lease for its own."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def default_lease_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or "egress-xds"
    except OSError:
        return "egress-xds"


@dataclass
class KubernetesConfig:
    kubeconfig: str | None = None  # None: in-cluster config, else ~/.kube/config semantics
    context: str | None = None
    lease_name: str = "egress-xds"
    lease_namespace: str = field(default_factory=default_lease_namespace)
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resync_period: float = 60.0  # the leader's periodic status reconcile
    write_status: bool = True
    controller_name: str = "egress-xds.io/policy-controller"
    watch_timeout: int = 300  # server-side timeoutSeconds of a watch (jittered up to 2x)
    request_timeout: float = 30.0  # client-side timeout of lists and writes
    missing_retry: float = 30.0  # how often a kind whose CRD is missing is tried again
    backoff_cap: float = 30.0
    initial_sync_timeout: float = 60.0
    page_size: int = 500


def api_client(cfg: KubernetesConfig) -> client.ApiClient:
    """In-cluster config when no kubeconfig is named and we run in a pod, else a kubeconfig."""
    try:
        if cfg.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = client.ApiClient(configuration)
        else:
            api = config.new_client_from_config(config_file=cfg.kubeconfig, context=cfg.context)
    except (config.ConfigException, OSError) as err:
        raise ValueError(f"--kubernetes: no usable cluster configuration: {err}") from None
    api.user_agent = f"egress-xds/{cfg.identity}"
    return api


class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^n))."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2 ** self.failures))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "default")), str(meta.get("name", "")))


class Reflector:
    """List then watch one kind into ``store`` (rules 1-5 of the module docstring)."""

    def __init__(self, kind: Kind, api: client.ApiClient, cfg: KubernetesConfig, lock: threading.Lock,
                 on_change: Callable[[], None]) -> None:
        self.kind = kind
        self.api = api
        self.cfg = cfg
        self.lock = lock
        self.on_change = on_change
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = threading.Event()  # listed once, or known to be missing
        self.missing = False
        self.relists = 0
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    # ---- API calls -----------------------------------------------------------------------

    def _list_func(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self.kind.group:
            return (self._custom.list_cluster_custom_object,
                    (self.kind.group, self.kind.version, self.kind.plural))
        return self._core.list_service_for_all_namespaces, ()

    def list_all(self) -> tuple[dict[tuple[str, str], dict[str, Any]], str]:
        func, args = self._list_func()
        items: dict[tuple[str, str], dict[str, Any]] = {}
        cont: str | None = None
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.cfg.page_size, "_preload_content": False,
                                      "_request_timeout": self.cfg.request_timeout}
            if cont:
                kwargs["_continue"] = cont
            response = func(*args, **kwargs)
            body = json.loads(response.data)
            meta = body.get("metadata") or {}
            resource_version = resource_version or str(meta.get("resourceVersion", ""))
            for item in body.get("items") or []:
                item.setdefault("apiVersion", self.kind.api_version)
                item.setdefault("kind", self.kind.kind)
                items[_key(item)] = item
            cont = meta.get("continue")
            if not cont:
                return items, resource_version

    # ---- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"watch-{self.kind.plural}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        current = self._watch
        if current is not None:
            current.stop()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        backoff = Backoff(cap=self.cfg.backoff_cap)
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self.relist()
                self.watch_once()
                backoff.reset()
            except ApiException as err:
                if self._stop.is_set():
                    break
                if err.status == 410:
                    log.info("watch expired (410 Gone): listing again", extra={"kind": self.kind.kind})
                    self.resource_version = None
                    self._stop.wait(random.uniform(0, 0.2))
                    continue
                if err.status == 404:
                    self._set_missing()
                    self._stop.wait(self.cfg.missing_retry * random.uniform(0.8, 1.2))
                    continue
                delay = backoff.next()
                log.warning("list/watch failed", extra={"kind": self.kind.kind, "code": err.status,
                                                        "error": str(err.reason), "retry_in": round(delay, 2)})
                self._stop.wait(delay)
            except Exception as err:  # connection refused/reset, timeouts, bad JSON
                if self._stop.is_set():
                    break
                delay = backoff.next()
                log.warning("list/watch failed", extra={"kind": self.kind.kind, "error": repr(err),
                                                        "retry_in": round(delay, 2)})
                self._stop.wait(delay)

    def _set_missing(self) -> None:
        if not self.missing:
            log.warning("kind not served by the API server (CRD not installed?): serving without it, will retry",
                        extra={"kind": self.kind.kind, "apiVersion": self.kind.api_version})
        self.missing = True
        self.resource_version = None
        with self.lock:
            had = bool(self.store)
            self.store = {}
        self.synced.set()
        if had:
            self.on_change()

    def relist(self) -> None:
        """Rule 1: list and diff against what we held, so no deletion is lost."""
        items, resource_version = self.list_all()
        with self.lock:
            old = self.store
            deleted = [k for k in old if k not in items]
            changed = [k for k, v in items.items()
                       if k not in old or old[k].get("metadata", {}).get("resourceVersion")
                       != v.get("metadata", {}).get("resourceVersion")]
            self.store = items
            self.resource_version = resource_version
        self.relists += 1
        if self.missing:
            log.info("kind is served again", extra={"kind": self.kind.kind})
            self.missing = False
        log.info("listed", extra={"kind": self.kind.kind, "objects": len(items), "resourceVersion": resource_version,
                                  "changed": len(changed), "deleted": len(deleted)})
        first = not self.synced.is_set()
        self.synced.set()
        if changed or deleted or first:
            self.on_change()

    def watch_once(self) -> None:
        """Rule 2: one watch request, until the server ends it (or an error is raised)."""
        func, args = self._list_func()
        timeout = int(self.cfg.watch_timeout * random.uniform(1.0, 2.0))
        w = watch.Watch(return_type="object")
        self._watch = w
        if self._stop.is_set():
            return
        try:
            for event in w.stream(func, *args, resource_version=self.resource_version,
                                  allow_watch_bookmarks=True, timeout_seconds=timeout,
                                  _request_timeout=(self.cfg.request_timeout, timeout + 30)):
                kind = event.get("type")
                obj = event.get("raw_object")
                if not isinstance(obj, dict):
                    continue
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    if rv:
                        self.resource_version = str(rv)
                    continue
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                with self.lock:
                    if kind in ("ADDED", "MODIFIED"):
                        self.store[_key(obj)] = obj
                    elif kind == "DELETED":
                        self.store.pop(_key(obj), None)
                    else:
                        continue
                    if rv:
                        self.resource_version = str(rv)
                self.on_change()
                if self._stop.is_set():
                    break
        finally:
            self._watch = None


def _fingerprint(obj: dict[str, Any]) -> str:
    """What translation depends on: everything but status and bookkeeping metadata."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields", "generation")}
    trimmed = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    trimmed["metadata"] = meta
    return hashlib.sha256(json.dumps(trimmed, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Parsed:
    resource_version: str | None
    fingerprint: str
    obj: TopLevel | None
    error: LoadError | None
    notice: str | None
    generation: int | None


class KubernetesSource:
    """Every kind's reflector, merged into a ``LoadResult``; plus the Lease and the status writer."""

    def __init__(self, cfg: KubernetesConfig, report: Callable[[], dict[str, Any]] | None = None,
                 api: client.ApiClient | None = None, kinds: tuple[Kind, ...] = KINDS) -> None:
        self.cfg = cfg
        self._api = api
        self._kinds = kinds
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reflectors on every change
        self._scanned: int | None = None
        self._notify: Callable[[], None] | None = None
        self.reflectors: list[Reflector] = []
        self._started = False
        self._parsed: dict[Key, _Parsed] = {}
        self._in_force: dict[Key, TopLevel] = {}  # last valid version of each object
        self._result = LoadResult()
        self._generations: dict[Key, int | None] = {}
        # The status report as of the last translation, taken on the event loop (where serve's
        # control plane lives) and read by the status writer's thread.
        self._report_fn = report
        self._latest_report: dict[str, Any] = {"objects": [], "errors": []}
        self.elector: LeaseElector | None = None
        self.writer = StatusWriter(
            report=lambda: self._latest_report, objects=self.live_objects,
            generations=lambda: dict(self._generations),
            is_leader=lambda: self.elector is not None and self.elector.is_leader,
            patch=self._patch_status, controller_name=cfg.controller_name, resync_period=cfg.resync_period)
        self._custom: client.CustomObjectsApi | None = None

    def _connect(self) -> None:
        """The API client, reflectors and elector (on the first ``start``: a missing
        kubeconfig is then a start-up error of ``serve``, not a crash)."""
        api = self._api or api_client(self.cfg)
        self._api = api
        self.reflectors = [Reflector(k, api, self.cfg, self._lock, self._changed) for k in self._kinds]
        self.elector = LeaseElector(
            client.CoordinationV1Api(api), self.cfg.lease_name, self.cfg.lease_namespace, self.cfg.identity,
            lease_duration=self.cfg.lease_duration, renew_deadline=self.cfg.renew_deadline,
            retry_period=self.cfg.retry_period, request_timeout=self.cfg.request_timeout,
            on_change=self._leadership_changed)
        self._custom = client.CustomObjectsApi(api)

    # ---- reflectors -> loop --------------------------------------------------------------

    def _changed(self) -> None:
        with self._lock:
            self._generation += 1
        notify = self._notify
        if notify is not None:
            try:
                notify()
            except RuntimeError:  # the loop is closed: we are stopping
                pass

    def start(self) -> None:
        """Start the reflectors (idempotent) and wait, bounded, for every kind's first list
        (a kind whose CRD is missing counts as listed); RuntimeError when that times out."""
        if self._started:
            return
        self._connect()
        self._started = True
        for reflector in self.reflectors:
            reflector.start()
        deadline = time.monotonic() + self.cfg.initial_sync_timeout
        unsynced = [r.kind.kind for r in self.reflectors
                    if not r.synced.wait(max(0.0, deadline - time.monotonic()))]
        if unsynced:
            # Fail closed: serving a world without its EgressNetworks would let every
            # connection out. ``serve`` exits 1 and the kubelet restarts it with backoff.
            for reflector in self.reflectors:
                reflector.stop()
            self._started = False
            raise RuntimeError(f"cannot list {', '.join(unsynced)} from the Kubernetes API within "
                               f"{self.cfg.initial_sync_timeout:g} s")
        if self.cfg.write_status and self.elector is not None:
            self.elector.start()
            self.writer.start()

    def stop(self, release: bool = True) -> None:
        for reflector in self.reflectors:
            reflector.stop()
        if self.cfg.write_status and self._started and self.elector is not None:
            self.writer.stop()
            self.elector.stop(release=release)
        for reflector in self.reflectors:
            reflector.join(2.0)

    def _leadership_changed(self, leader: bool) -> None:
        if leader:
            self.writer.kick()

    # ---- the FileSource surface ----------------------------------------------------------

    def scan(self) -> bool:
        """Bring ``result()`` up to date; True when what translation sees changed.

        Blocks on the first call until every kind was listed once (bounded)."""
        self.start()
        with self._lock:
            generation = self._generation
            stores = {r.kind.kind: list(r.store.values()) for r in self.reflectors}
        if self._scanned == generation:
            return False
        first = self._scanned is None
        self._scanned = generation
        parsed: dict[Key, _Parsed] = {}
        changed = first
        for kind, objects in stores.items():
            for raw in objects:
                namespace, name = _key(raw)
                key = (kind, namespace, name)
                resource_version = (raw.get("metadata") or {}).get("resourceVersion")
                previous = self._parsed.get(key)
                if previous is not None and resource_version and previous.resource_version == resource_version:
                    parsed[key] = previous
                    continue
                fingerprint = _fingerprint(raw)
                if previous is not None and previous.fingerprint == fingerprint:  # status-only change
                    parsed[key] = _Parsed(resource_version, fingerprint, previous.obj, previous.error,
                                          previous.notice, previous.generation)
                    continue
                obj, error, notice = parse_document(raw, file="")
                parsed[key] = _Parsed(resource_version, fingerprint, obj, error, notice,
                                      (raw.get("metadata") or {}).get("generation"))
                changed = True
                if error is not None:
                    log.warning("invalid object", extra={"error": str(error)})
        if set(parsed) != set(self._parsed):
            changed = True
        self._parsed = parsed
        if not changed:
            return False
        in_force: dict[Key, TopLevel] = {}
        result = LoadResult()
        generations: dict[Key, int | None] = {}
        for key in sorted(parsed):
            entry = parsed[key]
            if entry.obj is not None:
                in_force[key] = entry.obj
                generations[key] = entry.generation
            elif key in self._in_force:  # invalid now: the previous version stays in force
                in_force[key] = self._in_force[key]
                generations[key] = self._in_force[key].metadata.generation
                result.notices.append(f"{key[0]} {key[1]}/{key[2]}: keeping the previous version until it is fixed")
            if entry.error is not None:
                result.errors.append(entry.error)
            if entry.notice is not None:
                result.notices.append(entry.notice)
        result.objects = [in_force[k] for k in sorted(in_force)]
        self._in_force = in_force
        self._generations = generations
        self._result = result
        log.info("kubernetes objects loaded", extra={"objects": len(result.objects), "errors": len(result.errors)})
        return True

    def result(self) -> LoadResult:
        return self._result

    def last_changes(self) -> tuple[list[TopLevel], list[TopLevel]] | None:
        return None  # the translator diffs the objects in force (kept by identity) itself

    async def watch(self, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        """Call ``on_change`` after each batch of API changes until ``stop``; then stop the
        reflectors, the status writer and release the Lease."""
        loop = asyncio.get_running_loop()
        dirty = asyncio.Event()
        def notify() -> None:
            loop.call_soon_threadsafe(dirty.set)

        self._notify = notify
        await asyncio.to_thread(self.start)
        self._capture_report()
        if self._scanned != self._generation:
            dirty.set()
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(dirty.wait())
                done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    break
                dirty.clear()
                try:
                    await on_change()
                except Exception:
                    log.exception("reload failed")
                self._capture_report()
                self.writer.kick()
        finally:
            stopper.cancel()
            self._notify = None
            # A thread of its own: a stop queued on the loop's executor would be dropped
            # if ``serve`` cancels this task before a worker picks it up.
            stopping = threading.Thread(target=self.stop, name="kubernetes-stop", daemon=True)
            stopping.start()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(asyncio.to_thread(stopping.join, 10))

    # ---- status --------------------------------------------------------------------------

    def _capture_report(self) -> None:
        if self._report_fn is not None:
            self._latest_report = self._report_fn()
        else:  # no translator attached: report load errors only
            self._latest_report = {"objects": [], "errors": [e.as_dict() for e in self._result.errors]}

    def live_objects(self) -> list[dict[str, Any]]:
        with self._lock:
            return [obj for r in self.reflectors if r.kind.group for obj in r.store.values()]

    def _patch_status(self, raw: dict[str, Any], status: dict[str, Any]) -> None:
        kind = KINDS_BY_NAME[raw["kind"]]
        meta = raw.get("metadata") or {}
        assert self._custom is not None, "status written before start()"
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": status}
        self._custom.patch_namespaced_custom_object_status(
            kind.group, kind.version, meta.get("namespace", "default"), kind.plural, meta["name"], body,
            _content_type="application/merge-patch+json", _request_timeout=self.cfg.request_timeout)
