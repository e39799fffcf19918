"""Status write-back for Kubernetes mode (spec §5): what to write, and the leader's loop.

In: the latest status report (``Translator.status_report`` via ``ControlPlane.status``, shape
``{"objects": [{kind, namespace, name, conditions, parents}], "errors": [...]}``), the live
objects as the API server last sent them (status included), the generation of each object the
report was computed from, and whether this replica holds the Lease.
Out: merge patches on the status subresource, only where something other than
``lastTransitionTime`` differs. Called by ``egress_xds.sources.kubernetes``.

Rules:
1. EgressNetwork: ``status.conditions`` gets our condition types (``Accepted``); conditions of
   other types are kept.
2. Routes: ``status.parents`` keeps every entry whose ``controllerName`` is not ours untouched
   (in their order) and then lists ours, one per EgressNetwork parentRef. A route that no
   longer has an EgressNetwork parent loses our entries.
3. Each condition carries ``observedGeneration`` (the generation the report describes) and a
   ``lastTransitionTime`` kept from the live condition of the same type when its status did
   not change.
4. An object the loader rejected gets ``Accepted=False``: reason ``Invalid`` on an
   EgressNetwork, ``UnsupportedValue`` on each EgressNetwork parent of a route, with the
   loader's message (the previous valid version, if any, stays in force).
5. The patch carries the live ``resourceVersion``: a concurrent writer gets a 409 instead of
   being overwritten, and the next event or resync tries again.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

POLICY_GROUP = "policy.linkerd.io"
STATUS_KINDS = ("EgressNetwork", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute")

Key = tuple[str, str, str]  # kind, namespace, name


def k8s_time(now: datetime | None = None) -> str:
    """A ``metav1.Time``: RFC 3339, seconds, UTC."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_time(conditions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


def _strip(status: dict[str, Any]) -> Any:
    out = copy.deepcopy(status)
    for cond_list in [out.get("conditions") or []] + [p.get("conditions") or [] for p in out.get("parents") or []]:
        for cond in cond_list:
            cond.pop("lastTransitionTime", None)
    return out


def merge_conditions(desired: list[dict[str, Any]], live: list[dict[str, Any]], generation: int | None,
                     now: str) -> list[dict[str, Any]]:
    """Rule 3: our conditions, stamped, keeping unchanged ``lastTransitionTime``s."""
    out = []
    for cond in desired:
        previous = next((c for c in live if c.get("type") == cond["type"]), None)
        keep = previous is not None and previous.get("status") == cond["status"] and previous.get("lastTransitionTime")
        stamped = {"type": cond["type"], "status": cond["status"], "reason": cond["reason"],
                   "message": cond.get("message", ""),
                   "lastTransitionTime": previous["lastTransitionTime"] if keep and previous else now}
        if generation is not None:
            stamped["observedGeneration"] = generation
        out.append(stamped)
    return out


def _invalid_parents(raw: dict[str, Any], message: str) -> list[dict[str, Any]]:
    namespace = raw.get("metadata", {}).get("namespace", "default")
    parents = []
    for ref in (raw.get("spec") or {}).get("parentRefs") or []:
        if not isinstance(ref, dict) or ref.get("group") != POLICY_GROUP or ref.get("kind") != "EgressNetwork":
            continue
        parent = {"group": POLICY_GROUP, "kind": "EgressNetwork",
                  "namespace": ref.get("namespace") or namespace, "name": ref.get("name", "")}
        if ref.get("port") is not None:
            parent["port"] = ref["port"]
        parents.append({"parentRef": parent,
                        "conditions": [{"type": "Accepted", "status": "False", "reason": "UnsupportedValue",
                                        "message": message}]})
    return parents


def desired_status(raw: dict[str, Any], entry: dict[str, Any] | None, error: dict[str, Any] | None,
                   controller_name: str, generation: int | None, now: str) -> dict[str, Any] | None:
    """The full new ``status`` of one live object, or None when nothing but times would change."""
    kind = raw.get("kind", "")
    live: dict[str, Any] = raw.get("status") or {}
    if error is not None:
        message = f"field {error['field']}: {error['message']}" if error.get("field") else error["message"]
    new = copy.deepcopy(live)
    if kind == "EgressNetwork":
        if error is not None:
            ours = [{"type": "Accepted", "status": "False", "reason": "Invalid", "message": message}]
        elif entry is not None:
            ours = entry["conditions"]
        else:
            return None
        live_conditions = [c for c in live.get("conditions") or [] if isinstance(c, dict)]
        types = {c["type"] for c in ours}
        new["conditions"] = merge_conditions(ours, live_conditions, generation, now) + [
            c for c in live_conditions if c.get("type") not in types]
    elif kind in STATUS_KINDS:
        if error is not None:
            our_parents = _invalid_parents(raw, message)
        else:
            our_parents = [{"parentRef": p["parentRef"], "conditions": p["conditions"]}
                           for p in (entry or {}).get("parents", [])]
        live_parents = [p for p in live.get("parents") or [] if isinstance(p, dict)]
        others = [p for p in live_parents if p.get("controllerName") != controller_name]
        mine = [p for p in live_parents if p.get("controllerName") == controller_name]
        stamped = []
        for parent in our_parents:
            previous = next((p for p in mine if p.get("parentRef") == parent["parentRef"]), {})
            stamped.append({"parentRef": parent["parentRef"], "controllerName": controller_name,
                            "conditions": merge_conditions(parent["conditions"], previous.get("conditions") or [],
                                                           generation, now)})
        if not stamped and not mine:
            return None
        new["parents"] = others + stamped
    else:
        return None
    if _strip(new) == _strip(live):
        return None
    return new


class StatusWriter:
    """The leader's reconcile loop: after every translation, on becoming leader, every
    ``resync_period``; writes nothing while this replica is not the leader."""

    def __init__(self, *, report: Callable[[], dict[str, Any]],
                 objects: Callable[[], list[dict[str, Any]]],
                 generations: Callable[[], dict[Key, int | None]],
                 is_leader: Callable[[], bool],
                 patch: Callable[[dict[str, Any], dict[str, Any]], None],
                 controller_name: str, resync_period: float = 30.0) -> None:
        self.report = report
        self.objects = objects
        self.generations = generations
        self.is_leader = is_leader
        self.patch = patch
        self.controller_name = controller_name
        self.resync_period = resync_period
        self.writes = 0
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def kick(self) -> None:
        """Reconcile soon (after a translation, or on becoming leader)."""
        self._kick.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.resync_period)
            self._kick.clear()
            if self._stop.is_set():
                break
            if not self.is_leader():
                continue
            try:
                self.reconcile()
            except Exception:
                log.exception("status reconcile failed")

    def reconcile(self) -> int:
        """Write every status that differs; the number of writes."""
        report = self.report()
        entries: dict[Key, dict[str, Any]] = {
            (o["kind"], o["namespace"], o["name"]): o for o in report.get("objects", [])}
        errors: dict[Key, dict[str, Any]] = {}
        for error in report.get("errors", []):
            if error.get("kind") in STATUS_KINDS and error.get("name") and not error.get("file"):
                errors.setdefault((error["kind"], error["namespace"], error["name"]), error)
        generations = self.generations()
        now = k8s_time()
        written = 0
        for raw in self.objects():
            meta = raw.get("metadata", {})
            key = (raw.get("kind", ""), meta.get("namespace", "default"), meta.get("name", ""))
            if key[0] not in STATUS_KINDS:
                continue
            error = errors.get(key)
            generation = meta.get("generation") if error is not None else generations.get(key, meta.get("generation"))
            status = desired_status(raw, entries.get(key), error, self.controller_name, generation, now)
            if status is None:
                continue
            if not self.is_leader():
                return written
            try:
                self.patch(raw, status)
            except Exception as err:
                code = getattr(err, "status", None)
                if code in (404, 409):  # deleted or changed meanwhile: the next event retries
                    log.info("status write skipped", extra={"object": "/".join(key), "code": code})
                    continue
                log.warning("status write failed", extra={"object": "/".join(key), "error": str(err)})
                continue
            written += 1
            self.writes += 1
            log.info("status written", extra={"object": "/".join(key)})
        return written
