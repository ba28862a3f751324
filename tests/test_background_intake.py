"""Start stores the batch at once; its files are checked, made into videos and queued in the background."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from storyteller_core.intake.candidates import inspect_path, unchecked
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item, new_id
from storyteller_core.views.board import Status, batch_rows, row_of

from .helpers import ask, wait_until


def test_a_started_folder_is_stored_at_once_then_checked_uploaded_and_analyzed_once_each(make_engine, emulator, videos, tmp_path):
    engine = make_engine()
    junk = tmp_path / "in" / "notes.mp4"
    junk.write_bytes(b"not a video at all")
    copy = tmp_path / "in" / "copy-of-first.mp4"
    copy.write_bytes(videos[0].read_bytes())
    listed = [unchecked(p) for p in [*videos, junk, copy]]  # a large selection is listed unchecked: no hashing yet
    assert not any(c.checked for c in listed)
    engine.commands.add_pending(listed)

    batch = engine.commands.start_pending(ask(engine, "P"))

    assert batch is not None and engine.commands.pending() == []
    assert len(engine.store.item_ids(batch.id)) == len(listed)  # every row exists when Start returns
    wait_until(lambda: all(row.ended for row in batch_rows(engine.store, batch.id)), what="the batch to end")
    rows = {row.name: row for row in batch_rows(engine.store, batch.id)}
    assert rows["notes.mp4"].status is Status.FAILED and "not" in (rows["notes.mp4"].error or "")
    assert {name: row.status for name, row in rows.items() if name != "notes.mp4"} == dict.fromkeys(
        [p.name for p in [*videos, copy]], Status.DONE
    )
    assert engine.store.get(Batch, batch.id).intake is None
    assert sum(emulator.stats.uploads_finished.values()) == len(videos)  # the copy's content was uploaded once
    assert sum(emulator.stats.generates.values()) == len(videos)  # and analyzed once: both rows share the answer


def test_a_row_still_being_checked_reads_checking_and_can_be_cancelled(make_engine, emulator, videos):
    item = Item(id="i1", batch_id="b1", display_name="a.mp4", source_path="/a.mp4", intake={"path": "/a.mp4"})
    assert row_of(item, None, None).label == "Checking the file"
    item.cancelled = True
    assert row_of(item, None, None).status is Status.CANCELLED

    engine = make_engine(start=False)  # no workers: the row is cancelled before any upload could start
    engine.commands.add_pending([unchecked(videos[0]), unchecked(videos[1])])
    batch = engine.commands.start_pending(ask(engine, "P"))
    first, second = engine.store.items(batch.id)
    engine.commands.cancel(first.id)
    engine.start()
    wait_until(lambda: all(row.ended for row in batch_rows(engine.store, batch.id)), what="the batch to end")
    statuses = {row.item.id: row.status for row in batch_rows(engine.store, batch.id)}
    assert statuses == {first.id: Status.CANCELLED, second.id: Status.DONE}
    assert emulator.stats.uploads_finished[videos[0].name] == 0


def test_a_row_cancelled_before_its_check_leaves_an_earlier_failed_row_alone_and_retry_asks(make_engine, emulator, videos):
    engine = make_engine(start=False)
    engine.commands.add_pending([unchecked(videos[0])])
    earlier = engine.commands.start_pending(ask(engine, "P"))
    wait_until(lambda: engine.store.get(Batch, earlier.id).intake is None, what="the first batch to be checked")
    (failed,) = engine.store.items(earlier.id)
    engine.store.transition(Analysis, failed.analysis_id, AnalysisState.FAILED, error_message="Gemini refused it.")

    engine.commands.add_pending([unchecked(videos[0])])  # the same question of the same video, in a new batch
    with engine.commands._finishing:  # the intake cannot ask for the row before the cancel lands
        batch = engine.commands.start_pending(ask(engine, "P"))
        (row,) = engine.store.items(batch.id)
        engine.commands.cancel(row.id)
    wait_until(lambda: engine.store.get(Batch, batch.id).intake is None, what="the new batch to be checked")
    engine.start()

    assert [r.status for r in batch_rows(engine.store, batch.id)] == [Status.CANCELLED]
    assert [(r.status, r.error) for r in batch_rows(engine.store, earlier.id)] == [(Status.FAILED, "Gemini refused it.")]
    assert engine.store.get(Analysis, failed.analysis_id).state is AnalysisState.FAILED  # not reopened, not re-run
    assert sum(emulator.stats.uploads_finished.values()) == 0 and sum(emulator.stats.generates.values()) == 0

    engine.commands.retry(row.id)  # asked for real now: both rows share the answer

    wait_until(lambda: all(r.status is Status.DONE for r in batch_rows(engine.store)), what="the retried question")
    assert sum(emulator.stats.generates.values()) == 1


def test_shutdown_stops_the_intake_after_its_row_and_the_next_engine_checks_the_rest(make_engine, emulator, videos):
    engine = make_engine()
    engine.commands.add_pending([unchecked(p) for p in videos[:3]])
    with engine.commands._finishing:  # the intake holds at its first row
        batch = engine.commands.start_pending(ask(engine, "P"))
        stopping = threading.Thread(target=engine.shutdown, kwargs={"timeout": 10})
        stopping.start()
        wait_until(engine.commands.intake._stopping.is_set, what="the shutdown to reach the intake")
    stopping.join(15)

    assert not stopping.is_alive() and engine.commands.intake.idle.is_set()  # the intake thread ended with the engine
    rows = batch_rows(engine.store, batch.id)
    assert [row.label for row in rows[1:]] == ["Checking the file"] * 2  # left for the next engine
    assert engine.store.get(Batch, batch.id).intake is not None

    make_engine()  # the next start on this data dir

    wait_until(lambda: all(row.status is Status.DONE for row in batch_rows(engine.store, batch.id)), what="the batch")
    assert sum(emulator.stats.uploads_finished.values()) == 3


def test_an_engine_finishes_the_intake_a_killed_one_left(make_engine, emulator, videos):
    engine = make_engine(start=False)
    # What a SIGKILL during intake leaves: the batch, one row already checked and queued-to-be, the rest unchecked,
    # and the intake's lease held by a process that is gone.
    question = ask(engine, "P")
    batch = Batch(id="20261128-000000-dead", name="killed", intake=question.to_dict())
    checked = inspect_path(videos[0], engine.settings).to_dict()
    rows = [
        Item(id=new_id(), batch_id=batch.id, display_name=p.name, source_path=str(p), intake=checked if i == 0 else unchecked(p).to_dict())
        for i, p in enumerate(videos[:3])
    ]
    engine.store.add_pending([row.intake for row in rows])  # the checked list Start took them from
    assert engine.store.start_batch(batch, rows) == rows and engine.store.pending() == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert engine.store.claim(f"intake:{batch.id}", f"{socket.gethostname()}:{dead.stdout.strip()}:x", ttl=600)

    engine.start()

    wait_until(lambda: all(row.ended for row in batch_rows(engine.store, batch.id)), what="the batch to end")
    assert [row.status for row in batch_rows(engine.store, batch.id)] == [Status.DONE] * 3
    assert engine.store.get(Batch, batch.id).intake is None
    assert sum(emulator.stats.uploads_finished.values()) == 3


def test_two_tabs_pressing_start_at_once_make_one_batch_and_a_file_added_meanwhile_stays_listed(make_engine, tmp_path):
    engine = make_engine(start=False)
    engine.commands.add_pending([unchecked(tmp_path / f"v{i}.mp4") for i in range(300)])
    gate, started = threading.Barrier(2), []

    def press() -> None:
        gate.wait()
        started.append(engine.commands.start_pending(ask(engine, "P")))

    tabs = [threading.Thread(target=press) for _ in range(2)]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    batches = [b for b in started if b]
    assert len(batches) == 1 and len(engine.store.items(batches[0].id)) == 300

    engine.commands.add_pending([unchecked(tmp_path / "first.mp4")])
    start_batch = engine.store.start_batch

    def another_tab_adds_a_file_meanwhile(batch, items):  # type: ignore[no-untyped-def]
        engine.commands.add_pending([unchecked(tmp_path / "late.mp4")])
        return start_batch(batch, items)

    engine.store.start_batch = another_tab_adds_a_file_meanwhile  # type: ignore[method-assign]
    batch = engine.commands.start_pending(ask(engine, "P"))
    assert [item.display_name for item in engine.store.items(batch.id)] == ["first.mp4"]
    assert [entry["display_name"] for entry in engine.store.pending()] == ["late.mp4"]
