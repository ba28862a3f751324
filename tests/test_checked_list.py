"""The checked list before Start lives in the store: edits from two tabs (or the app and a team client) at once lose nothing."""

from __future__ import annotations

import threading

import pytest

from storyteller_core.store import Store

from . import team_fixtures

redis_server = team_fixtures.redis_server
redis_client = team_fixtures.redis_client
team_prefix = team_fixtures.team_prefix


@pytest.fixture(params=["diskcache", "redis"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "diskcache":
        s = Store(tmp_path / "jobs")
        yield s
        s.close()
    else:
        from storyteller_core.team.store import RedisStore

        yield RedisStore(request.getfixturevalue("redis_client"), prefix=request.getfixturevalue("team_prefix"))


def test_edits_of_the_checked_list_from_many_threads_at_once_lose_nothing(store):
    def add(tab: int) -> None:
        for n in range(25):
            store.edit_pending(lambda entries, n=n: [*entries, {"path": f"/tab{tab}/clip-{n}.mp4", "sha256": f"{tab}-{n}"}])

    threads = [threading.Thread(target=add, args=(tab,)) for tab in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.pending()) == 200

    before = store.edit_pending(lambda entries: [e for e in entries if not e["path"].startswith("/tab0/")])
    assert len(before) == 200 and len(store.pending()) == 175
