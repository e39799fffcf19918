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
file list (cheap: one ``stat`` per file). A file is re-read when its fingerprint (device,
inode, size, mtime, symlinks followed) changed and re-parsed only when its bytes changed.
Events arriving while a rescan runs coalesce into a single next rescan; the first event is
never delayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from egress_xds.model.load import (
    MANIFEST_SUFFIXES,
    Documents,
    LoadResult,
    load_bytes,
    manifest_files,
    merge_results,
    read_regular_file,
    unreadable,
)
from egress_xds.model.objects import ObjectKey, TopLevel
from egress_xds.sources.watch import Root
from egress_xds.sources.watch import watch as watch_events

log = logging.getLogger(__name__)

# A batch naming more files than this is scanned in full (one listing is cheaper).
MAX_HINTS = 256

Fingerprint = tuple[int, int, int, int]


def _fingerprint(path: Path) -> Fingerprint | None:
    """The file behind ``path`` (symlinks followed: a ConfigMap ``..data`` swap points it at
    another inode) and its size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class FileState:
    fingerprint: Fingerprint | None
    content: str | None
    parsed: LoadResult  # what the file says now
    effective: LoadResult  # what is in force (previous objects kept where the file fails)


def reuse_unchanged(new: LoadResult, previous: LoadResult | None) -> LoadResult:
    """``new`` with every object equal to the previous object of its key replaced by that
    previous object. An edit to one object of a file then hands the translator just that
    object as changed (it diffs by identity), so its cheapest paths apply: a route edit
    re-attaches one EgressNetwork instead of every one in the world."""
    if previous is None or not previous.objects:
        return new
    before = {o.key: o for o in previous.objects}
    objects = []
    for obj in new.objects:
        old = before.get(obj.key)
        objects.append(old if old is not None and (old is obj or old == obj) else obj)
    return LoadResult(objects=objects, errors=new.errors, notices=new.notices,
                      documents=_rebased(new.documents, objects))


def _rebased(documents: Documents | None, objects: list[TopLevel]) -> Documents | None:
    """``documents`` holding ``objects`` (the same objects in the same order, some replaced
    by equal ones in force): a document reused next time then hands over the very object in
    force, and ``reuse_unchanged`` has nothing to compare."""
    if documents is None:
        return None
    rebased: Documents = {}
    at = 0
    for text, (held, notices) in documents.items():
        rebased[text] = (tuple(objects[at:at + len(held)]), notices)
        at += len(held)
    return rebased if at == len(objects) else None


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
    watcher: str = "auto"  # how ``watch`` watches: see ``egress_xds.sources.watch.watch``
    files: dict[str, FileState] = field(default_factory=dict)
    generation: int = 0  # bumped whenever the merged result may have changed
    # For ``result``: per file, the effective result last counted and its object keys, and
    # how many files define each key (a key defined twice needs the full merge).
    _counted: dict[str, tuple[LoadResult, list[ObjectKey]]] = field(default_factory=dict, repr=False)
    _definitions: dict[ObjectKey, int] = field(default_factory=dict, repr=False)
    _defined_twice: set[ObjectKey] = field(default_factory=set, repr=False)
    # Files named by filesystem events since the last scan (None: no events, scan everything),
    # and whether an event asked for a full scan.
    _hints: set[str] | None = field(default=None, repr=False)
    _full: bool = field(default=False, repr=False)
    _links: set[str] = field(default_factory=set, repr=False)  # listed files that are symlinks
    _hints_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _scanned: bool = field(default=False, repr=False)
    # What the last ``result`` added and removed relative to the one before, by identity,
    # when both were plain concatenations (no key defined twice); see ``last_changes``.
    _changes: tuple[list[TopLevel], list[TopLevel]] | None = field(default=None, repr=False)
    _plain: bool = field(default=False, repr=False)  # the last result was a concatenation

    def _count(self, keys: list[ObjectKey], delta: int) -> None:
        for key in keys:
            n = self._definitions.get(key, 0) + delta
            if n > 0:
                self._definitions[key] = n
            else:
                self._definitions.pop(key, None)
            if n > 1:
                self._defined_twice.add(key)
            else:
                self._defined_twice.discard(key)

    def hint(self, events: Iterable[tuple[object, str]]) -> None:
        """Filesystem events, (change, path) pairs from ``egress_xds.sources.watch``, for
        the next ``scan``: when every path is a manifest file the listing would name, only
        those files are looked at; anything else (a directory, a symlink, a hidden entry
        such as a ConfigMap's ``..data`` swap, a path outside the roots, a big batch) makes
        the next scan a full one."""
        events = list(events)
        with self._hints_lock:
            if self._full or len(events) + len(self._hints or ()) > MAX_HINTS:
                self._full, self._hints = True, None  # decided before looking: this runs on the
                return  # event loop, and a storm of events must not keep it from the streams
        keys = [self._listed_key(raw) for _change, raw in events]
        with self._hints_lock:
            if self._full:
                return
            hints = self._hints or set()
            if None in keys or len(hints) + len(keys) > MAX_HINTS:
                self._full, self._hints = True, None
                return
            hints.update(k for k in keys if k)
            self._hints = hints

    def _listed_key(self, raw: str) -> str | None:
        """What an event at ``raw`` means for the next scan: the key ``manifest_files`` would
        give that file; ``""`` when no listed file can depend on it (a regular file or a gone
        path that the listing skips: an editor's hidden temporary, a README); None when only
        a full scan can tell (a directory, one that went away with listed files in it, a
        symlink, a path outside the roots)."""
        absolute = os.path.abspath(raw)
        if os.path.isdir(raw) or os.path.islink(raw):
            return None  # a new tree, a ConfigMap's ``..data`` swap, or a write through a link
        for given in self.paths:
            root = os.path.abspath(given)
            if absolute == root and not os.path.isdir(root):
                return str(Path(given))
            if absolute.startswith(root + os.sep) and os.path.isdir(root):
                parts = Path(absolute[len(root) + 1:]).parts
                key = str(Path(given).joinpath(*parts))
                if not os.path.lexists(raw) and any(f.startswith(key + os.sep) for f in list(self.files)):
                    return None  # a directory holding listed files went away (moved or removed)
                if any(part.startswith(".") for part in parts) or not parts[-1].endswith(MANIFEST_SUFFIXES):
                    return ""  # not listed (a symlink into it is looked at on every scan)
                return key
        return None

    def scan(self) -> bool:
        """Bring the cache up to date with the disk; True when anything changed. Looks only
        at the files ``hint`` named since the last scan when it could, else at every file."""
        with self._hints_lock:
            hints, full = self._hints, self._full
            self._hints, self._full = None, False
        if full or hints is None or not self._scanned:
            self._scanned = True
            return self._scan(manifest_files(self.paths), complete=True)
        # A symlink's content changes with events on its target's path: always look again.
        return self._scan([Path(key) for key in sorted(hints | self._links)], complete=False)

    def _scan(self, listed: Iterable[Path], complete: bool) -> bool:
        """Refresh the ``listed`` files; with ``complete``, forget every file not listed,
        else forget the listed ones that are gone."""
        changed = False
        seen: set[str] = set()
        named = {str(Path(p)) for p in self.paths}  # listed even when missing, as in a full scan
        for path in listed:
            key = str(path)
            state = self.files.get(key)
            fingerprint = _fingerprint(path)
            if os.path.islink(path):
                self._links.add(key)
            else:
                self._links.discard(key)
            if not complete and fingerprint is None and not os.path.islink(path) and key not in named:
                continue  # gone (or never there): dropped below
            seen.add(key)
            if state is not None and fingerprint == state.fingerprint and fingerprint is not None:
                continue
            # Read once: the bytes hashed are the bytes parsed, even if a writer is rewriting
            # the file meanwhile (two reads could parse a half-written file under the hash of
            # the finished one, and the next scan would then skip it as unchanged).
            raw: bytes | None = None
            failure = OSError(f"{key}: not read")
            try:
                raw = read_regular_file(path)
            except OSError as err:
                failure = err
            content = None if raw is None else hashlib.sha256(raw).hexdigest()
            if state is not None and content == state.content and content is not None:
                state.fingerprint = fingerprint
                continue
            if fingerprint is None and not path.exists() and not path.is_symlink():
                continue  # vanished between listing and reading
            if (state is not None and fingerprint is None and content is None
                    and state.fingerprint is None and state.content is None):
                continue  # still a dangling symlink: already reported
            parsed = (load_bytes(raw, key, state.parsed if state else None) if raw is not None
                      else unreadable(key, failure))
            parsed = reuse_unchanged(parsed, state.effective if state else None)
            effective = keep_previous(parsed, state.effective if state else None, key)
            self.files[key] = FileState(fingerprint, content, parsed, effective)
            changed = True
            log.info("manifest file loaded", extra={
                "file": key, "objects": len(parsed.objects), "errors": len(parsed.errors)})
            for error in parsed.errors:
                log.warning("manifest error", extra={"file": key, "error": str(error)})
        gone = set(self.files) - seen if complete else {str(p) for p in listed} - seen
        for key in sorted(gone & self.files.keys()):
            del self.files[key]
            self._links.discard(key)
            changed = True
            log.info("manifest file removed", extra={"file": key})
        if changed:
            self.generation += 1
        return changed

    def result(self) -> LoadResult:
        """Every file's objects in force, merged (duplicates across files are errors).

        Only files that changed since the last call have their objects' keys looked at: when
        no key is defined twice, the merge is a concatenation in file order (what
        ``merge_results`` gives then); otherwise it is ``merge_results`` itself."""
        before: list[TopLevel] = []  # objects of the files that changed, as last counted
        after: list[TopLevel] = []
        for name in [n for n in self._counted if n not in self.files]:
            gone = self._counted.pop(name)
            self._count(gone[1], -1)
            before += gone[0].objects
        for name, state in self.files.items():
            counted = self._counted.get(name)
            if counted is not None and counted[0] is state.effective:
                continue
            if counted is not None:
                self._count(counted[1], -1)
                before += counted[0].objects
            after += state.effective.objects
            keys = [obj.key for obj in state.effective.objects]
            self._count(keys, +1)
            self._counted[name] = (state.effective, keys)
        ordered = [self.files[name].effective for name in sorted(self.files)]
        plain, self._plain = self._plain, not self._defined_twice
        self._changes = None
        if plain and self._plain:
            kept = {id(o) for o in before} & {id(o) for o in after}
            self._changes = ([o for o in after if id(o) not in kept], [o for o in before if id(o) not in kept])
        if self._defined_twice:
            return merge_results(ordered)
        return LoadResult(objects=list(chain.from_iterable(r.objects for r in ordered)),
                          errors=list(chain.from_iterable(r.errors for r in ordered)),
                          notices=list(chain.from_iterable(r.notices for r in ordered)))

    def last_changes(self) -> tuple[list[TopLevel], list[TopLevel]] | None:
        """(added, removed): the objects the last ``result()`` has and the one before did
        not, and the reverse, by identity; None when unknown (the first result, or a key
        defined twice in either, where the merge drops objects). Lets the translator skip
        diffing every object of the world (``Translator.load``'s ``changes``)."""
        return self._changes

    def watch_roots(self) -> list[Root]:
        """A directory given is watched with everything below it; a file given, through
        its parent directory alone."""
        roots = []
        for raw in self.paths:
            path = Path(raw)
            root = Root(str(path), True) if path.is_dir() else Root(str(path.parent), False)
            if root not in roots:
                roots.append(root)
        return roots

    async def watch(self, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        """Call ``on_change`` (awaited) after each burst of filesystem changes until ``stop``.

        ``on_change`` is expected to call ``scan()`` itself (e.g. in a worker thread)."""
        dirty = asyncio.Event()

        def deliver(batch: list[tuple[object, str]]) -> None:
            log.debug("filesystem events", extra={"events": len(batch)})
            self.hint(batch)
            dirty.set()

        events = asyncio.create_task(watch_events(self.watch_roots(), deliver, stop, self.watcher))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(dirty.wait())
                done, _ = await asyncio.wait({waiter, stopper, events},
                                             return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    if events in done and not stop.is_set():
                        events.result()  # surface why the watcher died
                    break
                dirty.clear()
                try:
                    await on_change()
                except Exception:
                    log.exception("reload failed")
        finally:
            stopper.cancel()
            events.cancel()
