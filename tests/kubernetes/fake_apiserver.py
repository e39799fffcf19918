"""A small Kubernetes API server for tests: the real HTTP protocol, in one process.

The official ``kubernetes`` client talks to it unmodified through a kubeconfig
(``FakeApiServer.write_kubeconfig``). It implements what egress-xds uses:

- cluster-wide ``GET`` lists of CRs (``/apis/G/V/PLURAL``) and Services (``/api/v1/services``)
  with ``metadata.resourceVersion``, ``limit``/``continue`` pages;
- ``?watch=true`` as a chunked stream of JSON lines: ADDED/MODIFIED/DELETED from the
  requested resourceVersion on, BOOKMARK every ``bookmark_interval`` when asked,
  ``timeoutSeconds``, and an ERROR event with a 410 Status for a compacted resourceVersion;
- 404 Status for a kind that is not installed (a missing CRD);
- ``PATCH`` (merge patch) and ``PUT`` on the ``status`` subresource, with a resourceVersion
  precondition (409 Conflict);
- Leases (``coordination.k8s.io/v1``): GET, POST (409 when it exists), PUT (409 on a stale
  resourceVersion).

Test knobs: ``apply``/``delete`` objects, ``compact()`` (old resourceVersions return 410),
``expire_watches()`` (ERROR 410 on every open watch), ``pause_watches()`` (events are held
back), ``uninstall``/``install`` a kind, and ``requests`` (every call, with its User-Agent).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# plural -> (group, version, kind)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "egressnetworks": ("policy.linkerd.io", "v1alpha1", "EgressNetwork"),
    "httproutes": ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
    "grpcroutes": ("gateway.networking.k8s.io", "v1", "GRPCRoute"),
    "tlsroutes": ("gateway.networking.k8s.io", "v1alpha2", "TLSRoute"),
    "tcproutes": ("gateway.networking.k8s.io", "v1alpha2", "TCPRoute"),
    "services": ("", "v1", "Service"),
    "leases": ("coordination.k8s.io", "v1", "Lease"),
}
PLURALS = {kind: plural for plural, (_, _, kind) in RESOURCES.items()}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    def __init__(self, bookmark_interval: float = 0.5) -> None:
        self.bookmark_interval = bookmark_interval
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, obj)
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.expiry = 0  # bumped by expire_watches()
        self.paused = False
        self.installed = set(RESOURCES)
        self.requests: list[dict[str, Any]] = []
        self.open_watches = 0
        self.lease_log: list[tuple[float, str | None]] = []  # (monotonic time, holder) on every lease write
        self.closing = False
        self.down = False  # every request fails with 503 and its connection is closed
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    # ---- test knobs ----------------------------------------------------------------------

    def _record(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, plural, kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update (spec/metadata; status is kept) an object, like ``kubectl apply``."""
        obj = copy.deepcopy(obj)
        plural = PLURALS[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (plural, meta["namespace"], meta["name"])
        with self.cond:
            old = self.objects.get(key)
            if old is None:
                meta.update(uid=str(uuid.uuid4()), generation=1,
                            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                obj.pop("status", None)
                event = "ADDED"
            else:
                meta.update(uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"],
                            generation=old["metadata"]["generation"] + (old.get("spec") != obj.get("spec")))
                if "status" in old:
                    obj["status"] = old["status"]
                event = "MODIFIED"
            self.objects[key] = obj
            self._record(plural, event, obj)
            return copy.deepcopy(obj)

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """What another controller's status write leaves behind."""
        with self.cond:
            obj = self.objects[(PLURALS[kind], namespace, name)]
            obj["status"] = copy.deepcopy(status)
            self._record(PLURALS[kind], "MODIFIED", obj)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        plural = PLURALS[kind]
        with self.cond:
            obj = self.objects.pop((plural, namespace, name))
            self._record(plural, "DELETED", obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects.get((PLURALS[kind], namespace, name))
            return copy.deepcopy(obj) if obj else None

    def compact(self) -> None:
        """Forget the event history: every resourceVersion seen so far is now too old."""
        with self.cond:
            self.compacted = self.rv + 1
            self.events = []

    def expire_watches(self) -> None:
        with self.cond:
            self.expiry += 1
            self.cond.notify_all()

    def pause_watches(self, paused: bool = True) -> None:
        with self.cond:
            self.paused = paused
            self.cond.notify_all()

    def uninstall(self, plural: str) -> None:
        with self.cond:
            self.installed.discard(plural)
            self.expiry += 1
            self.cond.notify_all()

    def install(self, plural: str) -> None:
        with self.cond:
            self.installed.add(plural)

    def holder_at(self, moment: float) -> str | None:
        """The Lease holder (any Lease) after the last lease write before ``moment``."""
        holder = None
        for at, who in list(self.lease_log):
            if at > moment:
                break
            holder = who
        return holder

    def status_writes(self) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"].endswith("/status") and r["method"] in ("PATCH", "PUT")
                and r["code"] == 200]

    # ---- HTTP ----------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base signature)
                return

            def _unavailable(self) -> bool:
                if not (server.down or server.closing):
                    return False
                self.close_connection = True
                self._send(503, status_body(503, "ServiceUnavailable", "the API server is down"))
                return True

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                # logged before answering, so a client that got its answer finds it logged
                server.requests.append({"method": self.command, "path": urlsplit(self.path).path, "code": code,
                                        "user_agent": self.headers.get("User-Agent", ""), "time": time.monotonic(),
                                        "body": getattr(self, "_body", None)})
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read_body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                self._body = json.loads(self.rfile.read(length) or b"null")
                return self._body

            def _route(self) -> tuple[str, str | None, str | None, bool] | None:
                """path -> (plural, namespace, name, status subresource)"""
                parts = [p for p in urlsplit(self.path).path.split("/") if p]
                if parts[:2] == ["api", "v1"]:
                    rest = parts[2:]
                elif parts[:1] == ["apis"] and len(parts) >= 3:
                    rest = parts[3:]
                    group, version = parts[1], parts[2]
                    plural = rest[2] if len(rest) >= 3 and rest[0] == "namespaces" else (rest[0] if rest else "")
                    if RESOURCES.get(plural, ("", "", ""))[:2] != (group, version):
                        return None
                else:
                    return None
                if len(rest) == 1:
                    return rest[0], None, None, False
                if len(rest) >= 3 and rest[0] == "namespaces":
                    name = rest[3] if len(rest) >= 4 else None
                    return rest[2], rest[1], name, len(rest) == 5 and rest[4] == "status"
                return None

            def _not_found(self, what: str) -> None:
                self._send(404, status_body(404, "NotFound", f"{what} not found"))

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self._unavailable():
                    return
                route = self._route()
                if route is None or route[0] not in RESOURCES or route[0] not in server.installed:
                    self._not_found("the server could not find the requested resource")
                    return
                plural, namespace, name, _ = route
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if name is not None:
                    with server.cond:
                        obj = server.objects.get((plural, namespace or "", name))
                        body = copy.deepcopy(obj) if obj else None
                    if body is None:
                        self._not_found(f'{plural} "{name}"')
                    else:
                        self._send(200, body)
                    return
                if query.get("watch") in ("true", "1"):
                    self._watch(plural, query)
                    return
                group, version, kind = RESOURCES[plural]
                with server.cond:
                    items = [copy.deepcopy(o) for (p, ns, _), o in sorted(server.objects.items())
                             if p == plural and (namespace is None or ns == namespace)]
                    rv = str(server.rv)
                start = int(query.get("continue") or 0)
                limit = int(query.get("limit") or 0)
                meta: dict[str, Any] = {"resourceVersion": rv}
                if limit and start + limit < len(items):
                    meta["continue"] = str(start + limit)
                    items = items[start:start + limit]
                else:
                    items = items[start:]
                for item in items:  # like the real server: core list items carry no kind
                    if not group:
                        item.pop("kind", None)
                        item.pop("apiVersion", None)
                self._send(200, {"kind": f"{kind}List", "apiVersion": f"{group}/{version}".lstrip("/"),
                                 "metadata": meta, "items": items})

            def _chunk(self, event: dict[str, Any]) -> None:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, plural: str, query: dict[str, str]) -> None:
                group, version, kind = RESOURCES[plural]
                timeout = float(query.get("timeoutSeconds") or 1800)
                bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                server.requests.append({"method": "WATCH", "path": urlsplit(self.path).path, "code": 200,
                                        "user_agent": self.headers.get("User-Agent", ""), "time": time.monotonic(),
                                        "query": query})
                deadline = time.monotonic() + timeout
                raw_rv = query.get("resourceVersion") or "0"
                try:
                    with server.cond:
                        expiry = server.expiry
                        if raw_rv == "0":  # from "any": synthetic ADDED events for what exists
                            last = server.rv
                            pending = [("ADDED", copy.deepcopy(o)) for (p, _, _), o in sorted(server.objects.items())
                                       if p == plural]
                        elif int(raw_rv) < server.compacted:
                            pending = None
                            last = 0
                        else:
                            last = int(raw_rv)
                            pending = []
                    if pending is None:
                        self._chunk({"type": "ERROR", "object": status_body(
                            410, "Expired", f"too old resource version: {raw_rv} ({server.compacted})")})
                        return
                    server.open_watches += 1
                    for event_type, obj in pending:
                        self._chunk({"type": event_type, "object": obj})
                    last_bookmark = time.monotonic()
                    while True:
                        with server.cond:
                            server.cond.wait(0.05)
                            if server.closing or server.down or plural not in server.installed:
                                break
                            if server.expiry != expiry:
                                out: list[dict[str, Any]] | None = None
                            elif server.paused:
                                out = []
                            else:
                                out = [{"type": t, "object": copy.deepcopy(o)} for rv, p, t, o in server.events
                                       if p == plural and rv > last]
                                if out:
                                    last = max(rv for rv, p, _, _ in server.events if p == plural and rv > last)
                            current = server.rv
                        if out is None:
                            self._chunk({"type": "ERROR", "object": status_body(
                                410, "Expired", "The resourceVersion for the provided watch is too old.")})
                            break
                        for event in out:
                            self._chunk(event)
                        now = time.monotonic()
                        if now >= deadline:
                            break
                        if bookmarks and not server.paused and now - last_bookmark >= server.bookmark_interval:
                            last_bookmark = now
                            last = max(last, current)
                            self._chunk({"type": "BOOKMARK", "object": {
                                "kind": kind, "apiVersion": f"{group}/{version}".lstrip("/"),
                                "metadata": {"resourceVersion": str(last)}}})
                    server.open_watches -= 1
                except (BrokenPipeError, ConnectionResetError):
                    server.open_watches -= 1
                    return
                finally:
                    try:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    except OSError:
                        pass
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802
                if self._unavailable():
                    return
                route = self._route()
                body = self._read_body()
                if route is None or route[0] != "leases" or route[2] is not None:
                    self._not_found("resource")
                    return
                namespace = route[1] or "default"
                name = body["metadata"]["name"]
                with server.cond:
                    if ("leases", namespace, name) in server.objects:
                        self._send(409, status_body(409, "AlreadyExists", f'leases "{name}" already exists'))
                        return
                    body["metadata"]["namespace"] = namespace
                    body["metadata"]["uid"] = str(uuid.uuid4())
                    server.objects[("leases", namespace, name)] = body
                    server.rv += 1
                    body["metadata"]["resourceVersion"] = str(server.rv)
                    server.lease_log.append((time.monotonic(), (body.get("spec") or {}).get("holderIdentity")))
                    out = copy.deepcopy(body)
                self._send(201, out)

            def _write(self, patch: bool) -> None:
                if self._unavailable():
                    return
                route = self._route()
                body = self._read_body()
                if route is None or route[0] not in server.installed or route[2] is None:
                    self._not_found("resource")
                    return
                plural, namespace, name, status = route
                key = (plural, namespace or "default", name or "")
                with server.cond:
                    obj = server.objects.get(key)
                    if obj is None:
                        self._not_found(f'{plural} "{name}"')
                        return
                    wanted = (body.get("metadata") or {}).get("resourceVersion")
                    if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                        self._send(409, status_body(409, "Conflict", f'Operation cannot be fulfilled on {plural} '
                                                    f'"{name}": the object has been modified'))
                        return
                    if not patch and wanted is None and plural == "leases":
                        self._send(422, status_body(422, "Invalid", "metadata.resourceVersion is required"))
                        return
                    new = copy.deepcopy(obj)
                    if status:
                        new["status"] = merge_patch(obj.get("status"), body.get("status")) if patch \
                            else body.get("status")
                    elif plural == "leases":
                        new["spec"] = body.get("spec")
                    else:
                        self._send(405, status_body(405, "MethodNotAllowed", "only status and leases"))
                        return
                    server.objects[key] = new
                    if plural == "leases":
                        server.rv += 1
                        new["metadata"]["resourceVersion"] = str(server.rv)
                        server.lease_log.append((time.monotonic(), (new.get("spec") or {}).get("holderIdentity")))
                    else:
                        server._record(plural, "MODIFIED", new)
                    out = copy.deepcopy(new)
                self._send(200, out)

            def do_PATCH(self) -> None:  # noqa: N802
                self._write(patch=True)

            def do_PUT(self) -> None:  # noqa: N802
                self._write(patch=False)

        return Handler
