"""Property test: incremental translation equals translation from scratch.

``serve`` keeps one ``Translator`` for its whole life: each reload patches the previous world
with the objects added and removed (``World.updated``), re-attaches only the EgressNetworks
those touch, and rebuilds only the namespaces ``changed()`` names. A mistake there leaves a
sidecar with stale policy, so after every step of a random edit sequence the long-lived
translator must agree with a fresh one on everything: the namespace list, each client
namespace's Envoy resources, explain's input (the IR) and the status report.

Edits keep unchanged objects as the same Python objects (as the file and Kubernetes sources
do) and mix removals, additions and replacements (an object of the same key, new content)
drawn from a second random world; a third of them change one object only, of any kind
(what ``Translator._reach`` decides on: a namespace it leaves out is never looked at). Called by pytest; case counts print in the summary.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from egress_xds.resources import dump
from egress_xds.translate import Translator, TranslatorOptions

from .profiles import CASE_COUNTS, profile
from .strategies import CLIENT_NAMESPACES, worlds
from .test_explain_matches_reference import load_objects

EXAMPLES = 120


def _key(obj: Any) -> tuple[str, str, str]:
    return (obj.kind, obj.metadata.namespace, obj.metadata.name)


def _unique(objects: list[Any]) -> list[Any]:
    """First object of each key, as a source delivers them (duplicates are load errors)."""
    seen: dict[tuple[str, str, str], Any] = {}
    for obj in objects:
        seen.setdefault(_key(obj), obj)
    return list(seen.values())


@st.composite
def edit_sequences(draw: st.DrawFn) -> tuple[list[Any], list[list[Any]]]:
    """A first object list, then 1-4 later lists, each derived from the one before."""
    first = _unique(load_objects(draw(worlds())))
    steps: list[list[Any]] = []
    current = first
    for _ in range(draw(st.integers(1, 4))):
        pool = _unique(load_objects(draw(worlds())))
        if draw(st.integers(0, 2)) == 0:  # one object removed, replaced or added (``Translator._reach``)
            keys = {_key(o): i for i, o in enumerate(current)}
            replacements = [o for o in pool if _key(o) in keys]
            additions = [o for o in pool if _key(o) not in keys]
            how = draw(st.sampled_from(["remove", "replace", "add"]))
            changed = list(current)
            if how == "replace" and replacements:
                new = draw(st.sampled_from(replacements))
                changed[keys[_key(new)]] = new
            elif how == "add" and additions:
                changed.append(draw(st.sampled_from(additions)))
            elif changed:
                del changed[draw(st.integers(0, len(changed) - 1))]
            current = changed
            steps.append(current)
            continue
        if draw(st.booleans()):  # a change of routes only (the translator's fastest path)
            pool = [o for o in pool if o.kind.endswith("Route")]
            kept = [o for o in current if not o.kind.endswith("Route") or draw(st.integers(0, 4))]
        else:
            kept = [o for o in current if draw(st.integers(0, 9))]  # most objects stay
        replace = {_key(o): o for o in pool if draw(st.integers(0, 5)) == 0}
        kept = [replace.pop(_key(o), o) for o in kept]  # same key, new content
        kept += [o for o in pool if _key(o) in replace and draw(st.booleans())]  # new keys
        current = _unique(kept)
        steps.append(current)
    return first, steps


def _snapshot(t: Translator, namespaces: list[str]) -> dict[str, Any]:
    return {
        "namespaces": t.namespaces(),
        "resources": {ns: dump(t.resources(ns)) for ns in namespaces},
        "egress": {ns: t.egress(ns) for ns in namespaces},
        "status": t.status_report(),
    }


@settings(profile(), max_examples=EXAMPLES)
@given(case=edit_sequences())
def test_incremental_translation_matches_a_fresh_one(case: tuple[list[Any], list[list[Any]]]) -> None:
    counts = CASE_COUNTS.setdefault("test_incremental_translation_matches_a_fresh_one", Counter())
    counts["sequences"] += 1
    first, steps = case
    long_lived = Translator(TranslatorOptions())
    long_lived.load(first)
    namespaces = sorted(set(CLIENT_NAMESPACES) | set(long_lived.namespaces()))
    before = {ns: long_lived.resources(ns) for ns in namespaces}
    previous = {id(o) for o in first}
    for objects in steps:
        counts["edits"] += 1
        moved = len({id(o) for o in objects} ^ previous)
        # the translator patches its world when less than half the objects changed
        counts["edits patched"] += 0 < moved < len(objects) // 2
        changed_objects = [o for o in objects if id(o) not in previous] + [
            o for o in long_lived._objects.values() if id(o) not in {id(x) for x in objects}]
        counts["edits of routes only"] += bool(changed_objects) and all(
            o.kind.endswith("Route") for o in changed_objects)
        counts["edits of one object"] += len({_key(o) for o in changed_objects}) == 1
        previous = {id(o) for o in objects}
        long_lived.load(objects)
        fresh = Translator(TranslatorOptions())
        fresh.load(objects)
        namespaces = sorted(set(CLIENT_NAMESPACES) | set(fresh.namespaces()))
        changed = set(long_lived.changed(namespaces))
        counts["namespaces rebuilt"] += len(changed)
        counts["namespaces kept"] += len(namespaces) - len(changed)
        for ns in namespaces:
            if ns not in changed:  # serve keeps the old snapshot of these
                assert long_lived.resources(ns) is before.get(ns), f"{ns} not rebuilt but its resources changed"
        got, want = _snapshot(long_lived, namespaces), _snapshot(fresh, namespaces)
        assert got["namespaces"] == want["namespaces"]
        for ns in namespaces:
            assert got["resources"][ns] == want["resources"][ns], f"client namespace {ns}: resources differ"
            assert got["egress"][ns] == want["egress"][ns], f"client namespace {ns}: IR differs"
        assert got["status"] == want["status"]
        before = {ns: long_lived.resources(ns) for ns in namespaces}
