"""Team mode: the store, the limits and the Dramatiq workers on a real redis-server, against the emulator.

The store tests run against both backends (diskcache and Redis) with the same
assertions. The worker tests start 2-3 ``python -m storyteller_core.team.worker``
processes and SIGKILL some of them mid-step.
"""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.record import TransitionError
from storyteller_core.records.video import Video, VideoState
from storyteller_core.storage.disk_store import DiskStore, Store
from storyteller_core.views.board import rows_of

from . import team_fixtures
from .helpers import make_analysis, make_video
from .team_fixtures import REDIS_SERVER, RedisServer, needs_redis

redis_server = team_fixtures.redis_server
redis_client = team_fixtures.redis_client
team_prefix = team_fixtures.team_prefix

pytestmark = needs_redis


@pytest.fixture(params=["diskcache", "redis"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "diskcache":
        s = DiskStore(tmp_path / "store")
    else:
        from storyteller_core.storage.redis_store import RedisStore

        s = RedisStore(request.getfixturevalue("redis_client"), prefix=request.getfixturevalue("team_prefix"))
    yield s
    if request.param == "diskcache":
        s.close()


# -- the store, on both backends ----------------------------------------------------------------------
def test_redis_store_overrides_every_public_method_of_the_store():
    from storyteller_core.storage.redis_store import RedisStore

    public = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    inherited_ok = {"require", "update", "items", "needs_video"}  # written only in terms of the others
    missing = {name for name in public - inherited_ok if getattr(RedisStore, name) is getattr(Store, name)}
    assert missing == set()


def test_video_transitions_allow_its_life_and_refuse_skips(store):
    video = store.add_video(make_video())
    store.transition(Video, video.id, VideoState.UPLOADING)
    store.transition(Video, video.id, VideoState.UPLOADING)  # resumed after a crash
    store.transition(Video, video.id, VideoState.UPLOADED)
    with pytest.raises(TransitionError):
        store.transition(Video, video.id, VideoState.UPLOADING)
    store.transition(Video, video.id, VideoState.FILE_PROCESSING)
    store.transition(Video, video.id, VideoState.FILE_ACTIVE)
    store.transition(Video, video.id, VideoState.CREATED)  # expired: upload again
    stored = store.require(Video, video.id)
    assert stored.state_entered_at.keys() >= {"UPLOADING", "UPLOADED", "FILE_ACTIVE"}
    assert stored.progress == 0


def test_analysis_transitions_and_the_unfinished_index(store):
    analysis, created = store.add_analysis(make_analysis())
    twin, again = store.add_analysis(make_analysis())
    assert created and not again and twin.id == analysis.id  # one record per key
    assert [a.id for a in store.unfinished()] == [analysis.id]
    with pytest.raises(TransitionError):
        store.transition(Analysis, analysis.id, AnalysisState.COMPLETED)  # never without asking
    store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis.id, AnalysisState.FAILED)
    assert store.unfinished() == [] and store.unfinished_ids() == set()
    store.transition(Analysis, analysis.id, AnalysisState.WAITING)  # a retry
    assert [a.id for a in store.unfinished()] == [analysis.id]
    store.transition(Analysis, analysis.id, AnalysisState.ANALYZING)
    store.transition(Analysis, analysis.id, AnalysisState.COMPLETED)
    with pytest.raises(TransitionError):
        store.transition(Analysis, analysis.id, AnalysisState.WAITING)
    assert store.unfinished() == []
    assert store.require(Analysis, analysis.id).completed_at is not None


def test_sources_merge_and_values_round_trip(store):
    store.add_video(make_video())
    merged = store.add_video(make_video(sources=["/y/copy.mp4"]))
    assert merged.sources == ["/y/copy.mp4", "/x/café.mp4"]
    assert store.require(Video, "ab" * 32).display_name == "café.mp4"
    store.update(Video, "ab" * 32, progress=42)
    assert store.require(Video, "ab" * 32).progress == 42
    assert store.get(Video, "nope") is None and store.get(Video, None) is None


def test_batches_items_and_their_indexes_keep_order(store):
    video = store.add_video(make_video())
    a1, _ = store.add_analysis(make_analysis(prompt="p1"))
    a2, _ = store.add_analysis(make_analysis(prompt="p2"))
    store.add_batch(Batch(id="20250101-000000-aaaa", name="old"))
    store.add_batch(Batch(id="20250102-000000-bbbb", name="new"))
    ids = [f"i{n:02d}" for n in range(12)]
    for n, item_id in enumerate(ids):
        store.add_item(
            Item(
                id=item_id,
                batch_id="20250102-000000-bbbb" if n % 2 else "20250101-000000-aaaa",
                video_id=video.id,
                analysis_id=(a1 if n < 6 else a2).id,
            )
        )
    assert store.batch_ids() == ["20250102-000000-bbbb", "20250101-000000-aaaa"]  # newest first
    assert store.item_ids() == ids  # insertion order
    assert store.item_ids("20250101-000000-aaaa") == ids[0::2]
    assert [i.id for i in store.items_of(a1.id)] == ids[:6]
    assert {a.id for a in store.analyses_of(video.id)} == {a1.id, a2.id}
    assert store.needs_video(video.id)

    store.move_item("i00", a2.id)
    assert "i00" in [i.id for i in store.items_of(a2.id)] and "i00" not in [i.id for i in store.items_of(a1.id)]
    for item_id in ids[0::2]:
        assert store.delete_item(item_id) is not None
    assert store.delete_item("i00") is None
    assert store.batch_ids() == ["20250102-000000-bbbb"]  # an emptied batch goes with its last item
    assert store.get(Batch, "20250101-000000-aaaa") is None
    store.delete_analysis(a1.id)
    assert store.get(Analysis, a1.id) is None and [a.id for a in store.analyses_of(video.id)] == [a2.id]
    assert store.unfinished_ids() == {a2.id}


def test_the_checked_list_round_trips(store):
    assert store.pending() == []
    store.add_pending([{"path": "/x/é.mp4", "sha256": "ab"}])
    assert store.pending() == [{"path": "/x/é.mp4", "sha256": "ab"}]


def test_leases_claim_renew_release_and_a_dead_local_owner(store):
    assert store.claim("video:v1", "h:1:a", ttl=60)
    assert store.claim("video:v1", "h:1:a", ttl=60)  # the holder again
    assert not store.claim("video:v1", "other-host:2:b", ttl=60)
    assert store.renew(["video:v1", "video:v2"], "other-host:2:b", ttl=60) == ["video:v1"]
    store.release("video:v1", "other-host:2:b")  # not its lease: no effect
    assert not store.claim("video:v1", "third:3:c", ttl=60)
    store.release("video:v1", "h:1:a")
    assert store.claim("video:v1", "third:3:c", ttl=60)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{dead.stdout.strip()}:x"
    assert store.claim("analysis:a1", dead_owner, ttl=600)
    assert store.claim("analysis:a1", "other-host:1:y", ttl=600)  # owner process is gone
    assert not store.claim("analysis:a1", "third:2:z", ttl=600)  # a live (or remote) owner keeps it


def test_a_lease_runs_out_on_the_servers_clock(store):
    assert store.claim("video:v9", "far-host:1:a", ttl=0.2)
    assert not store.claim("video:v9", "far-host:2:b", ttl=0.2)
    time.sleep(0.3)
    assert store.claim("video:v9", "far-host:2:b", ttl=0.2)


def test_concurrent_transitions_never_lose_an_update(store):
    """Many threads bump one record while others move it: every change is kept, every move checked."""
    store.add_video(make_video())
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(25):
                store.mutate(Video, "ab" * 32, lambda v: setattr(v, "poll_attempts", v.poll_attempts + 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    moved = 0
    for _ in range(10):
        try:
            store.transition(Video, "ab" * 32, VideoState.UPLOADING)
            moved += 1
        except TransitionError:
            pass
    for t in threads:
        t.join()
    assert errors == [] and moved == 10
    assert store.require(Video, "ab" * 32).poll_attempts == 100


def test_board_rows_read_the_same_from_both_stores(store):
    video = store.add_video(make_video())
    analysis, _ = store.add_analysis(make_analysis())
    store.add_batch(Batch(id="b1"))
    item = store.add_item(Item(id="i1", batch_id="b1", display_name="café.mp4", video_id=video.id, analysis_id=analysis.id))
    store.transition(Video, video.id, VideoState.UPLOADING)
    store.update(Video, video.id, progress=30)
    [row] = rows_of(store, [item])
    assert row.video is not None and row.video.progress == 30 and not row.ended


@needs_redis
def test_shared_paths_are_stored_relative_and_read_at_this_machines_mount(redis_client, team_prefix, tmp_path):
    from storyteller_core.intake.shared_root import OutsideSharedRoot, SharedPaths
    from storyteller_core.storage.redis_store import RedisStore

    here, there = tmp_path / "here", tmp_path / "there"
    writer = RedisStore(redis_client, team_prefix, SharedPaths(here))
    reader = RedisStore(redis_client, team_prefix, SharedPaths(there))
    writer.add_video(make_video(sources=[str(here / "in" / "a.mp4"), "/elsewhere/b.mp4"]))
    assert '"shared:in/a.mp4"' in (redis_client.get(f"{team_prefix}:video:{'ab' * 32}") or "")
    assert reader.require(Video, "ab" * 32).sources == [str(there.resolve() / "in" / "a.mp4"), "/elsewhere/b.mp4"]
    with pytest.raises(OutsideSharedRoot):
        SharedPaths(here).check(tmp_path / "outside.mp4")
    assert SharedPaths(here).check(here / "x.mp4") == (here / "x.mp4").resolve()


def test_the_redis_fixture_runs_a_private_server(redis_server: RedisServer, redis_client):
    assert redis_client.ping()
    assert Path(REDIS_SERVER).exists() and redis_server.proc.poll() is None
    assert redis_client.config_get("save")["save"] == "" and redis_client.config_get("appendonly")["appendonly"] == "no"


# -- the global limits, on Redis's clock -------------------------------------------------------------------
@pytest.mark.slow
def test_upload_slots_cap_priority_and_a_dead_holders_lease_running_out(redis_client, team_prefix):
    from storyteller_core.work.redis_limits import UploadSlots

    slots = UploadSlots(redis_client, team_prefix, cap=2, ttl_s=0.4)
    assert slots.acquire("video:a", "ta") and slots.acquire("video:b", "tb")
    assert slots.acquire("video:a", "ta")  # the holder again: renewed, not a second slot
    assert not slots.acquire("video:c", "tc", rank=1)  # waits, first in line
    assert not slots.acquire("video:d", "td", rank=0)  # a high-priority upload goes before it
    assert slots.in_use() == 2
    slots.release("ta")
    assert not slots.acquire("video:c", "tc", rank=1)  # not its turn
    assert slots.acquire("video:d", "td", rank=0)
    for _ in range(3):  # "tb" keeps its slot while its upload makes progress
        time.sleep(0.2)
        assert slots.renew("tb")
    time.sleep(0.25)
    assert slots.renew("tb")
    time.sleep(0.25)  # "td" made no progress: its holder is gone, its lease ran out
    assert not slots.renew("td") and slots.acquire("video:c", "tc", rank=1)
    assert slots.in_use() == 2


@pytest.mark.slow
def test_poll_limits_keep_the_rate_and_the_cap_across_clients(redis_client, team_prefix):
    from storyteller_core.work.redis_limits import RedisPollLimits

    limits = [RedisPollLimits(redis_client, team_prefix, max_at_once=2, per_second=10) for _ in range(3)]
    assert limits[0].interval == pytest.approx(0.1)
    taken: list[float] = []
    lock = threading.Lock()

    def poll(limit) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with limit.slot() as slot:
                if slot.ok:
                    with lock:
                        taken.append(time.monotonic())
                    continue
            time.sleep(min(slot.wait_s, 0.05))

    threads = [threading.Thread(target=poll, args=(limits[n % 3],)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 8 <= len(taken) <= 11  # 10 per second, evenly spaced, whoever asks
    gaps = [b - a for a, b in zip(sorted(taken), sorted(taken)[1:], strict=False)]
    assert min(gaps) > 0.07
    time.sleep(0.15)
    with limits[0].slot() as a, limits[1].slot() as b:
        time.sleep(0.11)
        with limits[2].slot() as c:
            assert a.ok and not b.ok and c.ok  # b: too soon after a; c: a later call
            time.sleep(0.11)
            with limits[1].slot() as d:
                assert not d.ok and d.wait_s == pytest.approx(0.05)  # two at once already
    time.sleep(0.15)
    first = limits[0].slot("video:1").__enter__()
    assert first.ok
    waits = [limits[n % 3].slot(f"video:{n}").__enter__() for n in (2, 3, 4)]  # each is given a time of its own
    assert [w.ok for w in waits] == [False] * 3
    assert [round(w.wait_s, 1) for w in waits] == [0.1, 0.2, 0.3]
    time.sleep(0.12)
    with limits[2].slot("video:2") as second, limits[1].slot("video:3") as third:
        assert second.ok and not third.ok  # video:3 is served at its own time, not before


def test_the_quota_cooldown_and_the_gate_are_shared(redis_client, team_prefix):
    from storyteller_core.errors import StepFailed
    from storyteller_core.work.redis_limits import RedisCooldown, RedisGate

    one, two = RedisCooldown(redis_client, team_prefix), RedisCooldown(redis_client, team_prefix)
    one.note_exhausted(retry_after_s=None)  # the first 429: a 1 s backoff for everyone
    assert two.remaining() == pytest.approx(1.0, abs=0.1)
    one.note_exhausted(retry_after_s=None)
    assert two.remaining() == pytest.approx(2.0, abs=0.1)  # doubled
    two.note_exhausted(retry_after_s=5.0)  # the server's advice wins
    assert one.remaining() == pytest.approx(5.0, abs=0.1) and one.exhausted_for() < 1
    assert two.active_pause() is None
    until = one.pause()
    assert two.active_pause() == pytest.approx(until) and until - time.time() == pytest.approx(300, abs=2)
    assert two.paused_until == pytest.approx(until)
    two.note_ok()
    assert one.remaining() == 0.0 and one.active_pause() is None and one.exhausted_for() == 0.0

    gate_a, gate_b = (RedisGate(redis_client, team_prefix, one, "key-1") for _ in range(2))
    other_key = RedisGate(redis_client, team_prefix, one, "key-2")
    assert gate_b.check() == 0.0
    gate_a.reject_key()
    with pytest.raises(StepFailed):
        gate_b.check()
    assert gate_b.key_rejected and not other_key.key_rejected and other_key.check() == 0.0
    gate_a.model_missing("gemini-x", "404 not found")
    with pytest.raises(StepFailed, match="gemini-x"):
        other_key.check("gemini-x")
    gate_b.clear()
    assert gate_a.check("gemini-x") == 0.0 and not gate_a.key_rejected
    assert "key-1" not in str(redis_client.keys(f"{team_prefix}:*")) and "key-1" not in str(redis_client.get(gate_a.keys[0]))


def test_the_storage_budget_counts_each_file_once_and_frees_it_on_delete_or_expiry(redis_client, team_prefix):
    from storyteller_core.work.redis_limits import StorageBudget

    one, two = (StorageBudget(redis_client, team_prefix, cap_bytes=1000, ttl_s=60) for _ in range(2))
    assert one.reserve("vs-a", 600) and one.in_use() == 600
    assert two.reserve("vs-a", 600) and two.in_use() == 600  # the same file again (an upload tried again): counted once
    assert not two.reserve("vs-b", 500)  # would pass 1,000 bytes: waits
    assert two.reserve("vs-c", 400) and one.in_use() == 1000
    assert one.release("vs-a") == 600 and one.release("vs-a") == 0  # deleted after its last analysis; twice is harmless
    assert two.reserve("vs-b", 500) and one.in_use() == 900
    lone = StorageBudget(redis_client, team_prefix + "-lone", cap_bytes=100, ttl_s=60)
    assert lone.reserve("vs-big", 5000)  # one file alone always fits, however large: nothing waits forever
    assert not lone.reserve("vs-small", 1)

    short = StorageBudget(redis_client, team_prefix + "-short", cap_bytes=1000, ttl_s=0.2)
    assert short.reserve("vs-x", 900) and not short.reserve("vs-y", 200)
    time.sleep(0.3)  # the file expired at Gemini (48 h, here 0.2 s on Redis's clock): its bytes come back
    assert short.reserve("vs-y", 200) and short.in_use() == 200


def test_the_generate_rate_gives_each_task_its_own_slot_and_refuses_it_early(redis_client, team_prefix):
    from storyteller_core.work.redis_limits import CallRate

    rates = [CallRate(redis_client, f"{team_prefix}:generate-rate", per_minute=600) for _ in range(3)]  # one per 0.1 s
    assert rates[0].take("analysis:a") == 0.0  # free: call now
    waits = [rates[n % 3].take(f"analysis:{t}") for n, t in enumerate("bcd")]
    assert [round(w, 1) for w in waits] == [0.1, 0.2, 0.3]  # each reserved a time of its own, in the order asked
    assert rates[1].take("analysis:c") == pytest.approx(waits[1], abs=0.02)  # asking again keeps its place
    time.sleep(0.12)
    assert rates[2].take("analysis:b") == 0.0  # its time has come (from any worker): the reservation is used up
    assert rates[0].take("analysis:d") > 0.1  # too early: refused at the moment of the call, still reserved
    assert rates[0].take("analysis:e") == pytest.approx(0.3, abs=0.03)  # a newcomer goes after every reservation
    time.sleep(0.3)
    assert [r.take(t) for r, t in zip(rates, ("analysis:c", "analysis:d", "analysis:e"), strict=True)] == [0.0] * 3


# -- Dramatiq workers against the emulator ------------------------------------------------------------------
def eventually(check, within_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    """True once ``check()`` is (asked every 0.1 s), False if it still is not after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _team_settings(data_dir: Path, emu, **overrides) -> dict:
    values = dict(
        poll_initial_s=0.1,
        poll_max_s=0.5,
        upload_budget_s=30,
        processing_budget_s=30,
        analysis_budget_s=10,
        request_timeout_s=5,
        polls_per_second=20,
        max_uploads=2,
        max_workers=3,
    )
    values.update(overrides)
    return values


class Team:
    """A client (what the app and CLI build) and worker processes, on one Redis prefix, against the emulator."""

    def __init__(self, redis_url: str, prefix: str, emu, tmp_path: Path, **config) -> None:
        import json
        import os

        from storyteller_core.settings import Settings
        from storyteller_core.team.client import TeamClient
        from storyteller_core.work.redis_dispatch import TeamConfig

        from .helpers import ROOT, TEST_KEY

        self.emu = emu
        self.overrides = _team_settings(tmp_path / "data", emu, **config.pop("settings", {}))
        self.settings = Settings(data_dir=tmp_path / "data", api_key=TEST_KEY, base_url=emu.base_url, **self.overrides)
        self.config = TeamConfig(url=redis_url, prefix=prefix, **config)
        self.client = TeamClient(self.settings, self.config)
        env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "STORYTELLER_BROKER_URL": redis_url,
                "STORYTELLER_TEAM_PREFIX": prefix,
                "GEMINI_API_KEY": TEST_KEY,
                "GOOGLE_GEMINI_BASE_URL": emu.base_url,
                "STORYTELLER_DATA_DIR": str(tmp_path / "data"),
                "STORYTELLER_SETTINGS_JSON": json.dumps(self.overrides),
                "STORYTELLER_TEAM_HEARTBEAT_S": str(self.config.heartbeat_timeout_s),
                "STORYTELLER_TEAM_MAINTENANCE_CHANCE": str(self.config.maintenance_chance),
                "STORYTELLER_TEAM_LEASE_TTL_S": str(self.config.lease_ttl_s),
                "STORYTELLER_TEAM_UPLOAD_SLOT_TTL_S": str(self.config.upload_slot_ttl_s),
                "STORYTELLER_TEAM_IDLE_POLL_MS": str(self.config.idle_poll_ms),
                "STORYTELLER_TEAM_SWEEP_S": str(self.config.sweep_every_s),
                "STORYTELLER_TEAM_GENERATE_RPM": str(self.config.generate_per_minute),
                "STORYTELLER_TEAM_STORAGE_GB": str(self.config.storage_bytes / 1e9),
                "STORYTELLER_TEAM_KEEP_FILES": "1" if self.config.keep_files else "",
                "STORYTELLER_TEAM_STATUS_WATCH": "1" if self.config.status_watch else "0",
            }
        )
        log_dir = tmp_path / "workers"
        log_dir.mkdir()
        self.workers = team_fixtures.Workers(env, log_dir)

    def start(self, count: int) -> float:
        """Start worker processes and wait until each has sent a heartbeat; the seconds that took."""
        started = time.monotonic()
        self.workers.start(count)
        while len(self.client.workers()) < len(self.workers.alive()):
            assert time.monotonic() - started < 60, "workers did not start:\n" + self.workers.logs()
            time.sleep(0.05)
        return time.monotonic() - started

    def submit(self, paths: list[Path], prompt: str) -> list[Item]:
        from storyteller_core.commands import Ask

        return self.client.commands.submit_paths(paths, Ask(prompt=prompt, model=self.settings.model))

    def rows(self, items: list[Item]):  # type: ignore[no-untyped-def]
        return rows_of(self.client.store, self.client.store.many(Item, [i.id for i in items]))

    def wait(self, items: list[Item], timeout: float, during=None):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(items)
            if all(r.ended for r in rows):
                return rows
            if during is not None:
                during(rows)
            assert self.workers.alive(), "every worker died:\n" + self.workers.logs()
            if time.monotonic() > deadline:
                raise AssertionError(f"not done: {[r.status for r in rows if not r.ended]}\n" + self.workers.logs())
            time.sleep(0.2)

    def holders(self, kind: str) -> dict[str, int]:
        """task -> pid of the worker holding its lease."""
        out = {}
        for key in self.client.client.scan_iter(f"{self.config.prefix}:lease:{kind}:*"):
            value = self.client.client.get(key)
            if value:
                out[key.split(":lease:", 1)[1]] = int(value.split(":")[1])
        return out

    def lines_left(self, within_s: float = 15.0) -> list[str]:
        """Fences and leases still in Redis once ``within_s`` has passed (at once when there are none).

        When the rows have ended, a message line may still be finishing: e.g. the root message a parking analysis
        sent for a video that settled at that instant runs, finds nothing to do, and ends.
        """
        deadline = time.monotonic() + within_s
        while True:
            left = [k for pattern in ("fence", "lease") for k in self.client.client.scan_iter(f"{self.config.prefix}:{pattern}:*")]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def close(self) -> None:
        self.workers.stop()
        self.client.close()


def _jobs(videos: list[Path], tmp_path: Path) -> tuple[list[tuple[list[Path], str]], int, int]:
    """20 jobs over 8 distinct files (two more paths are copies): [(paths, prompt)], distinct files, distinct analyses."""
    import shutil

    originals = videos[:8]
    copies = []
    for n, source in enumerate(originals[:2]):
        copies.append(tmp_path / f"copy-{n}.mp4")
        shutil.copy(source, copies[-1])
    jobs = [(originals + copies, "Tell the story"), (originals[:6], "List the people"), (originals[2:6], "Where is it?")]
    return jobs, 8, 8 + 6 + 4


@pytest.fixture
def team_factory(redis_server, team_prefix, tmp_path):
    teams: list[Team] = []

    def make(emu, **config) -> Team:
        team = Team(redis_server.url, team_prefix, emu, tmp_path, **config)
        teams.append(team)
        return team

    yield make
    for team in teams:
        team.close()


@pytest.mark.slow
def test_three_workers_do_every_job_once_under_the_upload_cap(team_factory, emulator, videos, tmp_path):
    from storyteller_core.views.board import Status

    emulator.config.chunk_delay_s = 0.2  # uploads overlap
    team = team_factory(emulator)
    jobs, files, analyses = _jobs(videos, tmp_path)
    reads = [0]

    def read_board(rows) -> None:  # a UI client reading state throughout
        reads[0] += 1

    started = time.monotonic()
    # every question first: a file is deleted after its last analysis, so a question asked later uploads it again
    items = [item for paths, prompt in jobs for item in team.submit(paths, prompt)]
    boot = team.start(3)
    rows = team.wait(items, timeout=120, during=read_board)
    elapsed = time.monotonic() - started

    assert len(items) == 20 and [r.status for r in rows] == [Status.DONE] * 20
    assert sorted(emulator.stats.uploads_finished.values()) == [1] * files  # each file uploaded exactly once
    assert emulator.stats.uploads_started == files
    assert sum(emulator.stats.generates.values()) == analyses  # one call per distinct analysis
    assert emulator.stats.max_uploads_at_once <= team.settings.max_uploads
    assert reads[0] > 0
    assert team.client.store.unfinished() == []
    assert team.lines_left() == []  # every message line ended (a stray root message for a settled video ends too)
    # each file deleted after its last analysis (just after its row shows Done)
    assert eventually(lambda: emulator.files == {} and team.client.storage.in_use() == 0)
    print(f"\n20 jobs / 8 files / 3 workers: {elapsed:.1f} s after {boot:.1f} s to start the workers; {reads[0]} board reads")


@pytest.mark.slow
def test_uploads_wait_for_storage_and_generate_calls_keep_the_team_rate(team_factory, emulator, videos):
    """Storage for 2 files: the third waits until a file's last analysis ends and it is deleted; 240 generates/min."""
    from storyteller_core.views.board import Status

    arrivals: list[float] = []

    class Timed(list):  # the emulator appends each accepted generate call here: note when it arrived
        def append(self, call) -> None:  # type: ignore[no-untyped-def]
            arrivals.append(time.time())
            super().append(call)

    emulator.stats.wire = Timed()
    files = videos[:6]
    cap = 2 * max(p.stat().st_size for p in files) + 1
    team = team_factory(emulator, storage_bytes=cap, generate_per_minute=240.0)
    items = team.submit(files, "Tell the story") + team.submit(files, "List the people")
    stored = [0]

    def watch_storage(rows) -> None:
        stored[0] = max(stored[0], sum(f.size for f in list(emulator.files.values())))
        assert team.client.storage.in_use() <= cap

    team.start(2)
    rows = team.wait(items, timeout=180, during=watch_storage)

    assert [r.status for r in rows] == [Status.DONE] * 12
    assert sorted(emulator.stats.uploads_finished.values()) == [1] * 6  # waiting for room never uploads twice
    assert 0 < stored[0] <= cap  # never more than the budget held at Gemini (sampled)
    assert eventually(lambda: emulator.files == {} and team.client.storage.in_use() == 0)
    assert len(arrivals) == 12
    # one call per 0.25 s: the k-th call never came before the first plus k slots (a late message may come later)
    assert all(t - arrivals[0] >= k * 0.25 - 0.1 for k, t in enumerate(arrivals))
    print(f"\ngenerate calls over {arrivals[-1] - arrivals[0]:.2f} s; at most {stored[0]} of {cap} bytes stored")


@pytest.mark.slow
def test_one_worker_lists_processing_files_for_the_team_and_another_takes_over_when_it_dies(team_factory, emulator, videos):
    """12 files processing at once: files.list pages instead of files.get per file; the watching worker is killed."""
    from storyteller_core.views.board import Status

    emulator.config.processing_delay_s = 6.0
    # A file processing alone is looked at by files.get (a listing would cost the same call), as often as the poll
    # interval says: at the tests' usual 0.1 s that was up to 24 gets for the last file when load spread the uploads.
    # At 1 s (looked at every 1.5 s) the lone tail costs a few, and the count below measures the listing.
    team = team_factory(emulator, settings={"poll_initial_s": 1.0, "poll_max_s": 2.0})
    items = team.submit(videos[:12], "Tell the story")
    team.start(2)
    lock = f"{team.config.prefix}:watch:lock"
    killed: list[int] = []

    def kill_the_watcher(rows) -> None:
        if killed or emulator.stats.lists < 2 or team.client.client.hlen(f"{team.config.prefix}:watch:files") < 4:
            return  # kill it while it watches: it has listed, and files are still processing
        holder = team.client.client.get(lock)
        if holder:
            killed.append(int(holder.split(":")[1]))
            team.workers.kill(killed[0])
            team.workers.start(1)

    rows = team.wait(items, timeout=180, during=kill_the_watcher)

    assert killed, "the watcher was never killed"
    assert [r.status for r in rows] == [Status.DONE] * 12
    assert sorted(emulator.stats.uploads_finished.values()) == [1] * 12
    # bulk: a listing answers for every processing file; files.get only for a file a listing did not show
    assert emulator.stats.lists > 0
    assert sum(emulator.stats.polls.values()) < 12
    assert team.client.client.hlen(f"{team.config.prefix}:watch:files") == 0
    assert team.lines_left() == []
    print(
        f"\n12 files processing 6 s: {emulator.stats.lists} files.list pages, "
        f"{sum(emulator.stats.polls.values())} files.get; watcher pid {killed[0]} killed"
    )


@pytest.mark.slow
def test_a_video_asked_again_after_its_file_was_deleted_is_uploaded_again_every_time(team_factory, emulator, videos):
    """Files are deleted after their last analysis: asking later uploads again, as often as it is asked."""
    from storyteller_core.views.board import Status

    team = team_factory(emulator)
    team.start(1)
    for n in range(4):  # more than MAX_UPLOADS_PER_VIDEO: a deliberate deletion is not a file that kept vanishing
        items = team.submit(videos[:1], f"question {n}")
        [row] = team.wait(items, timeout=60)
        assert row.status is Status.DONE
        assert eventually(lambda: emulator.files == {})
    assert emulator.uploads_of(videos[0].name) == 4
    assert eventually(lambda: team.client.storage.in_use() == 0)  # released just after the file is deleted


@pytest.fixture(scope="module")
def forty_videos(tmp_path_factory) -> list[Path]:
    """40 distinct small videos (different content, so 40 Gemini files)."""
    from storyteller_core.intake.samples import make_batch

    return make_batch(tmp_path_factory.mktemp("forty"), 40, seconds=0.5)


def _issue_scale_jobs(videos: list[Path], tmp_path: Path) -> tuple[list[tuple[list[Path], str]], int, int]:
    """200 jobs over 40 distinct files: 10 paths are copies of others, 30 rows ask a question already asked.

    [(paths, prompt)], distinct files, distinct analyses (40 x 4 = 160).
    """
    import shutil

    folder = tmp_path / "jobs-in"
    folder.mkdir()
    originals = [Path(shutil.copy(v, folder / v.name)) for v in videos[:40]]
    copies = [Path(shutil.copy(v, folder / f"copy-{v.name}")) for v in originals[:10]]
    jobs = [
        (originals + copies, "Tell the story"),
        (originals, "List the people"),
        (originals, "Where is it?"),
        (originals, "What happens at the end?"),
        (originals[10:], "Tell the story"),
    ]
    assert sum(len(paths) for paths, _ in jobs) == 200
    return jobs, 40, 160


@pytest.mark.slow
def test_200_jobs_over_40_files_survive_a_worker_killed_mid_upload_and_one_mid_analysis(team_factory, emulator, forty_videos, tmp_path):
    """The issue's scale: 200 jobs, 40 files, 2-3 worker processes, two SIGKILLs, a UI client reading throughout."""
    from storyteller_core.storage.redis_store import RedisStore, connect
    from storyteller_core.views.board import Status

    emulator.config.chunk_delay_s = 1.0  # an upload takes about 2 s until one is killed in the middle
    emulator.config.analysis_delay_s = 1.5  # the same for an analysis
    # the emulator counts an abandoned upload session as in flight for 30 s: a dead holder's slot must outlive that
    team = team_factory(emulator, heartbeat_timeout_s=10.0, maintenance_chance=200_000, upload_slot_ttl_s=35.0)
    jobs, files, analyses = _issue_scale_jobs(forty_videos, tmp_path)
    items = [item for paths, prompt in jobs for item in team.submit(paths, prompt)]
    assert len(items) == 200 and len({i.analysis_id for i in items}) == analyses
    team.start(3)

    # a UI client: its own connection, reading the board (rows_of on the store) the whole time
    ui_redis = connect(team.client.config.url)
    ui_store = RedisStore(ui_redis, team.config.prefix)
    ui = {"reads": 0, "done": 0, "regressions": 0, "failed": 0, "short": 0}
    finished = threading.Event()

    def ui_client() -> None:
        ids = [i.id for i in items]
        while not finished.is_set():
            rows = rows_of(ui_store, ui_store.many(Item, ids))
            done = sum(1 for r in rows if r.status is Status.DONE)
            ui["reads"] += 1
            ui["short"] += len(rows) != len(ids)
            ui["failed"] += any(r.status is Status.FAILED for r in rows)
            ui["regressions"] += done < ui["done"]  # a row shown Done never goes back
            ui["done"] = max(ui["done"], done)
            finished.wait(0.3)

    reader = threading.Thread(target=ui_client, daemon=True)
    reader.start()

    killed: dict[str, tuple[str, int, float]] = {}  # "upload" / "analysis" -> (task, pid, when)
    taken_over: dict[str, float] = {}
    cut = {"uploads": 0, "analyses": 0}  # steps in flight in the killed workers (each runs 3 at once)

    def kill(what: str, task: str, pid: int) -> None:
        store = team.client.store
        held = [t for kind in ("video", "analysis") for t, p in team.holders(kind).items() if p == pid]
        cut["uploads"] += sum(
            1 for t in held if t.startswith("video:") and (v := store.get(Video, t[6:])) is not None and v.state is VideoState.UPLOADING
        )
        cut["analyses"] += sum(
            1
            for t in held
            if t.startswith("analysis:") and (a := store.get(Analysis, t[9:])) is not None and a.state is AnalysisState.ANALYZING
        )
        team.workers.kill(pid)
        killed[what] = (task, pid, time.monotonic())
        team.workers.start(1)  # a supervisor (systemd) starts another: 2-3 worker processes throughout

    def kill_and_watch(rows) -> None:
        alive = {p.pid for p in team.workers.alive()}
        if "upload" not in killed:
            for task, pid in team.holders("video").items():
                video = team.client.store.get(Video, task.split(":", 1)[1])
                sending = {session.display_name for session in list(emulator.sessions.values())}
                if pid in alive and video is not None and video.state is VideoState.UPLOADING and video.display_name in sending:
                    kill("upload", task, pid)  # between the upload's start and its final chunk
                    emulator.config.chunk_delay_s = 0.1
                    return
        elif "analysis" not in killed:
            for task, pid in team.holders("analysis").items():
                analysis = team.client.store.get(Analysis, task.split(":", 1)[1])
                if pid in alive and analysis is not None and analysis.state is AnalysisState.ANALYZING:
                    kill("analysis", task, pid)
                    emulator.config.analysis_delay_s = 0.2
                    return
        for what, (task, pid, when) in killed.items():
            holder = team.holders(task.split(":", 1)[0]).get(task)
            if what not in taken_over and holder is not None and holder != pid:
                taken_over[what] = time.monotonic() - when

    try:
        rows = team.wait(items, timeout=600, during=kill_and_watch)
    finally:
        finished.set()
        reader.join(10)
        ui_redis.close()

    assert set(killed) == {"upload", "analysis"}, f"the kills did not land: {killed}"
    assert [r.status for r in rows] == [Status.DONE] * 200
    assert len(emulator.stats.uploads_finished) == files
    assert sorted(emulator.stats.uploads_finished.values()) == [1] * files  # each file uploaded exactly once
    # a step cut by SIGKILL is done again once: an upload started again, a question asked again (Gemini may bill it)
    assert files <= emulator.stats.uploads_started <= files + cut["uploads"]
    assert analyses <= sum(emulator.stats.generates.values()) <= analyses + cut["analyses"]
    assert emulator.stats.max_uploads_at_once <= team.settings.max_uploads  # the cap held, kills included
    assert ui["reads"] > 0 and ui["short"] == 0 and ui["failed"] == 0 and ui["regressions"] == 0
    assert team.client.store.unfinished() == []
    assert team.lines_left() == []
    # each file deleted after its last analysis (just after its row shows Done)
    assert eventually(lambda: emulator.files == {} and team.client.storage.in_use() == 0)
    print(
        f"\n200 jobs / 40 files: takeover after SIGKILL {', '.join(f'{k} {v:.1f} s' for k, v in taken_over.items())}; "
        f"cut: {cut}; uploads started {emulator.stats.uploads_started}, generates "
        f"{sum(emulator.stats.generates.values())}; {ui['reads']} UI board reads"
    )


# -- fencing: which message may advance a task (no worker needed) ---------------------------------------------
@pytest.fixture
def team_client(redis_server, team_prefix, tmp_path, emulator):
    from storyteller_core.settings import Settings
    from storyteller_core.team.client import TeamClient
    from storyteller_core.work.redis_dispatch import TeamConfig

    from .helpers import TEST_KEY

    client = TeamClient(
        Settings(data_dir=tmp_path / "data", api_key=TEST_KEY, base_url=emulator.base_url),
        TeamConfig(url=redis_server.url, prefix=team_prefix, lease_ttl_s=5),
    )
    yield client
    client.close()


def test_one_message_line_per_task(team_client):
    d = team_client.dispatcher
    task = "analysis:a1"
    assert d.begin(task, "r1", "", "w1:1:x/r1") == ("go", "")  # a root message takes a task nobody advances
    assert d.begin(task, "r2", "", "w2:2:x/r2")[0] == "drop"  # a second root: dropped
    assert d.begin(task, "r1", "", "w3:3:x/r1") == ("busy-own", "w1:1:x/r1")  # r1 redelivered while its holder lives
    assert d.running(task) and not d.void(task)  # a running step is never voided

    assert d.finish(task, "r1", "c1", "w1:1:x/r1")  # r1 sent c1, then moved the fence to it
    assert not d.running(task)
    assert d.begin(task, "r1", "", "w3:3:x/r1")[0] == "drop"  # r1 redelivered after it finished: dropped
    assert d.begin(task, "c2", "r1", "w3:3:x/c2")[0] == "drop"  # another child of r1: dropped
    assert d.begin(task, "c1", "r1", "w2:2:x/c1") == ("go", "")

    # c1's holder died after sending d1 and before moving the fence: d1 takes over once c1's lease is gone
    assert d.begin(task, "d1", "c1", "w3:3:x/d1") == ("busy-parent", "w2:2:x/c1")
    assert d.take_lease(task, "w2:2:x/c1", "w3:3:x/d1")  # (a dead holder on this host: at once; else its TTL)
    assert d.begin(task, "d1", "c1", "w3:3:x/d1") == ("go", "")
    assert d.begin(task, "c1", "r1", "w2:2:x/c1")[0] == "drop"  # c1 redelivered: the line went on without it
    assert not d.finish(task, "c1", "", "w2:2:x/c1")  # c1's late finish changes nothing

    assert d.finish(task, "d1", "", "w3:3:x/d1")  # DONE: the line ends
    assert d.begin(task, "e1", "d1", "w1:1:x/e1")[0] == "drop"  # nothing after the end
    assert d.begin(task, "r3", "", "w1:1:x/r3") == ("go", "")  # a new root (a retry) starts a new line
    d.finish(task, "r3", "n3", "w1:1:x/r3", delay_s=30)
    assert d.void(task)  # cancelled while its next message waits: that message will be dropped
    assert d.begin(task, "n3", "r3", "w1:1:x/n3")[0] == "drop"


def test_resume_sends_work_no_live_line_advances_and_force_takes_over(team_client, videos):
    from storyteller_core.commands import Ask

    d, store = team_client.dispatcher, team_client.store
    items = team_client.commands.submit_paths(videos[:2], Ask(prompt="p", model=team_client.settings.model))
    assert sum(team_client.queue_sizes().values()) == 2  # one root message per analysis, nobody consumes them
    assert team_client.workers() == []  # a client that sent messages is no worker (Dramatiq's heartbeats list it)
    tasks = [f"analysis:{i.analysis_id}" for i in items]
    assert d.resume() == 2  # no fence yet (no worker began): both look lost
    d.begin(tasks[0], "x1", "", "w:1:x/x1")
    d.finish(tasks[0], "x1", "x2", "w:1:x/x1", delay_s=5)  # a live line waiting 5 s
    video_task = f"video:{store.require(Analysis, items[1].analysis_id or '').video_id}"
    d.begin(video_task, "v1", "", "w:1:x/v1")  # the second analysis is parked behind its video's live line
    assert d.resume() == 0
    before = sum(team_client.queue_sizes().values())
    assert d.resume(force=True) == 3  # both analyses and the video: each message may take over its line
    assert sum(team_client.queue_sizes().values()) == before + 3


def test_cancel_and_retry_through_the_team_client(team_client, videos):
    from storyteller_core.commands import Ask
    from storyteller_core.views.board import Status

    [item] = team_client.commands.submit_paths(videos[:1], Ask(prompt="p", model=team_client.settings.model))
    task = f"analysis:{item.analysis_id}"
    team_client.dispatcher.begin(task, "m1", "", "w:1:x/m1")
    team_client.dispatcher.finish(task, "m1", "m2", "w:1:x/m1", delay_s=5)  # waiting for its next step
    team_client.commands.cancel(item.id)
    [row] = rows_of(team_client.store, [team_client.store.require(Item, item.id)])
    assert row.analysis is not None and row.analysis.state is AnalysisState.CANCELLED and row.status is Status.CANCELLED
    assert not team_client.client.exists(team_client.dispatcher.fence_key(task))  # its pending message will be dropped
    team_client.commands.retry(item.id)
    assert team_client.store.require(Analysis, item.analysis_id or "").state is AnalysisState.WAITING
    assert sum(team_client.queue_sizes().values()) == 2  # the first root message (never consumed) and the retry's


@pytest.mark.slow
def test_the_cli_is_a_client_in_team_mode_and_the_workers_do_the_work(team_factory, emulator, videos, tmp_path):
    from .helpers import read_csv, run_cli

    team = team_factory(emulator)
    team.start(2)
    env = {**team.workers.env, "STORYTELLER_DATA_DIR": str(tmp_path / "client-data")}  # the client's own machine

    result = run_cli(["process", *map(str, videos[:4]), "--prompt", "Tell the story", "--csv", str(tmp_path / "out.csv")], env, timeout=150)

    assert result.returncode == 0, result.stdout + result.stderr + team.workers.logs()
    rows = read_csv(tmp_path / "out.csv")
    assert sorted(r["file_name"] for r in rows) == sorted(p.name for p in videos[:4]) and {r["status"] for r in rows} == {"Done"}
    assert {p.name: emulator.uploads_of(p.name) for p in videos[:4]} == {p.name: 1 for p in videos[:4]}
    assert not (tmp_path / "client-data" / "store").exists() or not list((tmp_path / "client-data" / "store").glob("cache.db"))
    status = run_cli(["status"], env)
    assert "4 row(s): 4 done" in status.stdout  # read from Redis, not from a local store
