"""``SnapshotCache`` wakes a namespace's streams in the order they started watching, in
batches when there are many."""

from __future__ import annotations

import asyncio

from egress_xds.cache import WAKE_BATCH, Snapshot, SnapshotCache
from egress_xds.resources import CLUSTER


def test_watchers_are_woken_oldest_first_and_unwatched_ones_not_at_all() -> None:
    cache = SnapshotCache()
    woken: list[int] = []
    callbacks = {i: (lambda i=i: woken.append(i)) for i in range(50)}
    for i in range(50):
        cache.watch("team-a", callbacks[i])
    for i in (0, 17, 49):
        cache.unwatch("team-a", callbacks[i])
    cache.watch("team-a", callbacks[0])  # watching again puts it last
    cache.set_snapshot("team-a", Snapshot({CLUSTER: {}}), check=False)
    assert woken == [i for i in range(1, 49) if i != 17] + [0]


def test_a_big_fan_out_lets_the_loop_serve_other_work_between_batches() -> None:
    """A request that arrives while a namespace's 200 streams are being woken (here: work
    the first woken stream schedules) runs after one batch, not after all 200 wake-ups."""
    events: list[str] = []

    async def main() -> None:
        cache = SnapshotCache()
        loop = asyncio.get_running_loop()

        def first() -> None:
            events.append("woken 0")
            loop.call_soon(events.append, "other work")

        cache.watch("team-a", first)
        for i in range(1, 200):
            cache.watch("team-a", lambda i=i: events.append(f"woken {i}"))
        cache.set_snapshot("team-a", Snapshot({CLUSTER: {}}), check=False)
        for _ in range(200 // WAKE_BATCH + 2):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert [e for e in events if e.startswith("woken")] == [f"woken {i}" for i in range(200)]
    assert WAKE_BATCH <= 32
    assert events.index("other work") <= WAKE_BATCH  # after the first batch: "woken 0".."woken 15"
