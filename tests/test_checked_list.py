"""The checked list before Start lives in the store: edits from two tabs (or the app and a team client) at once lose nothing."""

from __future__ import annotations

import threading

from . import team_fixtures

redis_server = team_fixtures.redis_server
redis_client = team_fixtures.redis_client
team_prefix = team_fixtures.team_prefix


store = team_fixtures.either_store


def test_edits_of_the_checked_list_from_many_threads_at_once_lose_nothing(store):
    def add(tab: int) -> None:
        for n in range(25):
            store.add_pending([{"path": f"/tab{tab}/clip-{n}.mp4", "sha256": f"{tab}-{n}"}])

    threads = [threading.Thread(target=add, args=(tab,)) for tab in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.pending()) == 200 == store.pending_count()

    for n in range(25):
        store.remove_pending(f"/tab0/clip-{n}.mp4")
    assert len(store.pending()) == 175 == store.pending_count()


def test_the_checked_list_is_read_a_page_at_a_time_in_the_order_added(store):
    store.add_pending([{"path": f"/v/clip-{n:03d}.mp4", "sha256": str(n)} for n in range(120)])
    store.add_pending([{"path": "/v/clip-000.mp4", "sha256": "again"}])  # listed already: kept as it was
    store.add_pending([{"path": "/v/clip-001.mp4", "error_code": "not_video", "error_message": "no"}])  # news: replaces

    page = store.pending(offset=50, limit=25)
    assert [e["path"] for e in page] == [f"/v/clip-{n:03d}.mp4" for n in range(50, 75)]
    first = store.pending(limit=2)
    assert first[0]["sha256"] == "0" and first[1]["error_code"] == "not_video"
    assert store.pending_count() == 120
    assert len(store.clear_pending()) == 120 and store.pending() == [] and store.pending_count() == 0
