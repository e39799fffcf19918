"""Incremental translation: after a reload, only namespaces whose inputs changed are rebuilt.

``Translator.changed`` is what ``serve`` uses to decide which snapshots to rebuild; a wrong
answer either leaves a sidecar with stale policy (missed change) or wastes work.
"""

from __future__ import annotations

from typing import Any

import pytest

from egress_xds.translate import Translator
from tests.unit.manifests import (
    GLOBAL,
    egress,
    http_route,
    load,
    path_rule,
    service,
    svc_backend,
)

NAMESPACES = ["app", "team-a", "team-b", "local", GLOBAL]


def _world(**changes: Any) -> list[Any]:
    return [
        egress("internet", policy=changes.get("global_policy", "Deny")),
        egress("own", "local", networks=[changes.get("local_cidr", "203.0.113.0/24")]),
        http_route("producer", rules=[path_rule("/get")]),
        http_route("consumer-a", "team-a", en_ns=GLOBAL, rules=[path_rule(changes.get("a_path", "/a"))]),
        http_route("consumer-b", "team-b", en_ns=GLOBAL,
                   rules=[path_rule("/b", backends=[svc_backend("api", 8080)])]),
        service("api", "team-b", cluster_ip=changes.get("api_ip", "10.96.0.20"), ports=[8080]),
    ]


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param({}, [], id="nothing"),
    pytest.param({"a_path": "/a2"}, ["team-a"], id="consumer-route-in-one-namespace"),
    pytest.param({"api_ip": "10.96.0.21"}, ["team-b"], id="service-a-route-uses"),
    pytest.param({"local_cidr": "203.0.113.0/25"}, ["local"], id="local-egress-network"),
    pytest.param({"global_policy": "Allow"}, ["app", "team-a", "team-b", GLOBAL], id="global-egress-network"),
])
def test_only_namespaces_whose_inputs_changed_are_rebuilt(change: dict[str, Any], expected: list[str]) -> None:
    t = Translator()
    t.load(load(_world()).objects)
    before = {ns: t.resources(ns) for ns in NAMESPACES}
    t.load(load(_world(**change)).objects)
    assert sorted(t.changed(NAMESPACES)) == sorted(expected)
    for ns in NAMESPACES:
        if ns in expected:
            assert t.resources(ns) is not before[ns]
        else:
            assert t.resources(ns) is before[ns]


def test_a_new_namespace_is_always_built() -> None:
    t = Translator()
    t.load(load(_world()).objects)
    assert t.changed(["brand-new"]) == ["brand-new"]
    t.resources("brand-new")
    assert t.changed(["brand-new"]) == []


def _resources(t: Translator) -> dict[str, Any]:
    from egress_xds.resources import dump
    return {ns: dump(t.resources(ns)) for ns in NAMESPACES}


def _edited() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """(first objects, second objects keeping the unchanged ones, added, removed)."""
    first = load(_world()).objects
    second = [o if o.name != "consumer-a" else load(_world(a_path="/a9")).objects[3] for o in first]
    return first, second, [second[3]], [first[3]]


def test_claimed_changes_give_what_diffing_gives() -> None:
    first, second, added, removed = _edited()
    claimed, diffed, fresh = Translator(), Translator(), Translator()
    for t in (claimed, diffed):
        t.load(first)
        _resources(t)
    claimed.load(second, (added, removed))
    diffed.load(second)
    fresh.load(second)
    assert claimed.changed(NAMESPACES) == diffed.changed(NAMESPACES) == ["team-a"]
    assert _resources(claimed) == _resources(diffed) == _resources(fresh)


@pytest.mark.parametrize("wrong", ["removed-unknown", "added-known", "counts", "duplicate"])
def test_claimed_changes_that_do_not_fit_are_ignored(wrong: str) -> None:
    first, second, added, removed = _edited()
    claims = {
        "removed-unknown": (added, added),  # removes an object the translator never had
        "added-known": (first[:1] + added, removed + first[1:2]),  # adds one it already has
        "counts": ([], removed),  # the counts do not add up to the new objects
        "duplicate": (added + added, removed + removed),
    }
    t, fresh = Translator(), Translator()
    t.load(first)
    _resources(t)
    t.load(second, claims[wrong])
    fresh.load(second)
    assert t.changed(NAMESPACES) == ["team-a"]
    assert _resources(t) == _resources(fresh)
