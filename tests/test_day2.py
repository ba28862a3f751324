"""Issue 19, core and CLI: an analyst's day, second pass.

Rows asked of another Gemini are left for it (never failed); Gemini out of reach shows on the row and once as a
banner, and the model list backs off; refused inputs never become rows; the CSV and `status` say where a row
came from. Real SDK against the emulator (or a port nobody listens on); the CLI through subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storyteller_core.cli import main as cli
from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.errors import GeminiError, Kind
from storyteller_core.gemini.catalog import Catalog
from storyteller_core.gemini.reach import REACH, banner
from storyteller_core.records.analysis import AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.video import VideoState
from storyteller_core.views.rows import label_for, left_for_others, waiting_for

from .helpers import ROOT, TEST_KEY, ask, cli_env, read_csv, row_of_item, run_cli, wait_until

OTHER_KEY = "another-key-for-server-b-wxyz"


@pytest.fixture(autouse=True)
def _forget_reach():
    yield
    REACH.clear()  # Gemini out of reach in one test says nothing about the next


def _port(emu: Emulator) -> str:
    return emu.base_url.rstrip("/").rsplit(":", 1)[1]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- item 1: the app and the CLI never fail each other's rows -------------------------------------------------
def test_an_engine_leaves_rows_asked_of_another_gemini_unclaimed_unfailed_and_labelled(make_engine, videos, tmp_path):
    data = tmp_path / "shared"
    with Emulator(EmulatorConfig(processing_delay_s=120, analysis_delay_s=0.05)) as server_b:
        b = make_engine(data_dir=data, base_url=server_b.base_url, api_key=OTHER_KEY)
        theirs = b.commands.submit_paths(videos[:2], ask(b))
        for item in theirs:
            wait_until(lambda i=item: row_of_item(b, i.id).video.state is VideoState.FILE_PROCESSING, what="processing")
        b.shutdown(timeout=5)  # B's rows wait at Gemini B; nobody holds them now

        a = make_engine(data_dir=data)  # key A, another server
        own = a.commands.submit_paths(videos[2:3], ask(a))
        rows = a.wait([i.id for i in own], timeout=30)
        assert [r.status.value for r in rows] == ["Done"]  # A works: it simply leaves B's rows alone
        a.runner.sweep()  # and again, as its keeper does every ttl/2

        for item in theirs:
            row = row_of_item(a, item.id)
            assert row.analysis.state is AnalysisState.WAITING and row.analysis.error_message is None
            assert f"analysis:{row.analysis.id}" not in a.scheduler
            sentence = waiting_for(row, a.settings)
            assert sentence and sentence.startswith(
                "Waiting for the app or CLI that has the key for the Gemini server at "
                f"http://127.0.0.1:{_port(server_b)}, the key ending …wxyz"
            )
            assert "this one uses the Gemini server at" in sentence and "…6789" in sentence
            assert label_for(row, a.settings) == sentence
            assert OTHER_KEY not in sentence and TEST_KEY not in sentence

        assert left_for_others(a.store, a.settings) == {f"the Gemini server at http://127.0.0.1:{_port(server_b)}, the key ending …wxyz": 2}
        out = io.StringIO()  # the CLI's follow loop does not wait for rows it cannot do
        started = time.monotonic()
        left_rows = cli._follow(a, [i.id for i in theirs], out)
        assert time.monotonic() - started < 5 and len(left_rows) == 2
        assert cli._left_for_others(left_rows, a.settings) == 2
        assert cli._summary(left_rows, a.settings) == 1


@pytest.mark.slow
def test_a_cli_without_a_key_does_not_fail_the_apps_rows(make_engine, videos, tmp_path):
    data = tmp_path / "shared"
    with Emulator(EmulatorConfig(processing_delay_s=120, analysis_delay_s=0.05)) as slow:
        app = make_engine(data_dir=data, base_url=slow.base_url)  # the app, with a key: its files process slowly
        apps = app.commands.submit_paths(videos[:2], ask(app))
        for item in apps:  # the analyses park while their files process: no lease held, as the CLI finds them
            wait_until(lambda i=item: row_of_item(app, i.id).video.state is VideoState.FILE_PROCESSING, what="processing")

        result = run_cli(["process", str(videos[2]), "--csv", str(tmp_path / "out.csv")], cli_env(data))
        status = run_cli(["status"], cli_env(data))

        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 of 1 video(s) done." in result.stdout
        for item in apps:
            row = row_of_item(app, item.id)
            assert row.analysis.state is AnalysisState.WAITING and row.analysis.error_message is None, row.analysis
        assert "Press Retry" not in status.stdout + result.stdout + result.stderr
        assert "Failed" not in status.stdout
        waiting = [line for line in status.stdout.splitlines() if "Waiting for the app or CLI that has the key" in line]
        assert len(waiting) == 2, status.stdout
        assert all(f"127.0.0.1:{_port(slow)}, the key ending …6789" in line for line in waiting)
        assert TEST_KEY not in status.stdout


# -- item 2: Gemini out of reach --------------------------------------------------------------------------
def test_gemini_out_of_reach_shows_on_the_row_with_the_next_attempt_and_once_as_a_banner(make_engine, videos):
    engine = make_engine(base_url=f"http://127.0.0.1:{_dead_port()}")
    [item] = engine.commands.submit_paths(videos[:1], ask(engine))

    pattern = re.compile(r"^Can't reach Gemini, retrying (in \d+ s|now) \(attempt (\d+)\)$")

    def attempt() -> int:
        found = pattern.match(row_of_item(engine, item.id).label)
        return int(found.group(2)) if found else 0

    wait_until(lambda: attempt() >= 3, timeout=30, what="the row to say it retries")
    note = row_of_item(engine, item.id).retry_note
    assert note is not None and note.reason == "Can't reach Gemini" and note.next_at > time.time() - 1
    assert row_of_item(engine, item.id).status.value in ("Waiting", "Uploading")  # the status word is unchanged
    line = banner()
    assert line and re.match(r"^Can't reach Gemini since \d\d:\d\d; retrying", line), line
    assert "NETWORK" not in line


def test_the_model_list_backs_off_after_a_failure_and_logs_once_per_change(caplog):
    now = [1000.0]
    calls: list[float] = []
    failing = [True]

    def list_models() -> list[str]:
        calls.append(now[0])
        if failing[0]:
            raise GeminiError(Kind.TRANSIENT, "connection refused")
        return ["gemini-3.8-flash"]

    from storyteller_core.settings import Settings

    catalog = Catalog(list_models, lambda: Settings(), clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="storyteller_core.gemini.catalog")

    def read_many(n: int = 500) -> None:
        for _ in range(n):
            catalog.offered  # noqa: B018
        wait_until(lambda: not catalog._refreshing, timeout=5, what="the refresh thread")

    read_many()
    assert len(calls) == 1 and catalog.failing
    now[0] += 29
    read_many()
    assert len(calls) == 1  # 30 s after the first failure, not before
    now[0] += 2
    read_many()
    assert len(calls) == 2
    now[0] += 59  # the next waits 60 s
    read_many()
    assert len(calls) == 2
    now[0] += 2
    failing[0] = False
    read_many()
    assert len(calls) == 3 and not catalog.failing and catalog.offered == ["gemini-3.8-flash"]
    messages = [r.getMessage() for r in caplog.records if r.name == "storyteller_core.gemini.catalog"]
    assert len([m for m in messages if m.startswith("could not list the models offered")]) == 1
    assert messages.count("the models offered could be listed again") == 1


def test_the_model_list_against_a_dead_port_is_tried_once_not_on_every_read(make_engine):
    engine = make_engine(base_url=f"http://127.0.0.1:{_dead_port()}")
    wait_until(lambda: engine.catalog.failing, timeout=10, what="the first models.list to fail")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        engine.catalog.offered  # noqa: B018 - a page reads it many times a second
        engine.catalog.choices()
    log_file = engine.settings.data_dir / "logs" / "storyteller.jsonl"
    lines = [json.loads(line)["msg"] for line in log_file.read_text().splitlines()]
    assert len([m for m in lines if m.startswith("could not list the models offered")]) == 1
    assert banner() is not None and banner().startswith("Can't reach Gemini since")


# -- item 4 (CLI): a refused input is reported once, never a row ------------------------------------------
@pytest.mark.slow
def test_refused_inputs_are_reported_once_each_and_never_become_rows_even_on_a_rerun(tmp_path, videos, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    notes = tmp_path / "notes.mp4"
    notes.write_text("hello, not a video")
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as out:
        out.truncate(2 * 1024**3 + 1)  # sparse: over the 2 GB File API limit without writing 2 GB
    mistyped = tmp_path / "vidoes"  # a folder name with a typo
    args = ["process", str(videos[0]), str(notes), str(huge), str(mistyped), str(notes)]  # notes given twice

    runs = [run_cli([*args, "--csv", str(tmp_path / f"run{n}.csv")], env) for n in (1, 2)]

    for result in runs:
        assert result.returncode == 1, result.stdout + result.stderr
        refused = [line for line in result.stderr.splitlines() if line.startswith("Not added ")]
        assert len(refused) == 3, result.stderr  # once per source, notes.mp4 given twice included
        assert any(line.startswith("Not added notes.mp4: notes.mp4 is not a video") for line in refused), refused
        assert any(line.startswith("Not added huge.mp4: ") and "2" in line for line in refused), refused
        assert f"Not added vidoes: Nothing is at {mistyped}: no such file or folder" in result.stderr
        assert "does not exist" not in result.stderr and "Traceback" not in result.stderr
        assert "1 of 1 video(s) done." in result.stdout and "Failed" not in result.stdout
        rows = read_csv(tmp_path / f"run{1 if result is runs[0] else 2}.csv")
        assert [(r["file_name"], r["status"]) for r in rows] == [
            (videos[0].name, "Done"),
            ("notes.mp4", "Not added"),
            ("huge.mp4", "Not added"),
            ("vidoes", "Not added"),
        ]
        assert [r["source_path"] for r in rows] == [str(p) for p in (videos[0], notes, huge, mistyped)]
        assert all(r["error"] for r in rows[1:])
    status = run_cli(["status"], env)
    assert "1 row(s): 1 done, 0 failed" in status.stdout, status.stdout  # two runs, no Failed row, nothing doubled


@pytest.mark.slow
def test_nothing_to_process_when_every_input_is_refused(tmp_path, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    result = run_cli(["process", str(tmp_path / "no_such_folder"), "--csv", str(tmp_path / "out.csv")], env)
    assert result.returncode == 1
    assert "nothing to process: the 1 input(s) given were not added" in result.stderr
    assert "no_such_folder does not exist" not in result.stderr + result.stdout
    assert [r["status"] for r in read_csv(tmp_path / "out.csv")] == ["Not added"]


# -- item 6 (CLI and CSV): where a row came from ----------------------------------------------------------
@pytest.mark.slow
def test_the_csv_and_status_say_which_file_and_which_batch(tmp_path, one_video, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    first = one_video("Café réunion été.mp4", seed=1)
    second = tmp_path / "other" / "Café réunion été.mp4"
    second.parent.mkdir()
    second.write_bytes(one_video("x.mp4", seed=2).read_bytes())
    name = '=HYPERLINK("http://x") interviews of the second week of December'

    result = run_cli(
        [
            "process",
            str(first),
            str(second),
            "--batch-name",
            name,
            "--csv",
            str(tmp_path / "out.csv"),
            "--json",
            str(tmp_path / "out.json"),
        ],
        env,
    )
    status = run_cli(["status"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = read_csv(tmp_path / "out.csv")
    assert sorted(r["source_path"] for r in rows) == sorted([str(first), str(second)])  # same name, told apart
    assert {r["batch_name"] for r in rows} == {"'" + name}  # neutralized like every other cell
    assert {r["batch_name"] for r in json.loads((tmp_path / "out.json").read_text())} == {name}
    lines = status.stdout.splitlines()
    batch_line = next(line for line in lines if line.startswith("Batch "))
    assert name in batch_line  # in full: not cut at 26 characters
    batch_id = batch_line.split()[1]
    assert any(line.split() == ["STATUS", "%", "FILE"] for line in lines), status.stdout  # a header line
    by_id = run_cli(["status", "--batch", batch_id], env)
    assert by_id.returncode == 0 and by_id.stdout.count("Café réunion été.mp4") == 2, by_id.stdout + by_id.stderr
    export = run_cli(["export", "--csv", str(tmp_path / "all.csv")], env)
    assert export.returncode == 0 and {r["batch_name"] for r in read_csv(tmp_path / "all.csv")} == {"'" + name}


def test_chapter_files_are_named_after_the_video():
    from storyteller_core.views.board import Row, Status
    from storyteller_core.views.export import chapters_file_name

    row = Row(Item(id="481d2e5bafa4", display_name="Café réunion été.mp4"), None, None, Status.DONE, 100)
    assert chapters_file_name(row) == "Café réunion été.vtt"
    odd = Row(Item(id="x", display_name="../\u202eevil\u0007.mp4"), None, None, Status.DONE, 100)
    assert chapters_file_name(odd) == "evil.vtt"


# -- item 7 (scripts): app.sh says what it does and what to do ---------------------------------------------
def _fake_app_sh(tmp_path: Path) -> Path:
    """app.sh in a copy of the repo whose .venv/bin/python records what it is asked (and runs `-c` for real)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "app.sh", tmp_path / "scripts" / "app.sh")
    (tmp_path / "requirements.txt").write_text("streamlit>=1.67\n")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls.log"\n[ "$1" = "-c" ] && exec {sys.executable} "$@"\nexit 0\n')
    fake.chmod(0o755)
    return tmp_path / "scripts" / "app.sh"


def test_app_sh_says_it_installs_and_names_a_free_port_when_the_port_is_taken(tmp_path):
    app_sh = _fake_app_sh(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        first = subprocess.run([app_sh, "--server.port", str(port)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        same = subprocess.run([app_sh, f"--server.port={port}"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    assert "Installing the app's packages into .venv" in first.stdout and "Packages installed." in first.stdout
    for done in (first, same):
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"Port {port} is already in use" in done.stderr
        suggested = re.search(r"\./scripts/app\.sh --server\.port (\d+)", done.stderr)
        assert suggested and int(suggested.group(1)) != port, done.stderr
    calls = (tmp_path / "calls.log").read_text()
    assert "streamlit run" not in calls  # never started on a taken port

    free = subprocess.run(
        [app_sh, "--server.port", str(_dead_port())], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert free.returncode == 0 and "Installing" not in free.stdout, free.stderr  # installed once; a free port runs
    assert "streamlit run app.py" in (tmp_path / "calls.log").read_text()


def test_status_of_a_large_data_folder_prints_every_batch_name_in_full(tmp_path, capsys):
    from storyteller_core.records.batch import Batch
    from storyteller_core.storage.datadir import ensure_data_dir
    from storyteller_core.storage.disk_store import DiskStore

    ensure_data_dir(tmp_path / "data")
    store = DiskStore(tmp_path / "data" / "store")
    name = "Field interviews, second week of December, north site"
    try:
        store.add_batch(Batch(id="20261202-130000-abcd", name=name))
        cli._batch_summaries(store, store.batch_ids())
    finally:
        store.close()
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["BATCH", "ID"]
    assert out[1].startswith("20261202-130000-abcd") and out[1].endswith(name)


# -- leftovers: a row's retry note travels through the store ---------------------------------------------------
def test_a_row_the_cli_works_on_shows_its_retry_note_in_another_process(tmp_path, emulator, make_engine, one_video):  # type: ignore[no-untyped-def]
    from storyteller_core.views.board import batch_rows
    from storyteller_core.views.rows import Status

    emulator.config.rate_503, emulator.config.fault_on = 1.0, {"generate"}  # Gemini answers 503 to every question
    data = tmp_path / "data"
    video = one_video("harbour.mp4")
    cli_run = subprocess.Popen(
        [sys.executable, "-m", "storyteller_core", "process", str(video), "--csv", str(tmp_path / "out.csv")],
        env=cli_env(data, emulator.base_url),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (data / "settings.json").exists() or any(data.glob("*/cache.db")), cli_run, what="data folder")
        app = make_engine(data_dir=data, start=False)  # the app: no worker of its own, it only shows the rows
        noted: list = []

        def note_shown() -> bool:
            rows = batch_rows(app.store)
            noted[:] = [row.retry_note for row in rows if row.retry_note is not None]
            return bool(noted) and noted[0].attempt >= 3

        wait_until(note_shown, cli_run, timeout=90, what="the CLI's retry note on the app's row")
        words = noted[0].words()
        assert re.fullmatch(r"Gemini is unavailable \(503 UNAVAILABLE\), retrying (in \d+ s|now) \(attempt \d+\)", words), words
        [row] = batch_rows(app.store)
        assert REACH.note_for(row.analysis.id if row.analysis else None, row.video.id if row.video else None) is None  # not this process's
        assert row.label == words and row.status is Status.WRITING

        emulator.config.rate_503 = 0.0  # Gemini answers again: the CLI finishes, the note is gone from the store
        out, err = cli_run.communicate(timeout=120)
        assert cli_run.returncode == 0, err
        [row] = batch_rows(app.store)
        assert row.status is Status.DONE and row.retry_note is None
        assert app.store.retry_notes() == {}
    finally:
        if cli_run.poll() is None:
            cli_run.kill()
            cli_run.communicate()


def test_the_processing_wait_says_why_it_waits_and_polls_write_no_note_when_nothing_changes(make_engine, emulator, one_video):  # type: ignore[no-untyped-def]
    from storyteller_core.views.board import batch_rows
    from storyteller_core.views.rows import Status

    emulator.config.processing_delay_s = 600  # Gemini processes the file for a long time: the step keeps looking
    engine = make_engine(processing_budget_s=300)
    writes: list[dict] = []
    put = engine.store.put_retry_notes
    engine.store.put_retry_notes = lambda notes: (writes.append(dict(notes)), put(notes))[1]  # type: ignore[method-assign]
    [item] = engine.commands.submit_paths([one_video("harbour.mp4")], ask(engine))

    def looks() -> int:
        return len(emulator.stats.poll_times)  # files.get calls

    wait_until(lambda: looks() >= 3, timeout=30, what="three looks at the processing file")
    assert writes == []  # looks that answer write nothing

    emulator.config.rate_503, emulator.config.fault_on = 1.0, {"poll"}  # files.get now answers 503
    wait_until(lambda: any(f"video:{item.video_id}" in w for w in writes), timeout=30, what="the processing wait's note")
    task = f"video:{item.video_id}"
    wait_until(lambda: (n := REACH.note(task)) is not None and n.attempt >= 3, timeout=30, what="the attempts counting up")
    kept = engine.store.retry_notes()[task]  # kept in the store, for every process showing the row
    assert kept["reason"] == "Gemini is unavailable (503 UNAVAILABLE)" and kept["attempt"] >= 2
    [row] = batch_rows(engine.store)
    assert row.status is Status.PROCESSING
    assert re.fullmatch(r"Gemini is unavailable \(503 UNAVAILABLE\), retrying (in \d+ s|now) \(attempt \d+\)", row.label), row.label

    emulator.config.rate_503 = 0.0
    wait_until(lambda: task not in engine.store.retry_notes(), timeout=30, what="the note removed once files.get answers")
    assert batch_rows(engine.store)[0].retry_note is None
    before = len(writes)
    polls = looks()
    wait_until(lambda: looks() >= polls + 3, timeout=30, what="three more looks")
    assert len(writes) == before  # no write per look while nothing changes
