"""The store under load: record writes per second while the UI reads, and listing many rows.

    python bench/store.py

10 threads update their own videos' progress (as uploads do, each an atomic
diskcache transaction) for a few seconds while one thread reads the whole
batch's rows in a loop (as the Batch page does). Then the time to read 1,000
and 10,000 rows (``board.batch_rows``, warm) and to turn them into the
export table.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from board_rerun import BATCH, fill
from common import load_line

from storyteller_core.records.video import Video
from storyteller_core.storage.disk_store import DiskStore, Store
from storyteller_core.views.board import batch_rows
from storyteller_core.views.export import rows_frame

SECONDS = 5.0


def writes_under_load(store: Store) -> tuple[float, float, int]:
    video_ids = [item.video_id for item in store.items(BATCH)[:10]]
    stop = threading.Event()
    writes = [0] * 10
    reads = [0]

    def writer(n: int) -> None:
        while not stop.is_set():
            store.update(Video, video_ids[n], progress=writes[n] % 100)
            writes[n] += 1

    def reader() -> None:
        while not stop.is_set():
            batch_rows(store, BATCH)
            reads[0] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    return sum(writes) / SECONDS, reads[0] / SECONDS, sum(writes)


def listing(directory: Path) -> tuple[float, float, float]:
    store = DiskStore(directory)
    started = time.perf_counter()
    batch_rows(store, BATCH)
    cold_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    rows = batch_rows(store, BATCH)
    warm_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    rows_frame(rows)
    frame_ms = (time.perf_counter() - started) * 1000
    store.close()
    return cold_ms, warm_ms, frame_ms


def main() -> None:
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp) / "load", 100)
        store = DiskStore(Path(tmp) / "load")
        writes, reads, total = writes_under_load(store)
        store.close()
        print(
            f"10 writer threads + 1 reader of 100 rows for {SECONDS:g} s: {writes:,.0f} record writes/s "
            f"({total:,} in all), {reads:,.1f} batch reads/s"
        )
        print(f"{'rows':>6} | {'read cold ms':>12} | {'read warm ms':>12} | {'to DataFrame ms':>15}")
        for count in (1000, 10000):
            fill(Path(tmp) / f"list-{count}", count)
            cold, warm, frame = listing(Path(tmp) / f"list-{count}")
            print(f"{count:>6} | {cold:12.0f} | {warm:12.0f} | {frame:15.0f}")
            loads.append(os.getloadavg())
    print(load_line(loads))


if __name__ == "__main__":
    main()
