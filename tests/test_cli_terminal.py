"""The CLI as a good terminal citizen: one live display that fits a terminal, plain events in a pipe, quiet logs."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from storyteller_core import logs
from storyteller_core.cli import main as cli
from storyteller_core.cli.progress import PlainLines, render
from storyteller_core.intake.samples import make_batch
from storyteller_core.records.batch import Item
from storyteller_core.views.board import LIFE_ORDER, Row, Status

from .helpers import ROOT, cli_env, run_cli

EVENT = re.compile(r"^(?P<name>clip-\d{3}\.mp4)  (?P<status>" + "|".join(re.escape(s.value) for s in Status) + r")(?::.*)?$")
TMUX = shutil.which("tmux")


def _events(stdout: str) -> dict[str, list[Status]]:
    """Each row's status lines, in order."""
    seen: dict[str, list[Status]] = {}
    for line in stdout.splitlines():
        found = EVENT.match(line)
        if found:
            seen.setdefault(found["name"], []).append(Status(found["status"]))
    return seen


@pytest.mark.slow
def test_piped_process_prints_one_plain_line_per_status_change(tmp_path, videos, emulator):
    # Each stage outlasts the CLI's 0.25 s look by far, so a busy machine still shows every video in >= 3 statuses
    # (with the fixture's 0.3 s processing and 0.05 s answer, a late look saw "processing" then "Done" only).
    emulator.config.processing_delay_s = 1.0
    emulator.config.analysis_delay_s = 0.8
    env = cli_env(tmp_path / "data", emulator.base_url)

    result = run_cli(["process", *map(str, videos[:6])], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr  # no colour, no cursor moves, no bars redrawn
    assert result.stderr == ""  # the JSON log lines went to the log file
    events = _events(result.stdout)
    assert sorted(events) == sorted(p.name for p in videos[:6]), result.stdout
    for name, statuses in events.items():
        order = [LIFE_ORDER.index(s) for s in statuses]
        assert order == sorted(set(order)), f"{name}: {statuses}"  # forward only: never the same status twice
        assert statuses[-1] is Status.DONE and len(statuses) >= 3, f"{name}: {statuses}"
    lines = result.stdout.splitlines()
    assert len(lines) == len(set(lines))  # nothing repeated
    assert lines[-1] == "6 of 6 video(s) done."


@pytest.mark.slow
def test_json_logs_go_to_the_log_file_and_to_stderr_only_with_verbose(tmp_path, videos, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    log_file = tmp_path / "data" / "logs" / "storyteller.jsonl"

    quiet = run_cli(["process", str(videos[0])], env)
    logged = log_file.read_text().splitlines()
    verbose = run_cli(["process", str(videos[1]), "--verbose"], env)

    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert quiet.stderr == "" and '"msg"' not in quiet.stdout
    assert any(json.loads(line)["msg"] == "engine started" for line in logged)
    assert any(json.loads(line)["msg"] == "engine started" for line in verbose.stderr.splitlines() if line.startswith("{"))
    assert '"msg"' not in verbose.stdout  # stdout keeps the rows only


@pytest.mark.slow
def test_status_finds_a_batch_by_id_or_by_name_and_explains_an_unknown_one(tmp_path, videos, emulator):
    env = cli_env(tmp_path / "data", emulator.base_url)
    assert run_cli(["process", str(videos[0]), "--batch-name", "Monday clips"], env).returncode == 0
    assert run_cli(["process", str(videos[1]), "--batch-name", "Tuesday clips"], env).returncode == 0

    by_name = run_cli(["status", "--batch", "Monday clips"], env)
    unknown = run_cli(["status", "--batch", "Wednesday"], env)

    assert by_name.returncode == 0 and videos[0].name in by_name.stdout and videos[1].name not in by_name.stdout
    assert "1 row(s): 1 done, 0 failed, 0 cancelled, 0 in flight, 0 waiting." in by_name.stdout
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "no batch with the id or name 'Wednesday'" in unknown.stderr and "Monday clips" in unknown.stderr
    assert "Give one of these to --batch" in unknown.stderr and "Traceback" not in unknown.stderr
    listed = re.search(r"^  (\S+)  Tuesday clips$", unknown.stderr, re.M)
    assert listed, unknown.stderr
    by_id = run_cli(["status", "--batch", listed.group(1)], env)
    assert videos[1].name in by_id.stdout and videos[0].name not in by_id.stdout


def _imported(args: list[str], env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "storyteller_core", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.slow
def test_status_and_export_import_only_what_they_need(tmp_path):
    env = cli_env(tmp_path / "data")

    status = _imported(["status"], env)
    export = _imported(["export", "--csv", str(tmp_path / "all.csv")], env)

    heavy = {"rich", "pandas", "google.genai", "av", "numpy", "storyteller_core.engine"}
    assert not heavy & status, heavy & status
    assert not {"rich", "google.genai", "av", "storyteller_core.engine"} & export


def test_an_unexpected_error_is_one_sentence_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    # As in a fresh process: no handler another test added (an AppTest engine logs to stderr at INFO), and main()
    # decides afresh whether the terminal gets log lines; what main() adds goes away after.
    package_log = logging.getLogger("storyteller_core")
    monkeypatch.setattr(package_log, "handlers", [])
    monkeypatch.setattr(logs, "_configured", set(logs._configured) - {"stderr"})

    def broken(*_: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_status", broken)  # the parser binds the command when main() builds it

    code = cli.main(["status"])

    err = capsys.readouterr().err
    log_file = tmp_path / "data" / "logs" / "storyteller.jsonl"
    assert code == 3
    assert "something unexpected went wrong (RuntimeError: a bug)" in err and "Run the same command again" in err
    assert f"report it with the log file {log_file}." in err and "Traceback" not in err
    assert "RuntimeError: a bug" in json.loads(log_file.read_text().splitlines()[-1])["traceback"]


# -- the live display, rendered at a given terminal size ---------------------------------------
def _rows(statuses: list[Status]) -> list[Row]:
    base = time.time()
    return [
        Row(
            Item(id=f"i{n:03d}", display_name=f"clip-{n:03d}.mp4", created_at=base + n),
            None,
            None,
            status,
            100 if status is Status.DONE else 40,
        )
        for n, status in enumerate(statuses)
    ]


def _screen(rows: list[Row], width: int = 80, height: int = 24, note: str | None = None) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, height=height, force_terminal=True, color_system=None)
    console.print(render(rows, console, elapsed_s=65, note=note))
    return console.file.getvalue().rstrip("\n").split("\n")  # type: ignore[attr-defined]


def test_a_small_batch_shows_every_row_in_order():
    lines = _screen(_rows([Status.DONE, Status.UPLOADING, Status.WAITING]))

    assert lines[0].startswith("1 done · 0 failed · 1 in flight · 1 waiting") and lines[0].endswith("1:05")
    assert [line.split()[0] for line in lines[1:]] == ["clip-000.mp4", "clip-001.mp4", "clip-002.mp4"]
    assert all(len(line) <= 80 for line in lines)


def test_a_big_batch_fits_the_terminal_with_rows_in_flight_first_and_a_count_of_the_rest():
    statuses = [Status.DONE] * 10 + [Status.FAILED] + [Status.PROCESSING] * 25 + [Status.WAITING] * 4
    lines = _screen(_rows(statuses), note="Gemini quota exhausted; the batch resumes at 10:00.")

    assert len(lines) <= 24 - 4
    assert lines[0].startswith("10 done · 1 failed · 25 in flight · 4 waiting")
    assert lines[1] == "Gemini quota exhausted; the batch resumes at 10:00."
    shown = [line.split()[0] for line in lines[2:-1]]
    assert shown == [f"clip-{n:03d}.mp4" for n in range(35, 35 - len(shown), -1)]  # in flight, most recent first
    assert lines[-1] == f"... and {40 - len(shown)} more (10 done, 1 failed, {25 - len(shown)} in flight, 4 waiting)"
    assert all(len(line) <= 80 for line in lines)


def test_a_finished_big_batch_shows_failures_first():
    lines = _screen(_rows([Status.DONE] * 30 + [Status.FAILED]), height=10)

    assert len(lines) == 6 and lines[1].split()[0] == "clip-030.mp4" and "Failed" in lines[1]
    assert lines[-1] == "... and 27 more (27 done)"


def test_plain_lines_name_each_change_once():
    out = io.StringIO()
    display = PlainLines(out)
    for statuses in ([Status.WAITING, Status.WAITING], [Status.UPLOADING, Status.WAITING], [Status.UPLOADING, Status.WAITING]):
        display.show(_rows(statuses))

    assert out.getvalue().splitlines() == ["clip-000.mp4  Waiting", "clip-001.mp4  Waiting", "clip-000.mp4  Uploading"]


# -- a real terminal: tmux, 80x24 --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_forty_videos_in_an_80x24_tmux_pane_leave_a_short_scrollback(tmp_path, emulator):
    emulator.config.processing_delay_s = 0.5
    folder = tmp_path / "forty"
    make_batch(folder, 40, seconds=1)
    env = cli_env(tmp_path / "data", emulator.base_url)
    socket = f"storyteller-test-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "tmux.conf"  # a private server: no status line (the pane is the whole 80x24), a long history
    conf.write_text("set -g status off\nset -g history-limit 10000\nset -g default-terminal screen\n")
    command = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m storyteller_core process "
        f'{shlex.quote(str(folder))}; echo "[exit $?]"; sleep 600'
    )

    def tmux(*args: str) -> str:
        return subprocess.run(
            [TMUX, "-L", socket, "-f", str(conf), *args],
            env=env,
            capture_output=True,
            text=True,  # type: ignore[list-item]
            timeout=30,
            check=True,
        ).stdout

    tmux("new-session", "-d", "-s", "cli", "-x", "80", "-y", "24", command)
    try:
        deadline = time.monotonic() + 240
        midway = ""
        while "[exit " not in (screen := tmux("capture-pane", "-p", "-t", "cli")):
            assert time.monotonic() < deadline, screen
            if not midway and re.search(r"· [1-9]\d* in flight", screen) and "... and " in screen:
                midway = screen  # a frame with rows in flight, for the record
            time.sleep(0.5)
        scrollback = tmux("capture-pane", "-p", "-S", "-", "-t", "cli").rstrip("\n").split("\n")
        size = tmux("display-message", "-p", "-t", "cli", "#{pane_width}x#{pane_height}").strip()
    finally:
        subprocess.run([TMUX, "-L", socket, "kill-server"], env=env, capture_output=True, timeout=30)  # type: ignore[list-item]

    out = ROOT / "test-output" / "cli-tmux-80x24.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(screen)
    out.with_name("cli-tmux-80x24-midway.txt").write_text(midway)
    out.with_name("cli-tmux-80x24-scrollback.txt").write_text("\n".join(scrollback) + "\n")
    assert size == "80x24"
    assert "[exit 0]" in screen and "40 of 40 video(s) done." in screen, screen
    assert "40 done · 0 failed · 0 in flight · 0 waiting" in screen and "... and " in screen, screen
    assert len(scrollback) < 40, "\n".join(scrollback)  # one display redrawn in place, not a frame per refresh
    assert "Traceback" not in "\n".join(scrollback)
