"""``SnapshotCache`` wakes a namespace's streams in the order they started watching."""

from __future__ import annotations

from egress_xds.cache import Snapshot, SnapshotCache
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
