"""Trust, second pass (issue 17, item 1): team mode no longer trusts whatever is in Redis.

A real redis-server (with a password, as team mode now requires), real worker processes and the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from storyteller_core.intake.samples import make_video
from storyteller_core.intake.shared_root import SharedPaths
from storyteller_core.records.batch import Item
from storyteller_core.records.video import Video
from storyteller_core.team.broker_trust import InsecureBroker, record_problem, require_credentials
from storyteller_ui.view import own_thumbnail

from . import team_fixtures
from .helpers import ROOT
from .team_fixtures import needs_redis
from .test_team import Team, eventually

redis_server = team_fixtures.redis_server
redis_client = team_fixtures.redis_client
team_prefix = team_fixtures.team_prefix


# -- credentials -------------------------------------------------------------------------------------
def test_a_broker_url_without_a_password_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv("STORYTELLER_BROKER_INSECURE", raising=False)
    with pytest.raises(InsecureBroker) as refused:
        require_credentials("redis://127.0.0.1:6379/0")
    assert "no password" in refused.value.message and "STORYTELLER_BROKER_INSECURE=1" in refused.value.message
    assert "docs/TEAM.md" in refused.value.message
    with pytest.raises(InsecureBroker):
        require_credentials("redis://storyteller@127.0.0.1:6379/0")  # a user with no password
    require_credentials("redis://storyteller:s3cret@127.0.0.1:6379/0")
    require_credentials("redis://:s3cret@127.0.0.1:6379/0")
    monkeypatch.setenv("STORYTELLER_BROKER_INSECURE", "1")
    require_credentials("redis://127.0.0.1:6379/0")


def test_a_worker_will_not_start_on_a_broker_without_a_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STORYTELLER_BROKER_INSECURE"}
    env |= {
        "STORYTELLER_BROKER_URL": "redis://127.0.0.1:1/0",
        "GEMINI_API_KEY": "k",
        "STORYTELLER_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "storyteller_core.team.worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no password" in done.stderr and "Traceback" not in done.stderr


def test_the_cli_on_a_broker_without_a_password_says_why_and_how(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "STORYTELLER_BROKER_INSECURE"}
    env |= {"STORYTELLER_BROKER_URL": "redis://127.0.0.1:1/0", "STORYTELLER_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "storyteller_core", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and "no password" in done.stderr and "STORYTELLER_BROKER_INSECURE=1" in done.stderr, done


# -- records are checked before a worker acts on them --------------------------------------------------
def _video_json(**fields: object) -> str:
    data = json.loads(Video(id="ab" * 32, sha256="ab" * 32, sources=["shared:in/a.mp4"]).to_json())
    data.update(fields)
    return json.dumps(data)


@pytest.mark.parametrize(
    "fields, why",
    [
        ({}, None),
        ({"id": "cd" * 32}, "holds the id"),
        ({"state": "EXFILTRATE"}, "unknown state"),
        ({"size_bytes": "huge"}, "wrong type"),
        ({"sources": "shared:in/a.mp4"}, "wrong type"),
        ({"sources": ["shared:../../etc/shadow"]}, "not a path inside the shared folder"),
        ({"sources": ["shared:/etc/shadow"]}, "not a path inside the shared folder"),
        ({"sources": ["/root/outside/private.mp4"]}, "not a path inside the shared folder"),
    ],
)
def test_a_malformed_record_is_named_with_its_problem(tmp_path, fields, why):
    problem = record_problem(Video, "ab" * 32, _video_json(**fields), SharedPaths(tmp_path))
    assert (problem is None) if why is None else (why in (problem or "")), problem


def test_decoding_a_stored_path_refuses_absolute_parts_and_dot_dot(tmp_path):
    shared = SharedPaths(tmp_path)
    assert shared.decode("shared:in/a.mp4") == str(tmp_path.resolve() / "in" / "a.mp4")
    assert shared.decode("shared:/etc/shadow") is None  # pathlib: root / "/etc/shadow" == "/etc/shadow"
    assert shared.decode("shared:in/../../x") is None


# -- the shared folder at intake and in the worker ---------------------------------------------------------
@pytest.fixture
def shared_team(redis_server, team_prefix, tmp_path, emulator, monkeypatch):
    root = tmp_path / "shared"
    (root / "in").mkdir(parents=True)
    monkeypatch.setenv("STORYTELLER_SHARED_ROOT", str(root))  # the client's SharedPaths.from_env and the workers' env
    team = Team(redis_server.url, team_prefix, emulator, tmp_path)
    team.workers.env["STORYTELLER_SHARED_ROOT"] = str(root)
    yield team, root
    team.close()


@needs_redis
@pytest.mark.timeout(120)
def test_intake_refuses_a_file_outside_the_shared_folder_and_a_link_out_of_it(shared_team, tmp_path, emulator):
    team, root = shared_team
    outside = make_video(tmp_path / "outside" / "private.mp4")
    (root / "in" / "link.mp4").symlink_to(outside)
    refused = team.submit([outside, root / "in" / "link.mp4"], "Tell the story")
    rows = team.client.store.many(Item, [i.id for i in refused])
    assert all(r.error_message and "outside the shared folder" in r.error_message for r in rows), rows
    assert emulator.uploads_of("private.mp4") == 0 and emulator.uploads_of("link.mp4") == 0


@needs_redis
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_refuses_forged_sources_and_uploads_nothing(shared_team, tmp_path, emulator, redis_client):
    team, root = shared_team
    outside = make_video(tmp_path / "outside" / "private.mp4", seconds=1.0)
    inside = [make_video(root / "in" / f"{name}.mp4", seconds=1.0 + n) for n, name in enumerate(("forged", "linked"))]
    items = team.submit(inside, "Tell the story")  # no worker yet: nothing has run
    videos = [team.client.store.require(Video, i.video_id) for i in items]
    key = f"{team.config.prefix}:video:"
    forged = json.loads(redis_client.get(key + videos[0].id))
    forged["sources"] = [str(outside)]  # what anyone with redis-cli could write
    redis_client.set(key + videos[0].id, json.dumps(forged))
    inside[1].unlink()
    inside[1].symlink_to(outside)  # well-formed record, but the file now leads out of the shared folder
    team.start(1)
    assert eventually(lambda: "refused a malformed record" in team.workers.logs(), within_s=60), team.workers.logs()
    rows = team.wait(items[1:], timeout=60)
    assert rows[0].video is not None and "outside the shared folder" in (rows[0].video.error_message or ""), rows
    assert emulator.uploads_of("forged.mp4") == 0 and emulator.uploads_of("linked.mp4") == 0
    assert emulator.uploads_of("private.mp4") == 0


# -- a thumbnail is a file of ours ---------------------------------------------------------------------------
def test_a_thumbnail_is_drawn_only_from_the_data_dirs_thumbs_folder(tmp_path):
    thumbs = tmp_path / "data" / "thumbs"
    thumbs.mkdir(parents=True)
    (thumbs / "a.jpg").write_bytes(b"\xff\xd8")
    elsewhere = tmp_path / "secret.png"
    elsewhere.write_bytes(b"x")
    (thumbs / "link.jpg").symlink_to(elsewhere)
    data = tmp_path / "data"
    assert own_thumbnail(data, str(thumbs / "a.jpg")) == (thumbs / "a.jpg").resolve()
    for stored in (
        "http://localhost:9555/thumb.png",
        "//localhost:9555/t.png",
        "data:image/png;base64,AA",
        str(elsewhere),
        str(thumbs / "link.jpg"),
        str(thumbs / ".." / ".." / "secret.png"),
        str(thumbs / "missing.jpg"),
    ):
        assert own_thumbnail(data, stored) is None, stored
