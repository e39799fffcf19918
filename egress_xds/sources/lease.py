"""Leader election on a ``coordination.k8s.io/v1`` Lease, for the Kubernetes status writer.

In: a ``CoordinationV1Api``, the Lease's name and namespace, this replica's identity and the
timings. Out: ``LeaseElector.is_leader``, true only while this replica holds the Lease and has
renewed it within ``renew_deadline``; ``on_change(bool)`` is called when that flips.
Called by ``egress_xds.sources.kubernetes`` (one elector per ``serve --kubernetes``).

Rules (client-go's ``leaderelection``, restated):
1. A Lease that does not exist is created with us as holder (409: somebody else won).
2. A Lease held by another identity is taken over only when its record (holder, renewTime,
   leaseTransitions) has not changed for ``leaseDurationSeconds`` as seen on *our* clock
   since we first observed it: clock skew between replicas does not matter.
3. Every write carries the Lease's ``resourceVersion``; a 409 Conflict means another
   replica wrote first, and we re-read.
4. The holder renews every ``retry_period``; when no renewal succeeded for
   ``renew_deadline`` (< lease duration) it stops acting as leader before anyone can take over.
5. On a clean stop the holder releases the Lease (empty holder, duration 1 s) so another
   replica takes over at once; a replica that dies simply stops renewing.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoordinationV1Api, V1Lease
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def micro_time(now: datetime | None = None) -> str:
    """A ``metav1.MicroTime``: RFC 3339 with six fraction digits, in UTC. The client
    re-serializes it with ``isoformat()``, which drops a zero fraction that the API server's
    MicroTime parser requires, so the fraction is never zero."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if moment.microsecond == 0:
        moment = moment.replace(microsecond=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, api: CoordinationV1Api, name: str, namespace: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 request_timeout: float = 10.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("lease timings need retry_period < renew_deadline < lease_duration")
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.request_timeout = request_timeout
        self.on_change = on_change
        self._leader = False
        self._last_renew = 0.0  # monotonic time of our last successful acquire/renew
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader and time.monotonic() - self._last_renew < self.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.request_timeout + 1)
        if release and self._leader:
            self._release()
        self._set_leader(False)

    # ---- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                acquired = self.try_acquire_or_renew()
            except Exception as err:  # network errors, 5xx: keep trying, step down on deadline
                log.warning("lease request failed", extra={"lease": self._label, "error": str(err)})
                acquired = False
            if acquired:
                self._last_renew = time.monotonic()
                self._set_leader(True)
            elif self._leader and time.monotonic() - self._last_renew >= self.renew_deadline:
                log.warning("lease not renewed within the deadline: stepping down",
                            extra={"lease": self._label, "identity": self.identity})
                self._set_leader(False)
            elif self._leader and not acquired and self._lost:
                self._set_leader(False)
            # A little jitter keeps replicas from polling in lockstep.
            self._stop.wait(self.retry_period * random.uniform(0.9, 1.1))

    @property
    def _label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info("leadership acquired" if leader else "leadership lost",
                 extra={"lease": self._label, "identity": self.identity})
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:
                log.exception("leadership callback failed")

    # ---- one round -----------------------------------------------------------------------

    _lost = False

    def _read(self) -> dict[str, Any] | None:
        try:
            response: Any = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                           _request_timeout=self.request_timeout)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def try_acquire_or_renew(self) -> bool:
        """One round of rules 1-4; True when we hold the Lease after it."""
        self._lost = False
        now = micro_time()
        duration = max(1, math.ceil(self.lease_duration))
        lease = self._read()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
            try:
                self.api.create_namespaced_lease(self.namespace, V1Lease.model_validate(body), _request_timeout=self.request_timeout)
            except ApiException as err:
                if err.status == 409:
                    return False
                raise
            log.info("lease created", extra={"lease": self._label, "identity": self.identity})
            return True
        spec: dict[str, Any] = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"), spec.get("acquireTime"))
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        if holder and holder != self.identity:
            self._lost = True
            held_for = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if time.monotonic() - self._observed_at < held_for:
                return False  # held by another replica that is still renewing
            log.info("lease expired: taking over", extra={"lease": self._label, "previous": holder})
        if holder == self.identity:
            spec["renewTime"] = now
            spec["leaseDurationSeconds"] = duration
        else:
            spec.update(holderIdentity=self.identity, leaseDurationSeconds=duration, acquireTime=now,
                        renewTime=now, leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, V1Lease.model_validate(lease),
                                              _request_timeout=self.request_timeout)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        self._lost = False
        return True

    def _release(self) -> None:
        try:
            lease = self._read()
            if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=micro_time())
            self.api.replace_namespaced_lease(self.name, self.namespace, V1Lease.model_validate(lease),
                                              _request_timeout=self.request_timeout)
            log.info("lease released", extra={"lease": self._label, "identity": self.identity})
        except Exception as err:
            log.warning("lease release failed", extra={"lease": self._label, "error": str(err)})
