"""One contract, two stores: DiskStore (diskcache) and RedisStore keep store_protocol.Store the same way.

The disk store keeps a batch's rows indexed by status and its sums as it goes; Redis works them out from the
rows. Either way a page, the counts and the sums must equal what the rows themselves say.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.video import Video, VideoState
from storyteller_core.storage.disk_store import DiskStore, sums_of
from storyteller_core.views.board import LIFE_ORDER, Status, batch_rows, kept_totals, live_rows, page_rows, rows_of, totals

from . import team_fixtures
from .helpers import ask as ask_of
from .helpers import make_analysis, make_video, run_all

redis_server = team_fixtures.redis_server
redis_client = team_fixtures.redis_client
team_prefix = team_fixtures.team_prefix
BATCH = "20261202-000000-ctrt"


store = team_fixtures.either_store


def a_batch_in_every_state(store) -> list[Item]:  # type: ignore[no-untyped-def]
    """Twelve rows: done (two sharing one analysis, one reused), failed, cancelled, and each stage in flight."""
    store.add_batch(Batch(id=BATCH, name="contract"))
    items = []
    for n in range(12):
        video = store.add_video(make_video(id=f"{n:064x}", sha256=f"{n:064x}"))
        analysis, _ = store.add_analysis(make_analysis(video.id, prompt=f"p{n % 11}", estimated_cost_usd=0.01 * (n + 1)))
        item = store.add_item(
            Item(
                id=f"row-{n:02d}",
                batch_id=BATCH,
                display_name=f"{'zyxwvutsrqpo'[n]}.mp4",
                video_id=video.id,
                analysis_id=analysis.id,
                reused=n == 11,
            )
        )
        items.append(item)
    walk = {
        0: [VideoState.UPLOADING],
        1: [VideoState.UPLOADING, VideoState.UPLOADED],
        2: [VideoState.UPLOADING, VideoState.UPLOADED, VideoState.FILE_PROCESSING, VideoState.FILE_ACTIVE],
    }
    for n, states in walk.items():
        for state in states:
            store.transition(Video, f"{n:064x}", state)
    for n in (3, 4, 5, 6, 7, 8, 9):
        store.transition(Analysis, items[n].analysis_id, AnalysisState.ANALYZING)
    for n in (4, 5, 6):
        store.transition(
            Analysis, items[n].analysis_id, AnalysisState.COMPLETED, story=f"story {n}", cost_usd=0.002 * n, total_tokens=1000 * n
        )
    store.transition(Analysis, items[7].analysis_id, AnalysisState.FAILED, error_message="Gemini said no")
    store.update(Item, items[8].id, cancelled=True)
    store.transition(Analysis, items[9].analysis_id, AnalysisState.CANCELLED)
    store.move_item(items[10].id, items[5].analysis_id)  # two rows share one analysis: counted once
    return items


def test_a_page_its_counts_and_its_sums_equal_what_the_rows_say(store):
    a_batch_in_every_state(store)
    rows = rows_of(store, store.items(BATCH))
    by_status = Counter(row.status for row in rows)
    assert store.status_counts(BATCH) == {status: by_status[status] for status in LIFE_ORDER}
    assert by_status[Status.DONE] == 4 and by_status[Status.FAILED] == 1 and by_status[Status.CANCELLED] == 2
    assert store.row_count(BATCH) == 12

    ids = [row.item.id for row in rows]
    assert store.item_page(BATCH) == ids and store.item_page(BATCH, offset=3, limit=4) == ids[3:7]
    done = [row.item.id for row in rows if row.status is Status.DONE]
    assert store.item_page(BATCH, [Status.DONE]) == done and store.item_page(BATCH, [Status.DONE], offset=1, limit=2) == done[1:3]
    in_flight = [row.item.id for row in rows if not row.ended]
    assert store.item_page(BATCH, [s for s in LIFE_ORDER if not s.ended]) == in_flight
    life = [row.item.id for row in sorted(rows, key=lambda row: LIFE_ORDER.index(row.status))]
    assert store.item_page(BATCH, by_status=True) == life
    assert store.item_page(BATCH, by_status=True, offset=4, limit=5) == life[4:9]

    kept, worked_out = store.batch_sums(BATCH), sums_of(rows)
    for name in ("tokens", "costed", "estimated", "estimated_done", "first_added", "last_finished"):
        assert kept[name] == worked_out[name], name
    for name in ("cost_usd", "estimated_cost_usd", "estimated_done_usd"):
        assert kept[name] == pytest.approx(worked_out[name]), name
    a, b = kept_totals(store, BATCH), totals(rows)
    assert (a.rows, a.done, a.failed, a.cancelled, a.in_flight, a.tokens) == (b.rows, b.done, b.failed, b.cancelled, b.in_flight, b.tokens)
    assert a.cost_usd == pytest.approx(b.cost_usd) and a.estimated_cost_usd == pytest.approx(b.estimated_cost_usd)


def test_the_figures_follow_a_retry_a_deletion_and_a_shared_analysis(store):
    items = a_batch_in_every_state(store)
    store.transition(Analysis, items[7].analysis_id, AnalysisState.WAITING)  # retried
    store.delete_item(items[4].id)
    store.delete_analysis(items[3].analysis_id)  # the row is left with no analysis: Failed, saying why
    rows = rows_of(store, store.items(BATCH))
    by_status = Counter(row.status for row in rows)
    assert store.status_counts(BATCH) == {status: by_status[status] for status in LIFE_ORDER}
    assert store.batch_sums(BATCH)["cost_usd"] == pytest.approx(sums_of(rows)["cost_usd"])
    assert next(row for row in rows if row.item.id == items[3].id).error


def test_page_rows_reads_a_page_in_each_order(store):
    a_batch_in_every_state(store)
    rows = rows_of(store, store.items(BATCH))
    page, matching = page_rows(store, BATCH, "Done", "Name", offset=0, limit=3)
    names = sorted(row.name for row in rows if row.status is Status.DONE)
    assert matching == 4 and [row.name for row in page] == names[:3]
    page, matching = page_rows(store, BATCH, "All", "Status", offset=0, limit=2)
    life = sorted(rows, key=lambda row: LIFE_ORDER.index(row.status))
    assert matching == 12 and [row.item.id for row in page] == [row.item.id for row in life[:2]]
    assert all(row.video is not None for row in page)  # a page's rows come with their videos


def test_a_record_that_cannot_be_read_is_set_aside_and_the_rest_reads(store):
    items = a_batch_in_every_state(store)
    raw = store.cache.set if isinstance(store, DiskStore) else (lambda k, v: store.r.set(store.key(k), v))
    raw(f"item:{items[0].id}", "{not json")
    analysis_key = f"analysis:{items[1].analysis_id}"
    text = store.cache.get(analysis_key) if isinstance(store, DiskStore) else store.r.get(store.key(analysis_key))
    raw(analysis_key, json.dumps({**json.loads(text), "state": "FROM_THE_FUTURE"}))

    rows = rows_of(store, store.items(BATCH))
    assert len(rows) == 11 and items[0].id not in {row.item.id for row in rows}
    assert next(row for row in rows if row.item.id == items[1].id).status is Status.FAILED  # says why, Retry asks again
    count, shown = store.set_aside()
    assert count == 2 and {s["key"] for s in shown} == {f"item:{items[0].id}", analysis_key}
    assert all(s["reason"] for s in shown)
    assert store.get(Item, items[2].id) is not None  # everything else works


def test_the_engine_keeps_the_disk_stores_figures_equal_to_its_rows(make_engine, emulator, videos):
    engine = make_engine()
    first = run_all(engine, videos[:3])
    batch_id = first[0].item.batch_id
    again = engine.commands.analyze_again([first[0].item.id, first[1].item.id], ask_of(engine))  # one answer reused
    run_all(engine, videos[:1])  # a batch whose only row reuses an earlier answer
    rows = batch_rows(engine.store, batch_id)
    assert again
    kept, worked_out = kept_totals(engine.store, batch_id), totals(rows)
    assert (kept.rows, kept.done, kept.failed, kept.tokens) == (worked_out.rows, worked_out.done, worked_out.failed, worked_out.tokens)
    assert kept.last_finished == worked_out.last_finished
    page, matching = page_rows(engine.store, batch_id, "Done")
    assert matching == worked_out.done and {row.item.id for row in page} == {r.item.id for r in rows if r.status is Status.DONE}


def test_queue_reads_the_rows_in_flight_and_the_latest_failures_only(store):
    a_batch_in_every_state(store)
    rows, running = live_rows(store)
    every = rows_of(store, store.items(BATCH))
    assert {row.item.id for row in rows} == {row.item.id for row in every if not row.ended or row.status is Status.FAILED}
    assert running.rows == 12 and running.in_flight == sum(not row.ended for row in every)


class Clock:
    """time.time() under the test's hand: the stores, the records and the board all read it."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def one_run(store, analysis_id: str, clock: Clock, start: float, seconds: float, *, fails: bool = False) -> None:  # type: ignore[no-untyped-def]
    clock.at = start
    store.transition(Analysis, analysis_id, AnalysisState.ANALYZING)
    clock.at = start + seconds
    if fails:
        store.transition(Analysis, analysis_id, AnalysisState.FAILED, error_message="Gemini said no")
    else:
        store.transition(Analysis, analysis_id, AnalysisState.COMPLETED, story="s", total_tokens=10)


@pytest.mark.parametrize("watched", [True, False], ids=["read-during-the-retry", "unread-until-done"])
def test_elapsed_is_the_busy_time_not_the_idle_hour_before_a_retry(store, monkeypatch, watched):  # type: ignore[no-untyped-def]
    t0 = 1_800_000_000.0
    clock = Clock(t0)
    monkeypatch.setattr("time.time", clock)
    store.add_batch(Batch(id=BATCH, name="busy"))
    analyses = []
    for n in range(2):
        video = store.add_video(make_video(id=f"{n:064x}", sha256=f"{n:064x}"))
        analysis, _ = store.add_analysis(make_analysis(video.id, prompt=f"p{n}"))
        store.add_item(Item(id=f"row-{n}", batch_id=BATCH, display_name=f"{n}.mp4", video_id=video.id, analysis_id=analysis.id))
        analyses.append(analysis.id)
    clock.at = t0 + 5
    assert kept_totals(store, BATCH).elapsed_s == pytest.approx(5)  # in flight: counting
    one_run(store, analyses[0], clock, t0 + 10, 30, fails=True)
    one_run(store, analyses[1], clock, t0 + 20, 40)  # the batch finished at t0 + 60
    assert kept_totals(store, BATCH).elapsed_s == pytest.approx(60)
    clock.at = t0 + 3660  # an hour later, the failed row is retried
    store.transition(Analysis, analyses[0], AnalysisState.WAITING)
    if watched:
        clock.at = t0 + 3670
        t = kept_totals(store, BATCH)
        assert t.in_flight == 1 and t.elapsed_s == pytest.approx(70)  # the hour idle is not counted
    one_run(store, analyses[0], clock, t0 + 3675, 15)  # done at t0 + 3690
    clock.at = t0 + 9000
    t = kept_totals(store, BATCH)
    assert t.in_flight == 0 and t.elapsed_s == pytest.approx(60 + 30)
    assert t.last_finished == pytest.approx(t0 + 3690)
    clock.at = t0 + 9999
    assert kept_totals(store, BATCH).elapsed_s == pytest.approx(90)  # idle again: it stands


def test_sums_kept_before_busy_time_read_as_before_and_go_on_from_there(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    t0 = 1_800_000_000.0
    clock = Clock(t0)
    monkeypatch.setattr("time.time", clock)
    store = DiskStore(tmp_path / "store")
    try:
        store.add_batch(Batch(id=BATCH, name="old"))
        video = store.add_video(make_video(id=f"{1:064x}", sha256=f"{1:064x}"))
        analysis, _ = store.add_analysis(make_analysis(video.id, prompt="p"))
        store.add_item(Item(id="row-1", batch_id=BATCH, display_name="1.mp4", video_id=video.id, analysis_id=analysis.id))
        one_run(store, analysis.id, clock, t0 + 10, 50, fails=True)
        old = {k: v for k, v in store.batch_sums(BATCH).items() if k not in ("busy_s", "busy_since")}
        store._write_sums(BATCH, old)  # as an older version kept them
        clock.at = t0 + 5000
        assert kept_totals(store, BATCH).elapsed_s == pytest.approx(60)  # first added to last finished, as before
        clock.at = t0 + 7200
        store.transition(Analysis, analysis.id, AnalysisState.WAITING)  # retried two hours later
        one_run(store, analysis.id, clock, t0 + 7200, 20)
        clock.at = t0 + 9000
        assert kept_totals(store, BATCH).elapsed_s == pytest.approx(80)
    finally:
        store.close()
