"""Job store: state writes per second under load, and listing many jobs.

    python bench/store.py

10 threads update their own jobs (as workers do) for a few seconds while one
thread reads the whole batch in a loop (as the UI does). Then the time to
list 1,000 and 10,000 jobs, and to turn them into the export table.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repo on sys.path)

from storyteller_core.export import jobs_frame
from storyteller_core.jobs import Job
from storyteller_core.store import JobStore

SECONDS = 5.0


def job(i: int, batch: str) -> Job:
    return Job(display_name=f"v{i}.mp4", source_path=f"/v/{i}.mp4", size_bytes=1, sha256=f"{i:064x}",
               mime_type="video/mp4", model="gemini-2.5-flash", prompt="p", batch_id=batch)


def writes_under_load(store: JobStore) -> tuple[float, float, int]:
    ids = [store.create(job(i, "load")).id for i in range(10)]
    stop = threading.Event()
    writes = [0] * 10
    reads = [0]

    def writer(n: int) -> None:
        while not stop.is_set():
            store.update(ids[n], progress=writes[n] % 100)
            writes[n] += 1

    def reader() -> None:
        while not stop.is_set():
            store.jobs_in_batch("load")
            reads[0] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(10)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    return sum(writes) / SECONDS, reads[0] / SECONDS, sum(writes)


def listing(store: JobStore, count: int) -> tuple[float, float]:
    batch = f"list-{count}"
    with store.cache.transact():
        for i in range(count):
            store.create(job(100_000 + count + i, batch))
    started = time.perf_counter()
    jobs = store.jobs_in_batch(batch)
    read_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    jobs_frame(jobs)
    frame_ms = (time.perf_counter() - started) * 1000
    return read_ms, frame_ms


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(Path(tmp) / "jobs")
        writes, reads, total = writes_under_load(store)
        print(f"10 writer threads + 1 reader for {SECONDS:g} s: {writes:,.0f} job writes/s ({total:,} in all), "
              f"{reads:,.1f} batch reads/s")
        print(f"{'jobs':>6} | {'read all ms':>11} | {'to DataFrame ms':>15}")
        for count in (1000, 10000):
            read_ms, frame_ms = listing(store, count)
            print(f"{count:>6} | {read_ms:11.0f} | {frame_ms:15.0f}")


if __name__ == "__main__":
    main()
