"""Property tests: random egress worlds against the spec's reference and against real Envoy.

1. ``explain`` agrees with ``reference.py`` (written from egress-semantics.md, not from the
   product) on the governing EgressNetwork, the route, the action and the destination, for
   random (namespace, IP, port, SNI | HTTP host/path/method | opaque bytes) queries.
2. The resources built for each client namespace of a random world pass
   ``envoy --mode validate``.

Worlds come from ``strategies.py``, plus the hand-written corners of ``corners.py`` (run first,
every time); the profile (derandomized under CI=true) from
``profiles.py``. The number of generated cases is printed in the terminal summary.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings

from egress_xds.model.load import parse_document
from egress_xds.translate import Translator, TranslatorOptions
from tests.support.envoy_validate import validate_resources

from .corners import CORNER_CASES
from .profiles import CASE_COUNTS, profile
from .reference import World, en_is_valid
from .strategies import CLIENT_NAMESPACES, Query, cases, worlds

EXPLAIN_EXAMPLES = 600
ENVOY_EXAMPLES = 15
COMPARED = ("egress_network", "route", "action", "destination")


def load_objects(manifests: list[dict[str, Any]]) -> list[Any]:
    """Parse every manifest with the product's loader; it must reject exactly what the spec rejects."""
    objects = []
    for index, doc in enumerate(manifests):
        obj, error, notice = parse_document(doc, f"world-{index}.yaml")
        expect_valid = doc["kind"] != "EgressNetwork" or en_is_valid(doc)
        assert notice is None, notice
        if expect_valid:
            assert error is None and obj is not None, f"loader rejected a valid object: {error}\n{dump(doc)}"
            objects.append(obj)
        else:
            assert obj is None and error is not None, f"loader accepted an invalid object:\n{dump(doc)}"
    return objects


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=None, width=120)


def describe(manifests: list[dict[str, Any]], query: Query, got: dict[str, Any], want: dict[str, Any]) -> str:
    return (
        "explain disagrees with the reference\n"
        f"query: explain({query.namespace!r}, {query.ip!r}, {query.port}, **{query.kwargs()!r})\n"
        f"product:   {got}\n"
        f"reference: {want}\n"
        "world:\n---\n" + "---\n".join(dump(d) for d in manifests)
    )


def with_corner_cases(test: Any) -> Any:
    for case in reversed(CORNER_CASES):
        test = example(case=case)(test)
    return test


@settings(profile(), max_examples=EXPLAIN_EXAMPLES)
@given(case=cases())
@with_corner_cases
def test_explain_matches_reference(case: tuple[list[dict[str, Any]], list[Query]]) -> None:
    manifests, queries = case
    counts = CASE_COUNTS.setdefault("test_explain_matches_reference", Counter())
    counts["worlds"] += 1
    translator = Translator(TranslatorOptions())
    translator.load(load_objects(manifests))
    reference = World(manifests)
    for query in queries:
        got = translator.explain(query.namespace, query.ip, query.port, **query.kwargs())
        want = reference.explain(query.namespace, query.ip, query.port, **query.kwargs())
        counts["queries"] += 1
        counts["routed" if want["route"] not in (None, "default") else "unrouted"] += 1
        assert {k: got.get(k) for k in COMPARED} == want, describe(manifests, query, got, want)


@pytest.mark.envoy
@settings(profile(), max_examples=ENVOY_EXAMPLES)
@given(manifests=worlds())
def test_generated_config_is_accepted_by_envoy(manifests: list[dict[str, Any]]) -> None:
    counts = CASE_COUNTS.setdefault("test_generated_config_is_accepted_by_envoy", Counter())
    counts["worlds"] += 1
    translator = Translator(TranslatorOptions())
    translator.load(load_objects(manifests))
    for namespace in CLIENT_NAMESPACES:
        resources = translator.resources(namespace)
        try:
            validate_resources(resources)
        except AssertionError as err:
            raise AssertionError(f"client namespace {namespace}: {err}\nworld:\n---\n"
                                 + "---\n".join(dump(d) for d in manifests)) from None
        counts["namespaces validated"] += 1
