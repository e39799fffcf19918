"""The manifest watchers (egress_xds.sources.watch): bursts, directories that appear and move,
queue overflow, and the fallback to watchfiles when inotify cannot be set up."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import Event, flags

from egress_xds.sources import watch as watch_module
from egress_xds.sources.files import FileSource
from egress_xds.sources.watch import Batch, InotifyTree, Root, watch


class Deliveries:
    """A running ``watch`` whose batches are kept in order."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.arrived = asyncio.Event()

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.arrived.set()

    async def next(self, timeout: float = 3.0) -> set[str]:
        """The paths of the next batch."""
        await asyncio.wait_for(self.arrived.wait(), timeout)
        batch = self.batches.pop(0)
        if not self.batches:
            self.arrived.clear()
        return {path for _change, path in batch}

    async def until(self, path: Path, timeout: float = 3.0) -> None:
        """Batches until one names ``path``."""
        async with asyncio.timeout(timeout):
            while str(path) not in await self.next():
                pass


@contextlib.asynccontextmanager
async def running(roots: list[Root], watcher: str = "inotify") -> AsyncIterator[Deliveries]:
    deliveries = Deliveries()
    stop = asyncio.Event()
    task = asyncio.create_task(watch(roots, deliveries, stop, watcher))
    await asyncio.sleep(0.05 if watcher == "inotify" else 0.5)  # watches in place
    try:
        yield deliveries
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


@pytest.fixture
async def tree(tmp_path: Path) -> AsyncIterator[Deliveries]:
    async with running([Root(str(tmp_path), True)]) as deliveries:
        yield deliveries


async def test_a_burst_is_one_batch(tmp_path: Path, tree: Deliveries) -> None:
    for i in range(20):  # an editor's atomic save, 20 times over, in one turn of the loop
        (tmp_path / f".f{i}.yaml.tmp").write_text("x")
        os.replace(tmp_path / f".f{i}.yaml.tmp", tmp_path / f"f{i}.yaml")
    paths = await tree.next()
    assert {str(tmp_path / f"f{i}.yaml") for i in range(20)} <= paths
    await asyncio.sleep(0.1)
    assert not tree.batches


async def test_events_closer_than_the_quiet_time_are_one_batch_up_to_the_debounce(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_module, "QUIET_SECONDS", 0.2)  # scaled up: no timing luck needed
    monkeypatch.setattr(watch_module, "DEBOUNCE_SECONDS", 0.6)
    async with running([Root(str(tmp_path), True)]) as tree:
        for i in range(4):  # 4 writes 20 ms apart: one batch, 0.2 s after the last
            (tmp_path / f"f{i}.yaml").write_text("x")
            await asyncio.sleep(0.02)
        assert await tree.next() == {str(tmp_path / f"f{i}.yaml") for i in range(4)}
        for i in range(12):  # a write every 0.1 s for 1.2 s: delivered every 0.6 s meanwhile
            (tmp_path / "busy.yaml").write_text(str(i))
            await asyncio.sleep(0.1)
        assert tree.batches, "a burst that goes on waits no longer than the debounce time"


async def test_a_new_directory_is_watched_with_the_tree_below_it(tmp_path: Path, tree: Deliveries) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "early.yaml").write_text("x")  # may come before a/b is watched
    assert str(tmp_path / "a") in await tree.next()  # a directory: the next scan is a full one
    (tmp_path / "a" / "b" / "late.yaml").write_text("x")
    await tree.until(tmp_path / "a" / "b" / "late.yaml")


async def test_a_moved_directory_reports_its_new_paths(tmp_path: Path) -> None:
    (tmp_path / "old" / "deep").mkdir(parents=True)
    async with running([Root(str(tmp_path), True)]) as tree:
        (tmp_path / "old").rename(tmp_path / "new")
        paths = await tree.next()
        assert {str(tmp_path / "old"), str(tmp_path / "new")} <= paths
        (tmp_path / "new" / "deep" / "f.yaml").write_text("x")
        paths = await tree.next()
        assert str(tmp_path / "new" / "deep" / "f.yaml") in paths
        assert not any(p.startswith(str(tmp_path / "old")) for p in paths)


async def test_a_moved_away_directory_is_no_longer_watched(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    async with running([Root(str(root), True)]) as tree:
        (root / "sub").rename(outside / "sub")
        assert str(root / "sub") in await tree.next()
        (outside / "sub" / "f.yaml").write_text("x")
        (root / "marker.yaml").write_text("x")
        assert await tree.next() == {str(root / "marker.yaml")}


async def test_a_file_root_watches_its_directory_alone(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "one.yaml"
    manifest.write_text("x")
    source = FileSource([manifest])
    assert source.watch_roots() == [Root(str(tmp_path), False)]
    async with running(source.watch_roots()) as tree:
        (tmp_path / "sub" / "f.yaml").write_text("x")
        manifest.write_text("y")
        assert await tree.next() == {str(manifest)}


def test_a_big_burst_is_read_in_slices(tmp_path: Path) -> None:
    tree = InotifyTree([Root(str(tmp_path), True)])
    try:
        for i in range(2000):  # ~100 kB of events: more than one slice
            (tmp_path / f"f{i:04d}.yaml").touch()
        slices = []
        while batch := tree.read():
            slices.append(len(batch))
        assert len(slices) > 1 and max(slices) <= watch_module.READ_BYTES // 16
        assert sum(slices) >= 2000
    finally:
        tree.close()


async def test_a_storm_is_dropped_unread_then_everything_is_rescanned_and_rewatched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_module, "STORM_EVENTS", 20)
    (tmp_path / "old").mkdir()
    async with running([Root(str(tmp_path), True)]) as tree:
        for i in range(200):
            (tmp_path / f"f{i:03d}.yaml").write_text("x")
        (tmp_path / "new" / "deep").mkdir(parents=True)  # unseen: its events are dropped
        (tmp_path / "old").rename(tmp_path / "moved")
        paths = await tree.next()
        assert str(tmp_path) in paths  # the root: the next scan is a full one
        assert len(paths) < 200
        (tmp_path / "new" / "deep" / "f.yaml").write_text("x")  # watched afresh after the storm
        await tree.until(tmp_path / "new" / "deep" / "f.yaml")
        (tmp_path / "moved" / "g.yaml").write_text("x")  # under its new name, not the old
        assert await tree.next() == {str(tmp_path / "moved" / "g.yaml")}


def test_a_queue_overflow_rescans_every_root(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    roots = [Root(str(tmp_path / "a"), True), Root(str(tmp_path / "b"), False)]
    for root in roots:
        os.mkdir(root.path)
    tree = InotifyTree(roots)
    try:
        (tmp_path / "a" / "f.yaml").write_text("x")  # something to read; the kernel's queue
        tree.parse_events = lambda data: [Event(-1, flags.Q_OVERFLOW, 0, "")]  # overflowed meanwhile
        assert [path for _mask, path in tree.read()] == [roots[0].path, roots[1].path]
        assert "inotify queue overflowed" in caplog.text
        source = FileSource([roots[0].path, roots[1].path])
        source.scan()
        source.hint([(flags.Q_OVERFLOW, roots[0].path)])
        assert source._full  # the next scan lists every file again
    finally:
        tree.close()


async def test_a_missing_root_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(OSError, match=f"cannot watch {missing}"):
        await watch([Root(str(missing), True)], lambda batch: None, asyncio.Event(), "inotify")


@pytest.mark.parametrize("failure", ["not Linux", errno.EMFILE])
async def test_auto_falls_back_to_watchfiles_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: Any) -> None:
    if failure == "not Linux":
        monkeypatch.setattr(watch_module, "_inotify_usable", lambda: "inotify is Linux only (this is darwin)")
        reason = "Linux only"
    else:
        def exhausted(roots: list[Root]) -> InotifyTree:
            raise OSError(failure, os.strerror(failure))
        monkeypatch.setattr(watch_module, "InotifyTree", exhausted)
        reason = "max_user_instances"
    caplog.set_level(logging.WARNING, logger="egress_xds.sources.watch")
    async with running([Root(str(tmp_path), True)], watcher="auto") as tree:
        (tmp_path / "f.yaml").write_text("x")
        await tree.until(tmp_path / "f.yaml", timeout=5)
    warning = next(r for r in caplog.records if "watchfiles" in r.getMessage())
    assert reason in warning.reason  # type: ignore[attr-defined]
    with pytest.raises((RuntimeError, OSError), match="Linux only" if failure == "not Linux" else "Too many"):
        await watch([Root(str(tmp_path), True)], lambda batch: None, asyncio.Event(), "inotify")


async def test_the_watchfiles_watcher_delivers_the_same_paths(tmp_path: Path) -> None:
    async with running([Root(str(tmp_path), True)], watcher="watchfiles") as tree:
        (tmp_path / "f.yaml").write_text("x")
        await tree.until(tmp_path / "f.yaml", timeout=5)
        (tmp_path / "sub").mkdir()  # what is written into it before it is watched is found
        await tree.until(tmp_path / "sub", timeout=5)  # by the full scan this event asks for
