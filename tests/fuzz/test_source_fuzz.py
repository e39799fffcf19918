"""Fuzzing the watched manifest directory (``FileSource``) with hostile changes (issue 7).

In: hypothesis-drawn operation lists from ``dirmodel.operations(racy=True)``, applied to a
real directory one by one, with a ``FileSource.scan()`` after each, and two races injected
into the scan itself: a file deleted between listing and reading, and a file rewritten (torn
in half) right after it was read. Out: after every scan, the objects in force (file, name,
trafficPolicy, in merge order) and the errors (file, kind, namespace, name, field) equal
``dirmodel.Model``'s: a file that cannot be read or parsed keeps its previous objects, an
invalid object keeps its previous version, valid objects elsewhere are untouched, duplicates
are reported at the later path. ``scan`` never raises and never blocks (FIFOs, dangling and
looping symlinks, directories named like manifests).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings

from egress_xds.sources.files import FileSource
from tests.property.profiles import profile

from .counts import counter
from .dirmodel import (
    BASELINE,
    EVERY_OPERATION,
    RACES,
    Content,
    Directory,
    Injector,
    Model,
    Op,
    fmt,
    operations,
    render,
)

SOURCE_EXAMPLES = 250


@pytest.fixture(autouse=True)
def quiet_source_logs() -> Iterator[None]:
    """Every broken file logs a warning; thousands of them would only slow the run down."""
    logger = logging.getLogger("egress_xds.sources.files")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# id(source) -> the objects of its previous result, to check ``last_changes`` against.
_PREVIOUS: dict[int, list[object]] = {}
CHANGES: Counter[str] = Counter()


def check(source: FileSource, model: Model, root: Path, step: str) -> None:
    result = source.result()
    changes = source.last_changes()
    previous = _PREVIOUS.get(id(source))
    if changes is not None:  # what the translator then trusts instead of diffing
        assert previous is not None, f"changes claimed for a first result, after {step}"
        now, before = {id(o) for o in result.objects}, {id(o) for o in previous}
        assert sorted(map(id, changes[0])) == sorted(now - before), f"added objects wrong after {step}"
        assert sorted(map(id, changes[1])) == sorted(before - now), f"removed objects wrong after {step}"
        CHANGES["checked"] += 1
    else:
        CHANGES["unknown"] += 1
    _PREVIOUS[id(source)] = list(result.objects)
    got = [(o.source_file, o.name, o.spec.trafficPolicy) for o in result.objects]  # type: ignore[attr-defined]
    want_objects, want_errors = model.expected(root)
    errors = sorted((e.file, e.kind, e.namespace, e.name, e.field) for e in result.errors)
    context = f"after {step}\ndisk: {model.fs}\nerrors: {[str(e) for e in result.errors]}"
    assert got == want_objects, context
    assert errors == want_errors, context
    for error in result.errors:
        if not error.kind:
            assert error.message.startswith(("cannot parse", "cannot read")), str(error)


def linked(model: Model, path: str) -> bool:
    return any(entry[0] == "link" and entry[1] == path for entry in model.fs.values())


def racy(op: Op, directory: Directory, source: FileSource, model: Model, root: Path) -> str:
    """Run a racing operation; return what actually ran (for counting)."""
    kind, path = op[0], op[1]
    entry = model.fs.get(path, ("",))
    injector = Injector()
    if kind == "racy_delete":
        if entry[0] != "file" or linked(model, path):
            directory.apply(("delete", path))
            source.scan()
            model.scan()
            return "delete"
        data = render(entry[1], entry[2])
        directory._swap_in(path, lambda p: p.write_bytes(data))  # same bytes, a new inode: read
        with injector.delete_before_read(root / path):
            source.scan()
        model.scan(unreadable=frozenset({path}))  # listed, then gone: previous objects kept
        check(source, model, root, f"{op} (deleted between listing and reading)")
        model.apply(op)
        source.scan()
        model.scan()
        return kind
    content: Content = op[2]
    if entry[0] == "dir" or linked(model, path):
        directory.apply(("write", path, content, True))
        source.scan()
        model.scan()
        return "write"
    directory.write(path, content, True)
    model.apply(op)
    with injector.torn_after_read(root / path):
        source.scan()
    model.scan()  # what was read is the whole file
    check(source, model, root, f"{op} (torn right after it was read)")
    (root / path).write_bytes(render(content, fmt(path)))  # the writer finishes: same bytes
    source.scan()
    model.scan()
    return kind


def test_file_source_under_hostile_changes(record_property: Any) -> None:
    counts = counter("test_file_source_under_hostile_changes")

    @settings(profile(), max_examples=SOURCE_EXAMPLES)
    @given(ops=operations(racy=True))
    @example(ops=EVERY_OPERATION)
    @example(ops=RACES)
    def run(ops: list[Op]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "manifests"
            root.mkdir()
            model = Model()
            directory = Directory(root, model)
            directory.reset(BASELINE)
            source = FileSource([root])
            source.scan()
            model.scan()
            check(source, model, root, "baseline")
            for op in ops:
                if op[0] in ("racy_delete", "torn_write"):
                    ran = racy(op, directory, source, model, root)
                else:
                    directory.apply(op)
                    source.scan()
                    model.scan()
                    ran = op[0]
                check(source, model, root, str(op))
                counts[f"op_{ran}"] += 1
                counts["steps"] += 1
        counts["sequences"] += 1

    run()
    counts["steps with last_changes checked"] = CHANGES["checked"]
    for key, value in sorted(counts.items()):
        record_property(key, value)
    assert counts["sequences"] >= min(SOURCE_EXAMPLES, 50)
    assert CHANGES["checked"] >= counts["steps"] // 4


def test_a_file_torn_after_it_was_read_is_not_kept_half_parsed(tmp_path: Path) -> None:
    """Regression: the scan hashed the file in one read and parsed it in a second one, so a
    writer between the two left the half-written parse in force under the hash of the whole
    file, and every later scan skipped the file as unchanged."""
    model = Model()
    directory = Directory(tmp_path, model)
    directory.reset(BASELINE)
    source = FileSource([tmp_path])
    source.scan()
    model.scan()
    many = Content(tuple(("ok", f"n{i}", "Deny") for i in range(4)))
    racy(("torn_write", "a.yaml", many), directory, source, model, tmp_path)
    check(source, model, tmp_path, "torn write")
    assert len(source.result().objects) == 4


def test_an_unreadable_entry_is_reported_once(tmp_path: Path) -> None:
    """Regression: a dangling symlink was re-read and reported as a change on every scan, so
    every filesystem event anywhere re-translated everything."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "dangling.yaml").symlink_to(tmp_path / "outside.yaml")
    os.mkfifo(root / "fifo.yaml")
    source = FileSource([root])
    assert source.scan()
    assert [e.file for e in source.result().errors] == [str(root / "dangling.yaml"), str(root / "fifo.yaml")]
    assert not source.scan() and not source.scan()
    (tmp_path / "outside.yaml").write_bytes(render(BASELINE["b.yml"], ".yaml"))  # the link now resolves
    assert source.scan()
    assert [(o.source_file, o.name) for o in source.result().objects] == [(str(root / "dangling.yaml"), "n2")]
