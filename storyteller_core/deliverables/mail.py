"""An e-mail when a batch is done, through the person's SMTP server.

Where to send: ``STORYTELLER_SMTP_URL`` (``smtp://`` or ``smtps://user:pass@host:port``)
and ``STORYTELLER_NOTIFY_EMAIL`` (the recipient), or the same two saved on Settings
in ``<data dir>/email.json`` (0600: the URL holds a password). The environment wins.

One e-mail per finished batch: a marker file created with O_EXCL in
``<data dir>/email-sent`` claims the completion, so two tabs, the CLI and a restart
send it once. The message has the counts, the cost, the failures and the link, and
the stories only when ``include_stories`` was saved. Nothing is sent in demo mode
except by the Settings test button. A send that fails is logged once (host only,
never the password), kept as the last outcome for the Queue page, and never fails
the batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from storyteller_core.deliverables.webhook import BatchReport, clean_link, summary
from storyteller_core.deliverables.webhook import claim as webhook_claim
from storyteller_core.sanitize import scrub
from storyteller_core.views.board import Row, Status, totals

log = logging.getLogger(__name__)
CONFIG_FILE = "email.json"
MARKER_DIR = "email-sent"
ENV_URL, ENV_TO = "STORYTELLER_SMTP_URL", "STORYTELLER_NOTIFY_EMAIL"
_lock = threading.Lock()


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool  # smtps: TLS from the start; smtp: STARTTLS when the server offers it
    user: str | None
    password: str | None
    recipient: str
    include_stories: bool = False

    def masked(self) -> str:
        return f"{'smtps' if self.tls else 'smtp'}://{self.user + '@' if self.user else ''}{self.host}:{self.port} → {self.recipient}"


@dataclass(frozen=True)
class Outcome:
    at: float
    ok: bool
    message: str
    batch: str | None = None


def parse(url: str, recipient: str, include_stories: bool = False) -> Target:
    """The SMTP target, or ValueError saying what to fix."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("The SMTP address starts with smtp:// or smtps:// (for example smtps://me:password@smtp.example.com:465).")
    recipient = recipient.strip()
    if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+", recipient):
        raise ValueError("The recipient is one e-mail address, like analyst@example.com.")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError:
        raise ValueError("The port in the SMTP address is not a number between 1 and 65535.") from None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return Target(parts.hostname, port, parts.scheme == "smtps", user, password, recipient, include_stories)


# -- settings ---------------------------------------------------------------------------------------
def _read(data_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads((Path(data_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(data_dir: Path, values: dict[str, Any]) -> None:
    path = Path(data_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(values, out)
    os.replace(temp, path)


def save(data_dir: Path, url: str | None, recipient: str | None, include_stories: bool = False) -> None:
    """Keep the target (checked), or forget it with url None."""
    with _lock:
        values = _read(data_dir)
        if url:
            parse(url, recipient or "", include_stories)
            values.update(smtp_url=url.strip(), recipient=(recipient or "").strip(), include_stories=include_stories, saved_at=time.time())
        else:
            for key in ("smtp_url", "recipient", "include_stories", "saved_at"):
                values.pop(key, None)
        _write(data_dir, values)


def target(data_dir: Path) -> Target | None:
    """From the environment, else from Settings; None when not set up or not valid (logged once per value)."""
    values = _read(data_dir)
    url = os.environ.get(ENV_URL) or values.get("smtp_url")
    recipient = os.environ.get(ENV_TO) or values.get("recipient")
    if not url or not recipient:
        return None
    try:
        return parse(str(url), str(recipient), bool(values.get("include_stories")))
    except ValueError as exc:
        _log_once(data_dir, f"config:{exc}", "e-mail not set up right", str(exc))
        return None


def from_environment() -> bool:
    return bool(os.environ.get(ENV_URL))


def last_outcome(data_dir: Path) -> Outcome | None:
    value = _read(data_dir).get("last")
    try:
        return Outcome(**value) if isinstance(value, dict) else None
    except TypeError:
        return None


def _record(data_dir: Path, outcome: Outcome) -> None:
    with _lock, contextlib.suppress(OSError):
        values = _read(data_dir)
        values["last"] = asdict(outcome)
        _write(data_dir, values)


def _log_once(data_dir: Path, key: str, event: str, reason: str) -> None:
    """One log line per distinct failure: a server down for a day does not fill the log."""
    if not claim(data_dir, "log", key):
        return
    log.warning(event, extra={"reason": reason})


# -- the message ------------------------------------------------------------------------------------
def message(
    report: BatchReport, rows: list[Row], sender: str, recipient: str, *, cost_usd: float | None, include_stories: bool = False
) -> EmailMessage:
    """Plain text only: names and errors are untrusted and stay text."""
    mail = EmailMessage()
    name = " ".join(scrub(report.name).split())[:120]
    mail["Subject"] = f'Video Storyteller: batch "{name}" finished ({summary(report)})'
    mail["From"], mail["To"] = sender, recipient
    lines = [
        f'Batch "{name}" finished: {summary(report)}.',
        f"Cost: ${cost_usd:.4f}" if cost_usd is not None else "Cost: not priced (demo mode or unknown prices).",
    ]
    link = clean_link(report.link)
    if link:
        lines.append(f"Open it: {link}")
    failed = [row for row in rows if row.status is Status.FAILED]
    if failed:
        lines += ["", "Failed:"] + [f"- {scrub(row.name)}: {scrub(row.error or '')}" for row in failed[:50]]
        if len(failed) > 50:
            lines.append(f"... and {len(failed) - 50} more (see the board).")
    if include_stories:
        for row in rows:
            if row.story:
                lines += ["", f"== {scrub(row.name)} ==", scrub(row.story)]
    mail.set_content("\n".join(lines))
    return mail


def deliver(t: Target, mail: EmailMessage, *, timeout: float = 15.0) -> None:
    """Send one message; OSError/smtplib.SMTPException on failure (their text never holds the password)."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP = (
        smtplib.SMTP_SSL(t.host, t.port, timeout=timeout, context=context) if t.tls else smtplib.SMTP(t.host, t.port, timeout=timeout)
    )
    with smtp:
        if not t.tls:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
        if t.user and t.password:
            smtp.login(t.user, t.password)
        smtp.send_message(mail)


def send(data_dir: Path, t: Target, report: BatchReport, rows: list[Row], *, cost_usd: float | None) -> Outcome:
    """Send and remember how it went; never raises."""
    sender = t.user if t.user and "@" in t.user else f"video-storyteller@{t.host}"
    try:
        deliver(t, message(report, rows, sender, t.recipient, cost_usd=cost_usd, include_stories=t.include_stories))
        outcome = Outcome(time.time(), True, f"sent to {t.recipient}", report.name)
    except (OSError, smtplib.SMTPException) as exc:
        reason = _reason(exc, t)
        outcome = Outcome(time.time(), False, f"could not send the e-mail through {t.host}:{t.port} ({reason})", report.name)
        _log_once(data_dir, f"send:{t.host}:{type(exc).__name__}", "e-mail not sent", outcome.message)
    _record(data_dir, outcome)
    return outcome


def _reason(exc: BaseException, t: Target) -> str:
    text = scrub(str(exc) or type(exc).__name__)
    if t.password:
        text = text.replace(t.password, "***")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "the server refused the user name or password"
    return text[:200]


# -- once per finished batch ------------------------------------------------------------------------
def claim(data_dir: Path, batch_id: str, completion: str) -> bool:
    """True for the first caller only, across threads, processes and restarts (the webhook's marker, in email-sent)."""
    return webhook_claim(data_dir, batch_id, completion, marker_dir=MARKER_DIR)


def completion_of(batch_id: str, rows: list[Row]) -> str:
    """Names one completion of a batch, the same string the board's notify.completion_id gives."""
    t = totals(rows)
    last = t.last_finished if t.last_finished is not None else max((row.finished_at or row.item.created_at for row in rows), default=0.0)
    return f"{batch_id}-{int(last)}-{t.done}-{t.failed}-{t.cancelled}"


def since(data_dir: Path) -> float:
    """Completions before this are not mailed: when Settings saved the target, or when the environment's was first seen."""
    values = _read(data_dir)
    key = "env_seen_at" if from_environment() else "saved_at"
    if not isinstance(values.get(key), (int, float)):
        with _lock, contextlib.suppress(OSError):
            values = _read(data_dir)
            values.setdefault(key, time.time())
            _write(data_dir, values)
    return float(values.get(key) or 0.0)


def mail_once(
    data_dir: Path,
    report: BatchReport,
    rows: list[Row] | Callable[[], list[Row]],
    completion: str,
    *,
    demo: bool,
    finished_at: float | None = None,
    background: bool = True,
) -> bool:
    """Send this batch's e-mail unless sent already, or set up, or in demo mode; True if this call sends it.

    ``rows`` is the batch's rows or a function that reads them. The claim is per batch and completion, like
    the webhook's: a batch retried and finished again is another completion. In the app it runs on a thread so a slow
    server never holds up the page; the CLI waits for it (``background=False``).
    """
    t = target(data_dir)
    if t is None or demo or (finished_at is not None and finished_at < since(data_dir) - 5):
        return False
    if not claim(data_dir, report.batch_id, completion):
        return False

    def job() -> None:  # ``rows`` may be a reader: the batch's rows are read once, for the one call that sends
        listed = rows() if callable(rows) else rows
        send(data_dir, t, report, listed, cost_usd=totals(listed).cost_usd)

    if background:
        threading.Thread(target=job, name="email", daemon=True).start()
    else:
        job()
    return True


def send_test(data_dir: Path) -> Outcome:
    """The Settings button: one e-mail now, demo mode or not."""
    t = target(data_dir)
    if t is None:
        return Outcome(time.time(), False, "E-mail is not set up: give an SMTP address and a recipient first.")
    return send(data_dir, t, BatchReport("test", "Test message", 0, 0, 0, 0), [], cost_usd=None)
