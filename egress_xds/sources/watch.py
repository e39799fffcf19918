"""Filesystem events below the manifest paths, delivered in bursts on the event loop.

In: the roots to watch (a directory, watched with every directory below it, or a manifest
file's parent directory, watched alone) and a ``deliver`` callback.
Out: ``deliver(batch)`` on the event loop, once per burst of events, each event a
``(change, path)`` pair as ``FileSource.hint`` takes it.
Called by ``FileSource.watch`` (egress_xds.sources.files).

Two watchers:
- ``inotify`` (Linux, the default): the inotify descriptor is read by the asyncio loop
  itself (``loop.add_reader``), so a change is seen as soon as the kernel reports it and an
  idle server does no work at all. A burst ends when no event came for ``QUIET_SECONDS``
  (an editor's atomic save, a ``cp -r`` or a ConfigMap swap arrive as one batch) and is
  delivered at most ``DEBOUNCE_SECONDS`` after its first event. Events are read in slices,
  and a storm of them (a rewrite of every manifest) is dropped unread after the first
  ``STORM_EVENTS``: parsing thousands of events on the loop held it for 60-80 ms.
- ``watchfiles`` (elsewhere, and when inotify cannot be set up: out of inotify instances or
  watches, ``fs.inotify.max_user_*``): its thread polls for the end of a burst every 5 ms,
  so a change waits ~8 ms before the reload starts (bench part 6); with a 1 ms step it
  takes the interpreter 1,000 times a second and cost 8% of the push throughput.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

QUIET_SECONDS = 0.001  # events closer together than this belong to one burst
DEBOUNCE_SECONDS = 0.2  # a burst that goes on is delivered this long after its first event
READ_BYTES = 16384  # inotify events taken per turn of the event loop (each 16 bytes + name)
# Events in one burst beyond which the rest is dropped unread (see ``_watch_inotify``).
STORM_EVENTS = 512

Batch = list[tuple[object, str]]


@dataclass(frozen=True)
class Root:
    """A directory to watch; ``recursive``: every directory below it too (a ``--manifests``
    directory), else only its own entries (the parent of a ``--manifests`` file)."""

    path: str
    recursive: bool


class InotifyTree:
    """inotify watches on ``roots``, kept in step as directories appear, move and go away.

    ``read()`` returns the pending events as (mask, path). Directories below a recursive
    root are watched whether hidden or not, as watchfiles does: a write into a ConfigMap's
    ``..2024_...`` directory reaches the files linked into it. A directory that appears is
    watched before the batch naming it is delivered, and that batch makes the next scan a
    full one (``FileSource.hint``), so files written into it before its watch existed are
    still found. A queue overflow is reported as an event on every root (a full scan)."""

    def __init__(self, roots: Sequence[Root]) -> None:
        from inotify_simple import INotify, flags, parse_events

        self.flags = flags
        self.parse_events = parse_events
        self.mask = (flags.CREATE | flags.DELETE | flags.MODIFY | flags.CLOSE_WRITE | flags.ATTRIB
                     | flags.MOVED_FROM | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF)
        self.roots = list(roots)
        self.inotify = INotify(nonblocking=True)
        self.watched: dict[int, Root] = {}  # watch descriptor -> directory, and whether below too
        try:
            for root in self.roots:
                self._watch(root.path, root.recursive, strict=True)
        except BaseException:
            self.inotify.close()
            raise

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.inotify.close()

    def _watch(self, top: str, recursive: bool, strict: bool = False) -> None:
        """Watch ``top`` (and with ``recursive`` every directory below it). ``strict``: a
        failure raises (start-up); else a directory that vanished meanwhile is skipped and
        running out of watches is logged (the rest of the tree stays watched)."""
        tops = [top]
        if recursive:
            tops += [os.path.join(parent, d) for parent, dirs, _ in os.walk(top) for d in dirs]
        for path in tops:
            try:
                wd = self.inotify.add_watch(path, self.mask)
            except OSError as err:
                if strict:
                    raise OSError(err.errno, f"cannot watch {path}: {err.strerror}") from err
                if err.errno == errno.ENOSPC:
                    log.error("directory not watched: out of inotify watches "
                              "(raise fs.inotify.max_user_watches)", extra={"directory": path})
                continue  # gone already: its parent's event makes the next scan a full one
            self.watched[wd] = Root(path, recursive)

    def _unwatch_below(self, top: str) -> None:
        """Drop the watches on ``top`` and below (moved away: their paths are stale)."""
        for wd, watched in list(self.watched.items()):
            if watched.path == top or watched.path.startswith(top + os.sep):
                del self.watched[wd]
                try:
                    self.inotify.rm_watch(wd)
                except OSError:
                    pass  # already gone

    def drain(self) -> int:
        """Drop pending events unread (a storm); the number of bytes dropped."""
        try:
            return len(os.read(self.fileno(), 1 << 20))
        except BlockingIOError:
            return 0

    def rewatch(self) -> None:
        """Watch the roots afresh, after events were dropped: the directories below them
        may have appeared, moved or gone meanwhile. Events of the old watches that are
        still queued name watch descriptors no longer known, and are skipped."""
        for wd in list(self.watched):
            try:
                self.inotify.rm_watch(wd)
            except OSError:
                pass  # already gone
        self.watched.clear()
        for root in self.roots:
            self._watch(root.path, root.recursive)

    def read(self) -> Batch:
        """The pending events, at most ``READ_BYTES`` of them (~300): a burst of thousands
        (a rewrite of every manifest) is taken in slices, each a few ms of the event loop,
        with the streams served in between; read at once, it held the loop for 60-80 ms."""
        f = self.flags
        batch: Batch = []
        try:
            data = os.read(self.fileno(), READ_BYTES)
        except BlockingIOError:
            return batch
        for event in self.parse_events(data):
            if event.mask & f.Q_OVERFLOW:
                log.warning("inotify queue overflowed: rescanning every manifest")
                batch += [(event.mask, root.path) for root in self.roots]
                continue
            if event.mask & f.IGNORED:  # the watched directory went away
                self.watched.pop(event.wd, None)
                continue
            directory = self.watched.get(event.wd)
            if directory is None:
                continue  # a watch dropped meanwhile
            path = os.path.join(directory.path, event.name) if event.name else directory.path
            if event.mask & f.ISDIR and directory.recursive:
                if event.mask & f.MOVED_FROM:
                    self._unwatch_below(path)
                elif event.mask & (f.CREATE | f.MOVED_TO):
                    self._watch(path, recursive=True)
            if event.mask & (f.DELETE_SELF | f.MOVE_SELF) and any(r.path == path for r in self.roots):
                log.warning("watched directory removed or moved away: changes below it are "
                            "not seen until serve restarts", extra={"directory": path})
            batch.append((event.mask, path))
        return batch


def _inotify_usable() -> str:
    """Why the inotify watcher cannot run here ("" when it can)."""
    if not sys.platform.startswith("linux"):
        return f"inotify is Linux only (this is {sys.platform})"
    try:
        import inotify_simple  # noqa: F401
    except ImportError as err:
        return f"inotify_simple is not installed ({err})"
    return ""


async def watch(roots: Sequence[Root], deliver: Callable[[Batch], None], stop: asyncio.Event,
                watcher: str = "auto") -> None:
    """Call ``deliver`` with each burst of events below ``roots`` until ``stop`` is set.
    ``watcher``: "inotify", "watchfiles" or "auto" (inotify where it works, else
    watchfiles, with a warning that names why). Raises when a root cannot be watched."""
    if watcher not in ("auto", "inotify", "watchfiles"):
        raise ValueError(f"watcher: {watcher!r} is not one of auto, inotify, watchfiles")
    if watcher != "watchfiles":
        reason = _inotify_usable()
        tree = None
        if not reason:
            try:
                tree = InotifyTree(roots)
            except OSError as err:
                if err.errno not in (errno.EMFILE, errno.ENOSPC, errno.ENOSYS) or watcher == "inotify":
                    raise
                reason = f"{err.strerror} (fs.inotify.max_user_instances / max_user_watches)"
        if tree is not None:
            log.info("watching manifests", extra={"watcher": "inotify", "directories": len(tree.watched)})
            try:
                await _watch_inotify(tree, deliver, stop)
            finally:
                tree.close()
            return
        if watcher == "inotify":
            raise RuntimeError(f"watcher inotify: {reason}")
        log.warning("inotify unusable: watching manifests with watchfiles (a change waits ~8 ms more)",
                    extra={"reason": reason})
    log.info("watching manifests", extra={"watcher": "watchfiles", "roots": [r.path for r in roots]})
    await _watch_watchfiles(roots, deliver, stop)


async def _watch_inotify(tree: InotifyTree, deliver: Callable[[Batch], None], stop: asyncio.Event) -> None:
    """Bursts of events as batches. A storm (more than ``STORM_EVENTS`` in one burst: a
    rewrite of every manifest) is not read event by event: the rest of it is dropped unread,
    the tree is watched afresh when it ends, and the batch names every root, so the next
    scan is a full one (as ``FileSource.hint`` decides for any batch over 256 paths)."""
    loop = asyncio.get_running_loop()
    batch: Batch = []
    first = 0.0
    storm = False
    timer: asyncio.TimerHandle | None = None

    def flush() -> None:
        nonlocal batch, timer, storm
        timer = None
        if storm:
            storm = False
            tree.rewatch()  # directories may have appeared, moved or gone unseen
            log.info("a storm of filesystem events: rescanning every manifest",
                     extra={"events_read": len(batch)})
            batch += [(0, root.path) for root in tree.roots]
        done, batch = batch, []
        deliver(done)

    def readable() -> None:
        nonlocal first, timer, storm
        if storm or len(batch) >= STORM_EVENTS:
            storm = True
            if not tree.drain():
                return
        else:
            events = tree.read()
            if not events:
                return
            if not batch:
                first = loop.time()
            batch.extend(events)
        if timer is not None:
            timer.cancel()
        timer = loop.call_at(min(loop.time() + QUIET_SECONDS, first + DEBOUNCE_SECONDS), flush)

    loop.add_reader(tree.fileno(), readable)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(tree.fileno())
        if timer is not None:
            timer.cancel()


async def _watch_watchfiles(roots: Sequence[Root], deliver: Callable[[Batch], None],
                            stop: asyncio.Event) -> None:
    import watchfiles

    async for changes in watchfiles.awatch(*(root.path for root in roots), stop_event=stop,
                                           watch_filter=None, debounce=int(DEBOUNCE_SECONDS * 1000),
                                           step=5, recursive=True, yield_on_timeout=False):
        deliver(list(changes))
