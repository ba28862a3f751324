"""The batch-done e-mail, against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from storyteller_core.deliverables import mail
from storyteller_core.deliverables.webhook import BatchReport
from storyteller_core.intake.samples import make_video

from .helpers import cli_env, run_cli


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    inbox = Inbox()
    port = free_port()
    logins: list[bytes] = inbox.logins

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append(data.password)
        return AuthResult(success=True)

    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < end, "not seen before the deadline"
        time.sleep(0.05)


@pytest.mark.slow
def test_an_email_arrives_when_a_batch_ends_once_and_without_the_story(smtp, tmp_path, emulator, monkeypatch):
    port, inbox = smtp
    env = cli_env(tmp_path / "data", emulator.base_url)
    env.update({mail.ENV_URL: f"smtp://me%40x.org:s3cret-pw@127.0.0.1:{port}", mail.ENV_TO: "analyst@example.com"})
    video = make_video(tmp_path / "in" / "harbour.mp4", seconds=2.0, seed=4)
    bad = tmp_path / "in" / "notes.mp4"
    bad.write_text("not a video")

    first = run_cli(["process", str(video), str(bad), "--batch-name", "Harbour <b>"], env)
    again = run_cli(["process", str(video)], env)  # the same batch's finished video, resumed: no second e-mail

    assert first.returncode == 1 and again.returncode == 0, first.stdout + first.stderr
    wait_for(lambda: len(inbox.messages) >= 1)
    assert len(inbox.messages) == 1, [m["Subject"] for m in inbox.messages]
    [message] = inbox.messages
    assert inbox.logins == [b"s3cret-pw"]
    # notes.mp4 was refused before it became a row (issue 19 item 4): reported on stderr, not a Failed row of the batch
    assert "Not added notes.mp4: " in first.stderr
    assert message["To"] == "analyst@example.com" and 'batch "Harbour <b>" finished (1 done of 1)' in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert "1 done of 1" in body and "Cost:" in body
    assert "s3cret-pw" not in first.stdout + first.stderr + (tmp_path / "data").joinpath("email.json").read_text()
    story_line = next(line for line in body.splitlines() if "==" in line) if "==" in body else None
    assert story_line is None  # no story text unless asked for


def test_an_unreachable_server_fails_nothing_and_is_kept_for_queue(tmp_path):
    data = tmp_path / "data"
    mail.save(data, f"smtp://u:pw-XYZ@127.0.0.1:{free_port()}", "a@example.com")
    report = BatchReport("b1", "Batch", 1, 1, 0, 0)

    assert mail.mail_once(data, report, [], "c1", demo=False, background=False)
    assert not mail.mail_once(data, report, [], "c1", demo=False, background=False)  # the durable mark: once

    outcome = mail.last_outcome(data)
    assert outcome is not None and not outcome.ok and "could not send the e-mail through 127.0.0.1" in outcome.message
    assert "pw-XYZ" not in outcome.message


def test_nothing_is_sent_in_demo_mode_but_the_test_button_sends(smtp, tmp_path):
    port, inbox = smtp
    data = tmp_path / "data"
    mail.save(data, f"smtp://127.0.0.1:{port}", "a@example.com")

    assert not mail.mail_once(data, BatchReport("b1", "Batch", 1, 1, 0, 0), [], "c1", demo=True, background=False)
    assert mail.send_test(data).ok
    assert len(inbox.messages) == 1 and "Test message" in inbox.messages[0]["Subject"]


def test_a_bad_address_says_what_to_fix():
    with pytest.raises(ValueError, match="smtp:// or smtps://"):
        mail.parse("http://x", "a@b.org")
    with pytest.raises(ValueError, match="one e-mail address"):
        mail.parse("smtp://x", "not an address")


def test_the_settings_file_is_private(tmp_path: Path):
    mail.save(tmp_path, "smtps://u:p@mail.example.com:465", "a@example.com")
    assert (tmp_path / mail.CONFIG_FILE).stat().st_mode & 0o077 == 0
    target = mail.target(tmp_path)
    assert target is not None and target.tls and "p@" not in target.masked()
