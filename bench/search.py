"""Search everything (issue 21 item 3): the cost of keeping the index in step, and of a search, as the library grows.

    python bench/search.py                       # 1,000 and 10,000 stories
    python bench/search.py --stories 1000,10000,100000

For each size, in a fresh data dir, the store is filled with that many finished structured stories (title, about
120 words of prose, 5 key moments, 2 people, 1 place, 4 tags each: 14 texts per story), in one batch, through the
store's own methods (in one transaction per 5,000 records, so the set-up does not dominate). Then:
  build     the first sync: every story indexed
  sync      a sync with nothing new (what every search does first): median of --reads
  sync+1    a sync after one more batch of 10 stories was added
  removed   a sync after that batch was removed
  search    one word present in every story (the worst case: ranking every hit) / a rare word (in 1 story) /
            three words / a phrase of operators: each the median of --reads, limit 20, sync excluded
  size      the index file (MB)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storyteller_core.collection.search import SearchIndex  # noqa: E402
from storyteller_core.records.analysis import Analysis, AnalysisState  # noqa: E402
from storyteller_core.records.batch import Batch, Item  # noqa: E402
from storyteller_core.records.story import Moment, Story  # noqa: E402
from storyteller_core.records.video import Video, VideoState  # noqa: E402
from storyteller_core.storage.disk_store import DiskStore  # noqa: E402

WORDS = (
    "harbour",
    "market",
    "crowd",
    "night",
    "pricing",
    "product",
    "interview",
    "street",
    "light",
    "camera",
    "window",
    "door",
    "customer",
    "shelf",
    "voice",
    "music",
    "rain",
    "bicycle",
    "train",
    "kitchen",
    "table",
    "laughter",
    "sign",
    "poster",
    "counter",
    "queue",
    "van",
    "bridge",
    "river",
)
CHUNK = 5000


def story_of(i: int, rng: random.Random) -> Story:
    prose = " ".join(rng.choice(WORDS) for _ in range(120)) + f" unique{i:07d}"
    moments = [Moment(float(s), " ".join(rng.choice(WORDS) for _ in range(8))) for s in (0, 12, 24, 36, 48)]
    return Story(
        text=prose,
        title=f"Story {i} of the {rng.choice(WORDS)}",
        moments=moments,
        people=["A woman in a red coat", "A man at the counter"],
        places=["A street market"],
        tags=rng.sample(WORDS, 4),
    )


def fill(store: DiskStore, start: int, count: int, batch_id: str, rng: random.Random) -> list[str]:
    """``count`` finished stories in batch ``batch_id`` (its rows added as Start adds a checked list)."""
    items = []
    for first in range(start, start + count, CHUNK):
        with store.cache.transact():  # the bench's set-up only: the app writes each record in its own transaction
            for i in range(first, min(first + CHUNK, start + count)):
                sha = f"{i:064x}"
                video = Video(
                    id=sha,
                    sha256=sha,
                    display_name=f"video-{i:07d}.mp4",
                    sources=[f"/v/{i}.mp4"],
                    size_bytes=10**6,
                    duration_s=60.0,
                    state=VideoState.FILE_ACTIVE,
                    backend="b",
                )
                story = story_of(i, rng)
                analysis = Analysis(
                    id=f"{i:032x}",
                    video_id=sha,
                    model="gemini-3-flash",
                    prompt="Tell",
                    backend="b",
                    options={"structured": True},
                    state=AnalysisState.COMPLETED,
                    story=story.text,
                    structured=story.to_dict(),
                    completed_at=time.time(),
                )
                store.add_video(video)
                store.add_analysis(analysis)
                items.append(
                    Item(
                        id=f"it-{i:08d}",
                        batch_id=batch_id,
                        display_name=video.display_name,
                        source_path=f"/v/{i}.mp4",
                        video_id=sha,
                        analysis_id=analysis.id,
                    )
                )
    store.add_pending([{"path": item.source_path} for item in items])
    store.start_batch(Batch(id=batch_id, name=batch_id), items)
    return [item.id for item in items]


def median_ms(run, reads: int) -> float:  # type: ignore[no-untyped-def]
    timings = []
    for _ in range(reads):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2)


def bench(stories: int, reads: int) -> dict[str, float | int]:
    rng = random.Random(stories)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = DiskStore(data / "store")
        started = time.perf_counter()
        fill(store, 0, stories, "20261202-000000-big", rng)
        filled_s = time.perf_counter() - started
        index = SearchIndex.of(data)
        started = time.perf_counter()
        first = index.sync(store)
        build_s = time.perf_counter() - started
        assert first.added == stories, first
        sync_ms = median_ms(lambda: index.sync(store), reads)
        small = fill(store, stories, 10, "20261202-000001-new", rng)
        started = time.perf_counter()
        report = index.sync(store)
        plus_ms = (time.perf_counter() - started) * 1000
        assert report.added == 10, report
        for item_id in small:
            store.delete_item(item_id)
        started = time.perf_counter()
        report = index.sync(store)
        removed_ms = (time.perf_counter() - started) * 1000
        assert report.removed == 10, report
        common = median_ms(lambda: index.search("market", limit=20), reads)
        rare = median_ms(lambda: index.search(f"unique{stories // 2:07d}", limit=20), reads)
        assert index.search(f"unique{stories // 2:07d}")[0].file_name == f"video-{stories // 2:07d}.mp4"
        three = median_ms(lambda: index.search("crowd night pricing", limit=20), reads)
        operators = median_ms(lambda: index.search('NEAR( "river" AND * -bridge', limit=20), reads)
        size_mb = sum(f.stat().st_size for f in (data / "search").iterdir()) / 2**20
        texts = index.counts()["texts"]
        index.close()
        store.close()
    return {
        "stories": stories,
        "texts": texts,
        "fill_s": round(filled_s, 1),
        "build_s": round(build_s, 2),
        "sync_nothing_new_ms": sync_ms,
        "sync_plus_10_ms": round(plus_ms, 1),
        "sync_removed_10_ms": round(removed_ms, 1),
        "search_common_ms": common,
        "search_rare_ms": rare,
        "search_three_words_ms": three,
        "search_operators_ms": operators,
        "index_mb": round(size_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", default="1000,10000", help="comma-separated sizes")
    parser.add_argument("--reads", type=int, default=7)
    args = parser.parse_args()
    for size in (int(s) for s in args.stories.split(",")):
        result = bench(size, args.reads)
        print("  ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
