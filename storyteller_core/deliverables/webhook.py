"""An optional webhook: a Slack/Teams-style JSON POST when a batch finishes.

The URL lives in ``<data dir>/notify.json``, created 0600: whoever holds a
Slack or Teams webhook URL can post to that channel, so it is kept like a
key (never logged; the log names the host only). A batch's completion is
sent once: ``claim()`` creates a marker file with O_EXCL, so two tabs, two
reruns or two processes that see the same completion send one POST. The
payload carries the batch's name, its counts and a link to the app, never
the API key: every text goes through ``scrub()`` and the link loses any
query but ``batch`` (the app's access token travels as ``?token=``).

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried
with tenacity; any other answer is final and reported as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tenacity

from storyteller_core.sanitize import plain_text, scrub

log = logging.getLogger(__name__)

CONFIG_FILE = "notify.json"
MARKER_DIR = "webhook-sent"
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
_lock = threading.Lock()  # one read-modify-write of notify.json at a time in this process


class WebhookError(Exception):
    """A POST that failed; ``message`` says why in words, ``transient`` whether trying again may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class BatchReport:
    batch_id: str
    name: str
    total: int
    done: int
    failed: int
    cancelled: int
    link: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How the last POST went, for the Settings page."""

    at: float
    ok: bool
    message: str
    batch: str | None = None


# -- the URL, kept like a key ---------------------------------------------------------------------
def check_url(url: str) -> str:
    """``url`` trimmed, or ValueError saying what is wrong with it."""
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("A webhook URL starts with https:// (for example https://hooks.slack.com/services/...).")
    if any(ch.isspace() for ch in url):
        raise ValueError("A webhook URL has no spaces in it.")
    return url


def masked_url(url: str | None) -> str:
    """What a person sees of the URL: its host and the last four characters."""
    if not url:
        return "not set"
    host = urllib.parse.urlsplit(url).hostname or "?"
    return f"{host}/…{url[-4:]}"


def _config_path(data_dir: Path) -> Path:
    return Path(data_dir) / CONFIG_FILE


def _read(data_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads(_config_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(data_dir: Path, values: dict[str, Any]) -> None:
    """Replace notify.json in one step; the new file is created 0600, whatever the umask."""
    path = _config_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(values, out)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def load_url(data_dir: Path) -> str | None:
    url = _read(data_dir).get("webhook_url")
    return url if isinstance(url, str) and url else None


def saved_at(data_dir: Path) -> float | None:
    """When the URL was saved: completions before that are not sent."""
    value = _read(data_dir).get("webhook_saved_at")
    return float(value) if isinstance(value, (int, float)) else None


def save_url(data_dir: Path, url: str | None) -> None:
    """Keep ``url`` (checked with check_url), or forget it with None."""
    with _lock:
        values = _read(data_dir)
        if url:
            values["webhook_url"] = check_url(url)
            values["webhook_saved_at"] = time.time()
        else:
            values.pop("webhook_url", None)
            values.pop("webhook_saved_at", None)
        values.pop("last", None)
        _write(data_dir, values)


def last_outcome(data_dir: Path) -> Outcome | None:
    value = _read(data_dir).get("last")
    try:
        return Outcome(**value) if isinstance(value, dict) else None
    except TypeError:
        return None


def _record(data_dir: Path, outcome: Outcome) -> None:
    with _lock:
        values = _read(data_dir)
        values["last"] = asdict(outcome)
        _write(data_dir, values)


# -- the message ------------------------------------------------------------------------------------
_MARKDOWN = re.compile(r"([\\`*_~\[\]()|])")


def _slack_text(text: str) -> str:
    """Untrusted text (a batch or file name) as Slack and Teams show it literally: no <!channel>, no links.

    Slack's <url|text> is broken by escaping <>&; Teams' Markdown [text](url) and emphasis by backslashes;
    a bare address is not linked once its "://" is split.
    """
    text = plain_text(scrub(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", text).replace("://", ":\u200b//")


def clean_link(link: str | None) -> str | None:
    """The link with no query but ``batch`` and no fragment: the access token must not leave the machine."""
    if not link:
        return None
    parts = urllib.parse.urlsplit(link)
    if parts.scheme not in ("http", "https"):
        return None
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k == "batch"]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(kept), ""))


def summary(report: BatchReport) -> str:
    """ "9 done, 1 failed of 10" in words."""
    parts = [f"{report.done} done"]
    if report.failed:
        parts.append(f"{report.failed} failed")
    if report.cancelled:
        parts.append(f"{report.cancelled} cancelled")
    return f"{', '.join(parts)} of {report.total}"


def payload(report: BatchReport) -> dict[str, Any]:
    """A body Slack and Teams incoming webhooks both show (``text``), plus the figures for other receivers."""
    link = clean_link(report.link)
    text = f'Video Storyteller: batch "{_slack_text(report.name)}" finished: {summary(report)}.'
    if link:
        text += f" Open it: {link}"
    return {
        "text": text,
        "batch": {
            "id": report.batch_id,
            "name": scrub(report.name),
            "total": report.total,
            "done": report.done,
            "failed": report.failed,
            "cancelled": report.cancelled,
            "link": link,
        },
    }


# -- sending ------------------------------------------------------------------------------------------
class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is: a 302 once sent our POST on as a GET to another host."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: dict[str, Any], *, timeout: float = 10.0) -> int:
    """One POST; the status on 2xx, WebhookError otherwise."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "video-storyteller"},
    )
    host = urllib.parse.urlsplit(url).hostname
    try:
        with _opener.open(request, timeout=timeout) as answer:  # http/https only (check_url); redirects refused
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise WebhookError(
                f"{host} answered HTTP {exc.code} (a redirect, not followed: save the webhook's final URL in Settings)", transient=False
            ) from None
        raise WebhookError(f"{host} answered HTTP {exc.code}", transient=exc.code in RETRY_STATUSES) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"could not reach {host} ({reason})", transient=True) from None


def send(url: str, body: dict[str, Any], *, attempts: int = 4, wait: tenacity.wait.wait_base | None = None, timeout: float = 10.0) -> int:
    """POST ``body``, retrying transient failures; the final status, or the last WebhookError."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait if wait is not None else tenacity.wait_exponential(multiplier=1, min=1, max=20),
        retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, WebhookError) and exc.transient),
        reraise=True,
    )
    return retrying(post, check_url(url), body, timeout=timeout)


def send_report(data_dir: Path, url: str, report: BatchReport, **kwargs: Any) -> Outcome:
    """Send and remember how it went (for Settings); never raises."""
    try:
        status = send(url, payload(report), **kwargs)
        outcome = Outcome(time.time(), True, f"sent (HTTP {status})", report.name)
    except WebhookError as exc:
        outcome = Outcome(time.time(), False, exc.message, report.name)
    except ValueError as exc:
        outcome = Outcome(time.time(), False, str(exc), report.name)
    log.info("webhook", extra={"ok": outcome.ok, "result": outcome.message, "batch": report.batch_id})
    with contextlib.suppress(OSError):
        _record(data_dir, outcome)
    return outcome


# -- once per completion ---------------------------------------------------------------------------
def claim(data_dir: Path, batch_id: str, completion: str, *, marker_dir: str = MARKER_DIR) -> bool:
    """True for the first caller only, across threads and processes: the marker is created with O_EXCL.

    ``marker_dir`` names the kind of message claimed (the e-mail keeps its own markers beside the webhook's)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{batch_id}--{completion}")[:200]
    folder = Path(data_dir) / marker_dir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def fire_once(
    data_dir: Path,
    report: BatchReport,
    completion: str,
    *,
    finished_at: float,
    start: Callable[[Callable[[], Any]], Any] | None = None,
    **kwargs: Any,
) -> bool:
    """Send the report for this completion unless it was sent already; True if this call sends it.

    Nothing is sent with no URL, or for a completion that happened before the URL
    was saved (opening an old batch must not post about it). The POST runs on a
    background thread (``start``) so retries never hold up the page.
    """
    url = load_url(data_dir)
    since = saved_at(data_dir)
    if not url or (since is not None and finished_at < since):
        return False
    if not claim(data_dir, report.batch_id, completion):
        return False
    job = lambda: send_report(data_dir, url, report, **kwargs)  # noqa: E731
    if start is None:
        threading.Thread(target=job, name="webhook", daemon=True).start()
    else:
        start(job)
    return True
