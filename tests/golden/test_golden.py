"""Golden cases: input manifests -> the exact statuses and Envoy config per namespace.

Each folder in ``cases/`` holds ``input.yaml`` (and optionally ``namespaces.txt``: the client
namespaces to render, one per line; default: every namespace the input mentions plus an
empty namespace ``app``) and ``expected.yaml``, which shows exactly what Envoy receives.
Regenerate with ``pytest tests/golden --update-golden`` and review the diff. Every rendered
snapshot must also be accepted by the real Envoy (``envoy --mode validate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from egress_xds.model.load import load_paths
from egress_xds.resources import dump
from egress_xds.translate import Translator
from tests.support.envoy_validate import validate_resources

CASES = Path(__file__).parent / "cases"
CASE_DIRS = sorted(p for p in CASES.iterdir() if (p / "input.yaml").exists())


def render(case: Path) -> tuple[dict[str, Any], Translator, list[str]]:
    result = load_paths([case / "input.yaml"])
    translator = Translator()
    translator.load(result.objects)
    listed = case / "namespaces.txt"
    if listed.exists():
        namespaces = [n.strip() for n in listed.read_text().splitlines() if n.strip()]
    else:
        namespaces = sorted({*translator.namespaces(), "app"})
    errors = [e.as_dict() | {"file": "input.yaml"} for e in result.errors]
    out: dict[str, Any] = {
        "status": translator.status_report() | {"errors": errors},
        "namespaces": {ns: dump(translator.resources(ns)) for ns in namespaces},
    }
    return out, translator, namespaces


def test_enough_cases() -> None:
    assert len(CASE_DIRS) >= 25, f"only {len(CASE_DIRS)} golden cases"


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_golden(case: Path, update_golden: bool) -> None:
    actual, _, _ = render(case)
    expected_file = case / "expected.yaml"
    text = yaml.safe_dump(actual, sort_keys=False, width=120)
    if update_golden or not expected_file.exists():
        expected_file.write_text(text)
        if not update_golden:
            pytest.fail(f"{expected_file} did not exist; written now, review and commit it")
    assert expected_file.read_text() == text, (
        f"{case.name}: output differs from expected.yaml (run pytest --update-golden and review the diff)")


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_envoy_accepts_golden(case: Path) -> None:
    _, translator, namespaces = render(case)
    for ns in namespaces:
        validate_resources(translator.resources(ns))
