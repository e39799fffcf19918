"""Where objects come from: a watched manifest directory (``files``) or the Kubernetes API
(``kubernetes``, with ``lease`` and ``status_writer`` for status write-back).

In: paths on disk, or a kubeconfig. Out: ``LoadResult`` values (objects, errors, notices) for
the wiring in ``egress_xds.serve``, which hands them to the translator. Both sources offer the
``Source`` surface below.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from egress_xds.model.load import LoadResult
from egress_xds.model.objects import TopLevel


class Source(Protocol):
    def scan(self) -> bool:
        """Bring ``result()`` up to date (blocking; run it in a worker thread); True if it changed."""
        ...

    def result(self) -> LoadResult: ...

    def last_changes(self) -> tuple[list[TopLevel], list[TopLevel]] | None:
        """(added, removed) by the last ``result()`` relative to the one before, by identity,
        or None when not known exactly (``Translator.load`` then diffs every object)."""
        ...

    async def watch(self, on_change: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
        """Await ``on_change`` after each batch of changes until ``stop`` is set."""
        ...
