"""Untrusted text and the local data dir: formula cells, terminal escapes, tamperable folders, the log file."""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from storyteller_core import logs, sanitize
from storyteller_core.errors import DataDirError
from storyteller_core.sanitize import neutralize_frame, spreadsheet_cell, terminal_text
from storyteller_core.storage.datadir import SUBFOLDERS, ensure_data_dir, ensure_private_dir

POSIX = hasattr(os, "geteuid")
posix_only = pytest.mark.skipif(not POSIX, reason="POSIX owners and modes")

# -- spreadsheets ------------------------------------------------------------------------------

OWASP = [
    '=HYPERLINK("http://x","click").mp4',
    "+cmd|calc.webm",
    "@SUM(1+1).mov",
    "-2+3.mkv",
    "=1+1 was the story's first line",
    "\t=cmd",
    "\r=cmd",
    "  =1+1",
    "\u3000@SUM(A1)",
    "＝1+1",
    "＋cmd",
    "－2",
    "＠SUM(A1)",
]


def _quoted(text: str) -> str:
    return "'" + text.replace("\r", "\n")  # a CR also becomes LF, so every CSV writer quotes the cell


@pytest.mark.parametrize("text", OWASP)
def test_formula_cells_are_quoted_and_stay_readable(text: str) -> None:
    assert spreadsheet_cell(text) == _quoted(text)


@pytest.mark.parametrize("text", ["", "plain.mp4", "Café 東京 🎬", "a=b", "2+3", "'=already quoted", "email@x.org"])
def test_plain_cells_are_unchanged(text: str) -> None:
    assert spreadsheet_cell(text) == text


def test_frame_round_trips_through_csv_as_quoted_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"file": OWASP, "story": ["fine"] * len(OWASP), "tokens": range(-3, len(OWASP) - 3)})
    before = frame.copy()

    out = neutralize_frame(frame)
    path = tmp_path / "out.csv"
    out.to_csv(path, index=False)
    back = pd.read_csv(path, dtype=str, keep_default_na=False)

    assert back["file"].tolist() == [_quoted(text) for text in OWASP]  # starts with ' even after CSV quoting
    assert back["story"].tolist() == ["fine"] * len(OWASP)
    assert back["tokens"].tolist() == [str(n) for n in range(-3, len(OWASP) - 3)]  # numbers keep their minus sign
    assert out["tokens"].dtype == frame["tokens"].dtype
    pd.testing.assert_frame_equal(frame, before)  # the input is not modified


def test_a_carriage_return_cannot_start_a_new_row() -> None:
    story = 'fine so far\r=HYPERLINK("http://x","click")'
    text = neutralize_frame(pd.DataFrame({"story": [story], "n": [1]})).to_csv(index=False)
    back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert back.shape == (1, 2)  # still one row: the cell was quoted, so no row begins with =HYPERLINK
    assert back["story"][0] == story.replace("\r", "\n")


def test_frame_text_of_every_kind_is_neutralised() -> None:
    frame = pd.DataFrame(
        {
            "obj": pd.Series(["=1", None, 3], dtype=object),
            "string": pd.Series(["-x", "y", None], dtype="string"),
            "cat": pd.Categorical(["@a", "b", "@a"]),
            "float": [-1.5, 2.0, float("nan")],
        }
    )
    out = neutralize_frame(frame)
    assert out["obj"].tolist()[0] == "'=1" and out["obj"].tolist()[2] == 3
    assert out["string"].tolist()[:2] == ["'-x", "y"]
    assert list(out["cat"]) == ["'@a", "b", "'@a"]
    assert out["float"].tolist()[:2] == [-1.5, 2.0]


# -- terminals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x1b[2Jb", "ab"),
        ("\x1b]8;;http://x\x07link\x1b]8;;\x07", "link"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("ring\x07", "ring"),
        ("nul\x00l", "null"),
        ("c1\x9b2Jx", "c1x"),
        ("\x9d8;;http://x\x9clink\x9d8;;\x9c", "link"),
        ("\x1b]0;title\x07after", "after"),
        ("\x1bcreset", "reset"),
        ("del\x7fete", "delete"),
        ("evil\u202egpj.mp4", "evilgpj.mp4"),
        ("two\nlines\tand\r\nthree", "two lines and three"),
    ],
)
def test_terminal_text_strips_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    out = terminal_text(raw)
    assert out == shown
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_terminal_text_keeps_unicode_and_optionally_lines() -> None:
    assert terminal_text("Café 東京 🎬 👩‍💻") == "Café 東京 🎬 👩‍💻"  # the ZWJ in the emoji stays
    assert terminal_text("a\r\nb\tc\x1b[1m", one_line=False) == "a\nb\tc"


def test_secrets_are_scrubbed_and_the_registry_moved() -> None:
    assert logs.register_secret is sanitize.register_secret and logs.scrub is sanitize.scrub
    sanitize.register_secret("sk-test-abcdef")
    sanitize.register_secret("sk-test-abcdef-longer")
    assert sanitize.scrub("key sk-test-abcdef-longer and sk-test-abcdef") == "key *** and ***"


# -- the data dir ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_fresh_data_dir_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0o277)  # even a umask that takes the owner's bits
    try:
        root = ensure_data_dir(tmp_path / "new" / "parent" / "data")
    finally:
        os.umask(old)
    assert root == tmp_path / "new" / "parent" / "data"
    for folder in [tmp_path / "new", tmp_path / "new" / "parent", root, *(root / name for name in SUBFOLDERS)]:
        assert folder.is_dir()
        if POSIX:
            assert _mode(folder) == 0o700, folder
    assert ensure_data_dir(root) == root  # a second start accepts what the first made


@posix_only
@pytest.mark.parametrize(("mode", "says"), [(0o777, "writable by other users (mode 0777)"), (0o770, "writable by its group (mode 0770)")])
def test_writable_data_dir_is_refused(tmp_path: Path, mode: int, says: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(DataDirError) as caught:
        ensure_data_dir(root)
    assert says in caught.value.message and f"chmod 700 {root}" in caught.value.message


@posix_only
def test_writable_subfolder_is_refused(tmp_path: Path) -> None:
    root = ensure_data_dir(tmp_path / "data")
    (root / "spool").chmod(0o757)
    with pytest.raises(DataDirError, match="spool is writable by other users"):
        ensure_data_dir(root)


@pytest.mark.skipif(not POSIX or os.geteuid() != 0, reason="needs root to give a folder away")
def test_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(DataDirError, match="belongs to another user .*uid 65534"):
        ensure_data_dir(root)


@posix_only
@pytest.mark.parametrize("elsewhere", ["another user's", "world-writable"])
def test_symlinked_subfolder_pointing_elsewhere_is_refused(tmp_path: Path, elsewhere: str) -> None:
    root = ensure_data_dir(tmp_path / "data")
    target = tmp_path / "elsewhere"
    target.mkdir()
    if elsewhere == "world-writable":
        target.chmod(0o777)
    elif os.geteuid() == 0:
        os.chown(target, 65534, 65534)
    else:
        pytest.skip("needs root to give a folder away")
    (root / "store").rmdir()
    (root / "store").symlink_to(target)
    with pytest.raises(DataDirError, match=r"store is a link to .*elsewhere.*rm "):
        ensure_data_dir(root)
    assert not any(target.iterdir())


@posix_only
def test_symlink_to_a_private_folder_of_ours_is_accepted(tmp_path: Path) -> None:
    bigger_disk = tmp_path / "bigger"
    bigger_disk.mkdir(mode=0o700)
    root = tmp_path / "data"
    root.mkdir(mode=0o700)
    (root / "spool").symlink_to(bigger_disk)
    assert ensure_data_dir(root) == root


@pytest.mark.parametrize("where", ["root", "logs"])
def test_file_planted_where_a_folder_belongs_is_refused(tmp_path: Path, where: str) -> None:
    root = tmp_path / "data"
    if where == "root":
        root.write_text("x")
    else:
        root.mkdir(mode=0o700)
        (root / "logs").write_text("x")
    with pytest.raises(DataDirError, match="is a file, not a folder"):
        ensure_data_dir(root)


def test_dangling_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataDirError, match="does not exist"):
        ensure_private_dir(tmp_path / "data")


# -- the log -----------------------------------------------------------------------------------


@pytest.fixture
def fresh_logging() -> Iterator[logging.Logger]:
    """setup_logging as in a new process; the handlers it adds are removed afterwards."""
    root = logging.getLogger("storyteller_core")
    handlers, configured = root.handlers[:], set(logs._configured)
    root.handlers = []
    logs._configured.clear()
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers = handlers
    logs._configured.clear()
    logs._configured.update(configured)


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), _mode(path)


@posix_only
def test_planted_link_at_the_log_is_never_written_or_chmodded(tmp_path: Path, fresh_logging: logging.Logger) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch\n")
    victim.chmod(0o644)
    logs_dir = ensure_data_dir(tmp_path / "data") / "logs"
    (logs_dir / logs.LOG_NAME).symlink_to(victim)

    with pytest.raises(DataDirError, match=r"is a link to .*victim.txt.*Fix: rm "):
        logs.setup_logging(tmp_path / "data", logging.CRITICAL + 1)
    logging.getLogger("storyteller_core.test").warning("after the refusal")

    assert _snapshot(victim) == (b"do not touch\n", 0o644)


@posix_only
def test_link_planted_while_running_is_not_followed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch\n")
    victim.chmod(0o644)
    log_file = ensure_data_dir(tmp_path / "data") / "logs" / logs.LOG_NAME
    handler = logs.PrivateRotatingFileHandler(log_file, max_bytes=200, backup_count=3)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("storyteller_core.test_planted")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("first")
        Path(f"{log_file}.2").symlink_to(victim)  # at a rotated name
        handler.stream.close()
        handler.stream = None
        log_file.unlink()
        log_file.symlink_to(victim)  # and at the live name
        for n in range(30):
            logger.warning("line %d %s", n, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert _snapshot(victim) == (b"do not touch\n", 0o644)
    assert "Logging error" not in capfd.readouterr().err


@posix_only
def test_rotated_logs_are_private(tmp_path: Path, fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_BYTES", 300)
    old = os.umask(0o022)
    try:
        log_file = logs.setup_logging(tmp_path / "data", logging.CRITICAL + 1)
        for n in range(60):
            logging.getLogger("storyteller_core.test").warning("line %d %s", n, "y" * 50)
    finally:
        os.umask(old)
    files = [log_file, *(Path(f"{log_file}.{n}") for n in range(1, logs.BACKUPS + 1))]
    assert all(path.is_file() for path in files)
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


@posix_only
def test_logs_left_open_by_an_older_version_are_made_private(tmp_path: Path, fresh_logging: logging.Logger) -> None:
    logs_dir = ensure_data_dir(tmp_path / "data") / "logs"
    older = [logs_dir / logs.LOG_NAME, logs_dir / f"{logs.LOG_NAME}.1"]
    for path in older:
        path.write_text("{}\n")
        path.chmod(0o644)
    logs.setup_logging(tmp_path / "data", logging.CRITICAL + 1)
    assert [_mode(path) for path in older] == [0o600, 0o600]


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_stream(kind: str) -> io.TextIOBase:
    if kind == "/dev/full":
        return open("/dev/full", "a", encoding="utf-8")  # noqa: SIM115 - the handler closes it
    return _FullDisk()


NO_DEV_FULL = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="a Linux device that is always full")


@pytest.mark.parametrize("kind", ["fake", pytest.param("/dev/full", marks=NO_DEV_FULL)])
def test_full_disk_costs_one_stderr_line_and_logging_carries_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    log_file = ensure_data_dir(tmp_path / "data") / "logs" / logs.LOG_NAME
    handler = logs.PrivateRotatingFileHandler(log_file, max_bytes=10_000, backup_count=2)
    handler.setFormatter(logs.JsonFormatter())
    real_open = handler._open
    monkeypatch.setattr(handler, "_open", lambda: _full_disk_stream(kind))
    seen: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("storyteller_core.test_full")
    logger.propagate = False
    logger.addHandler(handler)
    logger.addHandler(collector)
    try:
        for n in range(100):
            logger.error("record %d", n)
        err = capfd.readouterr().err
        assert err.count("\n") <= 1 and "Logging error" not in err and "Traceback" not in err
        assert err == "Video Storyteller: cannot write its log (No space left on device); carrying on without it.\n"
        assert len(seen) == 100  # the other handlers kept working

        monkeypatch.setattr(handler, "_open", real_open)  # room on the disk again
        logger.error("after the disk was freed")
        handler.flush()
        assert "after the disk was freed" in log_file.read_text(encoding="utf-8")
        assert capfd.readouterr().err == ""
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(collector)
        handler.close()


def test_broken_stderr_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logs.QuietStderrHandler(logging.INFO)
    logger = logging.getLogger("storyteller_core.test_stderr")
    logger.propagate = False
    logger.addHandler(handler)
    monkeypatch.setattr("sys.stderr", _FullDisk())
    try:
        for n in range(100):
            logger.warning("record %d", n)
    finally:
        logger.removeHandler(handler)


def test_stderr_handler_only_when_asked(tmp_path: Path, fresh_logging: logging.Logger, capfd: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging(tmp_path / "data", logging.CRITICAL + 1)
    assert [type(h) for h in fresh_logging.handlers] == [logs.PrivateRotatingFileHandler]
    logging.getLogger("storyteller_core.test").error("kept out of the terminal")
    assert capfd.readouterr().err == ""

    logs.setup_logging(tmp_path / "data", logging.INFO)  # --verbose later in the same process
    assert [type(h) for h in fresh_logging.handlers] == [logs.PrivateRotatingFileHandler, logs.QuietStderrHandler]
    logging.getLogger("storyteller_core.test").info("shown \x9b2J")
    err = capfd.readouterr().err
    assert "shown \\u009b2J" in err and "\x9b" not in err


def test_a_traceback_goes_to_the_log_file_and_never_to_the_terminal(
    tmp_path: Path, fresh_logging: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    log_file = logs.setup_logging(tmp_path / "data", logging.WARNING)  # as the app's server
    try:
        raise RuntimeError("deep inside")
    except RuntimeError:
        logging.getLogger("storyteller_core.test").exception("the step failed")
    logging.getLogger("storyteller_core.test").info("routine")

    err = capfd.readouterr().err
    assert "the step failed" in err and "in the log file" in err
    assert "Traceback" not in err and "deep inside" not in err and "routine" not in err
    written = log_file.read_text()
    assert "Traceback" in written and "deep inside" in written and "routine" in written


def test_log_lines_scrub_secrets(tmp_path: Path, fresh_logging: logging.Logger) -> None:
    log_file = logs.setup_logging(tmp_path / "data", logging.CRITICAL + 1)
    logs.register_secret("AIza-secret-for-the-log")
    logging.getLogger("storyteller_core.test").info("key=%s", "AIza-secret-for-the-log")
    for handler in fresh_logging.handlers:
        handler.flush()
    text = log_file.read_text(encoding="utf-8")
    assert "key=***" in text and "AIza-secret" not in text
    if POSIX:
        assert _mode(log_file) == 0o600
