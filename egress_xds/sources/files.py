"""A watched manifest directory with a per-file parse cache.

In: one or more paths (directories or files) given to ``serve --manifests``.
Out: ``FileSource.result()``: the merged ``LoadResult`` of every manifest file, where each file
is parsed only when its content changed, and a file that now fails keeps its previous objects
in force (the error is still reported): a file that no longer parses keeps all of them, an
object that no longer validates keeps its previous version. ``FileSource.watch`` calls back
after every change, reacting to create, modify, delete, rename, editors' atomic saves and
Kubernetes ConfigMap ``..data`` symlink swaps.
Called by ``egress_xds.serve``; uses ``egress_xds.model.load`` to parse.

How changes are found: any filesystem event below a watched path triggers a rescan of the
file list (cheap: one ``stat`` per file). A file is re-read when its fingerprint (resolved
path, inode, size, mtime) changed and re-parsed only when its bytes changed. Events arriving
while a rescan runs coalesce into a single next rescan; the first event is never delayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from egress_xds.model.load import LoadResult, load_file, manifest_files, merge_results

log = logging.getLogger(__name__)

Fingerprint = tuple[str, int, int, int, int]


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class FileState:
    fingerprint: Fingerprint | None
    content: str | None
    parsed: LoadResult  # what the file says now
    effective: LoadResult  # what is in force (previous objects kept where the file fails)


def keep_previous(new: LoadResult, previous: LoadResult | None, file: str) -> LoadResult:
    """The objects in force after ``file`` changed from ``previous`` to ``new``.

    A file-level failure (cannot read or parse) keeps every previous object the new text no
    longer defines; an object-level failure keeps that object's previous version.
    """
    if previous is None:
        return new
    file_failed = any(not e.kind and (e.message.startswith(("cannot parse", "cannot read")))
                      for e in new.errors)
    failed = {(e.kind, e.namespace, e.name) for e in new.errors if e.name}
    defined = {o.key for o in new.objects}
    kept = [o for o in previous.objects
            if o.key not in defined and (file_failed or tuple(o.key) in failed)]
    if not kept:
        return new
    notices = [f"{file}: keeping the previous {o.key} until the file is fixed" for o in kept]
    return LoadResult(objects=new.objects + kept, errors=list(new.errors),
                      notices=list(new.notices) + notices)


@dataclass
class FileSource:
    """The manifests below ``paths``, parsed per file and cached."""

    paths: Sequence[str | os.PathLike[str]]
    files: dict[str, FileState] = field(default_factory=dict)
    generation: int = 0  # bumped whenever the merged result may have changed

    def scan(self) -> bool:
        """Bring the cache up to date with the disk; True when anything changed."""
        changed = False
        seen: set[str] = set()
        for path in manifest_files(self.paths):
            key = str(path)
            seen.add(key)
            state = self.files.get(key)
            fingerprint = _fingerprint(path)
            if state is not None and fingerprint == state.fingerprint and fingerprint is not None:
                continue
            content = _content_hash(path)
            if state is not None and content == state.content and content is not None:
                state.fingerprint = fingerprint
                continue
            if fingerprint is None and not path.exists() and not path.is_symlink():
                continue  # vanished between listing and reading
            parsed = load_file(path)
            effective = keep_previous(parsed, state.effective if state else None, key)
            self.files[key] = FileState(fingerprint, content, parsed, effective)
            changed = True
            log.info("manifest file loaded", extra={
                "file": key, "objects": len(parsed.objects), "errors": len(parsed.errors)})
            for error in parsed.errors:
                log.warning("manifest error", extra={"file": key, "error": str(error)})
        for key in sorted(set(self.files) - seen):
            del self.files[key]
            changed = True
            log.info("manifest file removed", extra={"file": key})
        if changed:
            self.generation += 1
        return changed

    def result(self) -> LoadResult:
        """Every file's objects in force, merged (duplicates across files are errors)."""
        return merge_results(self.files[key].effective for key in sorted(self.files))

    def watch_roots(self) -> list[Path]:
        roots = []
        for raw in self.paths:
            path = Path(raw)
            roots.append(path if path.is_dir() else path.parent)
        return roots

    async def watch(self, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        """Call ``on_change`` (awaited) after each batch of filesystem changes until ``stop``.

        ``on_change`` is expected to call ``scan()`` itself (e.g. in a worker thread)."""
        dirty = asyncio.Event()

        async def events() -> None:
            async for batch in watchfiles.awatch(*self.watch_roots(), stop_event=stop,
                                                 watch_filter=None, debounce=200, step=5,
                                                 recursive=True, yield_on_timeout=False):
                log.debug("filesystem events", extra={"events": len(batch)})
                dirty.set()

        watcher = asyncio.create_task(events())
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(dirty.wait())
                done, _ = await asyncio.wait({waiter, stopper, watcher},
                                             return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    if watcher in done and not stop.is_set():
                        watcher.result()  # surface why the watcher died
                    break
                dirty.clear()
                try:
                    await on_change()
                except Exception:
                    log.exception("reload failed")
        finally:
            stopper.cancel()
            watcher.cancel()
