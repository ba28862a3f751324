"""The analyst's day (issue 11) in a real browser: live boards in every tab, retry to Done, the tab title,
desktop notifications, the webhook, plain words on every page; and the webhook sender on its own.

The app runs against the emulator with a key (delays raised so that work is visibly in flight); files come
in through the local path tab, so these tests do not depend on the uploader's widget.
"""

from __future__ import annotations

import json
import re
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tenacity

from storyteller_core.deliverables import webhook
from storyteller_core.intake.samples import make_video
from storyteller_core.sanitize import register_secret

from .conftest import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
KEY = "AIzaSy-day-test-key-0077"
INTERNAL_NAMES = re.compile(r"\b(CREATED|UPLOADING|UPLOADED|FILE_PROCESSING|FILE_ACTIVE|ANALYZING|COMPLETED|WAITING)\b")


def browser_test(test):  # type: ignore[no-untyped-def]
    for mark in (
        pytest.mark.slow,
        pytest.mark.timeout(300),
        pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    ):
        test = mark(test)
    return test


# Records desktop notifications instead of showing them; permission already granted.
FAKE_NOTIFICATION = """
window.__notes = [];
window.Notification = class {
  constructor(title, options) { window.__notes.push({ title, body: options && options.body, tag: options && options.tag }); }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
"""


# -- a webhook receiver that fails first -------------------------------------------------------------
class Receiver:
    """A local HTTP server: the first ``fail_first`` POSTs get ``fail_status``, the rest 200 and are kept."""

    def __init__(self, fail_first: int = 1, fail_status: int = 503) -> None:
        self.fail_left = fail_first
        self.fail_status = fail_status
        self.requests = 0
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests += 1
                if receiver.fail_left > 0:
                    receiver.fail_left -= 1
                    self.send_response(receiver.fail_status)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secretpart"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    r = Receiver()
    yield r
    r.close()


REPORT = webhook.BatchReport(
    "20260101-120000-ab12",
    "Kitchen <!channel> interviews",
    10,
    8,
    1,
    1,
    "http://localhost:8501/batch?token=s3cret-token&batch=20260101-120000-ab12#x",
)


# -- the webhook sender ----------------------------------------------------------------------------------
def test_webhook_retries_a_failure_then_delivers_counts_and_a_clean_link(receiver):
    status = webhook.send(receiver.url, webhook.payload(REPORT), wait=tenacity.wait_fixed(0))

    assert status == 200 and receiver.requests == 2  # 503 first, then delivered
    [body] = receiver.bodies
    assert body["batch"] == {
        "id": REPORT.batch_id,
        "name": REPORT.name,
        "total": 10,
        "done": 8,
        "failed": 1,
        "cancelled": 1,
        "link": "http://localhost:8501/batch?batch=20260101-120000-ab12",
    }
    assert "8 done, 1 failed, 1 cancelled of 10" in body["text"]
    assert "&lt;!channel&gt;" in body["text"] and "<!channel>" not in body["text"]  # no Slack mention from a name
    assert "s3cret-token" not in json.dumps(body)  # the app's access token stays on this machine


def test_webhook_gives_up_at_once_on_a_refusal(receiver):
    receiver.fail_left, receiver.fail_status = 5, 404

    with pytest.raises(webhook.WebhookError) as raised:
        webhook.send(receiver.url, webhook.payload(REPORT), wait=tenacity.wait_fixed(0))

    assert receiver.requests == 1 and not raised.value.transient
    assert raised.value.message == "127.0.0.1 answered HTTP 404"


def test_webhook_never_carries_the_key(receiver):
    register_secret(KEY)
    report = webhook.BatchReport("b1", f"batch with {KEY} in its name", 1, 1, 0, 0, None)

    webhook.send(receiver.url, webhook.payload(report), wait=tenacity.wait_fixed(0))

    assert KEY not in json.dumps(receiver.bodies)


def test_webhook_url_is_private_and_each_completion_is_sent_once(tmp_path, receiver):
    receiver.fail_left = 0
    with pytest.raises(ValueError, match="https://"):
        webhook.save_url(tmp_path, "hooks.slack.com/services/x")
    webhook.save_url(tmp_path, receiver.url)
    assert stat.S_IMODE((tmp_path / webhook.CONFIG_FILE).stat().st_mode) == 0o600
    assert webhook.load_url(tmp_path) == receiver.url
    assert webhook.masked_url(receiver.url) == "127.0.0.1/…part"
    saved = webhook.saved_at(tmp_path)
    assert saved is not None

    def run_now(job):  # type: ignore[no-untyped-def]
        job()

    sends = [webhook.fire_once(tmp_path, REPORT, "c1", finished_at=saved + 1, start=run_now, wait=tenacity.wait_fixed(0)) for _ in range(3)]
    late = webhook.fire_once(tmp_path, REPORT, "c0", finished_at=saved - 60, start=run_now)  # before the URL was set
    again = webhook.fire_once(tmp_path, REPORT, "c2", finished_at=saved + 5, start=run_now)  # a retry's completion

    assert sends == [True, False, False] and late is False and again is True
    assert len(receiver.bodies) == 2
    outcome = webhook.last_outcome(tmp_path)
    assert outcome is not None and outcome.ok and outcome.message == "sent (HTTP 200)"
    webhook.save_url(tmp_path, None)
    assert webhook.load_url(tmp_path) is None
    assert not webhook.fire_once(tmp_path, REPORT, "c3", finished_at=saved + 9, start=run_now)


# -- the app in real browsers ------------------------------------------------------------------------------
@pytest.fixture
def keyed(app_env: dict[str, str], emulator) -> object:  # type: ignore[no-untyped-def]
    """The app against the emulator with a key; each file takes a few seconds, so work is seen in flight."""
    app_env["GEMINI_API_KEY"] = KEY
    app_env["GOOGLE_GEMINI_BASE_URL"] = emulator.base_url
    emulator.config.processing_delay_s = 5.0
    emulator.config.analysis_delay_s = 1.0
    return emulator


def main_text(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator("body").inner_text()


def metric(page, label: str):  # type: ignore[no-untyped-def]
    return page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))


def add_from_folder(page, folder: Path) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name="Local folder, file path or YouTube link").click()
    page.get_by_label("Path to a video file or a folder of videos").fill(str(folder))
    page.get_by_role("button", name="Add from path").click()


def shoot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """The whole page: Streamlit scrolls inside stMain, so grow the window to its height first."""
    OUTPUT.mkdir(exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(6000, max(size["height"], height + 40))})
    page.wait_for_timeout(800)
    page.screenshot(path=str(OUTPUT / f"day-{name}.png"))
    page.set_viewport_size(size)


def finish_processing(emulator) -> None:  # type: ignore[no-untyped-def]
    """Gemini is done processing every uploaded file, now."""
    with emulator.lock:
        for f in emulator.files.values():
            f.active_at = min(f.active_at, time.time())


def wait_for_all(checks: dict, page, timeout_s: float) -> set[str]:  # type: ignore[no-untyped-def]
    """Poll every check until each has been true once (or the time is up); the names seen true."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while seen != set(checks) and time.monotonic() < deadline:
        for name, check in checks.items():
            if name not in seen and check():
                seen.add(name)
        page.wait_for_timeout(250)
    return seen


def no_internal_names(page, where: str) -> None:  # type: ignore[no-untyped-def]
    text = main_text(page)
    assert not INTERNAL_NAMES.search(text), (where, INTERNAL_NAMES.search(text))


@browser_test
def test_a_batch_is_live_in_every_tab_with_the_title_and_one_notification(keyed, app_url, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    for n in range(5):
        make_video(folder / f"take-{n}.mp4", seconds=1.0, seed=n)
    context = page.context
    context.add_init_script(FAKE_NOTIFICATION)
    page.reload()
    tab_b, results, queue = context.new_page(), context.new_page(), context.new_page()
    for other, path in ((tab_b, ""), (results, "/results"), (queue, "/queue")):
        other.goto(app_url + path)
    expect(tab_b.get_by_text("No batches yet")).to_be_visible(timeout=60_000)
    expect(results.get_by_text("No videos yet")).to_be_visible(timeout=60_000)
    expect(queue.get_by_text("Nothing running or waiting.")).to_be_visible(timeout=60_000)

    add_from_folder(page, folder)
    keyed.config.processing_delay_s = 600.0  # Gemini "processes" until finish_processing(): no race with the checks
    page.get_by_role("button", name="Start batch (5 video(s))").click(timeout=60_000)

    # In flight: every tab moves by itself (none is reloaded from here on).
    progress = re.compile(r"^[0-4]/5 · Video Storyteller$")
    checks = {
        "batch tab's title": lambda: progress.match(page.title()),
        "second tab's board": lambda: (
            " / 5" in "".join(metric(tab_b, "Done").all_inner_texts())  # no waiting
            and progress.match(tab_b.title())
        ),
        "results": lambda: (
            results.get_by_text(re.compile(r"^5 row\(s\): .* in flight\.$")).count() == 1 and progress.match(results.title())
        ),
        "queue": lambda: (
            queue.get_by_text("Nothing running or waiting.").count() == 0 and metric(queue, "Gemini is processing").count() == 1
        ),
    }
    seen = wait_for_all(checks, page, timeout_s=90)
    assert seen == set(checks), f"never seen live: {set(checks) - seen}"
    for tab, where in (
        (page, "batch in flight"),
        (tab_b, "second tab in flight"),
        (results, "results in flight"),
        (queue, "queue in flight"),
    ):
        no_internal_names(tab, where)
    finish_processing(keyed)

    # Finished: the totals, the title, one toast per watching tab, one desktop notification.
    expect(metric(page, "Done")).to_contain_text("5 / 5", timeout=90_000)
    expect(page.get_by_text("Batch finished: 5 done of 5.")).to_be_visible(timeout=10_000)
    for tab in (page, tab_b):
        expect(metric(tab, "Done")).to_contain_text("5 / 5", timeout=30_000)
        expect(tab).to_have_title("Done 5/5 · Video Storyteller", timeout=15_000)
    expect(results.get_by_text("5 row(s): 5 done, 0 failed, 0 cancelled, 0 in flight.")).to_be_visible(timeout=15_000)
    expect(queue.get_by_text("Nothing running or waiting.")).to_be_visible(timeout=15_000)
    page.wait_for_timeout(2_000)  # both tabs' timers have seen the end
    notes = page.evaluate("window.__notes") + tab_b.evaluate("window.__notes")
    # Two tabs watched it: one notification (tabs that raced each other share its tag, and the browser shows one).
    assert notes and len({n["tag"] for n in notes}) == 1, notes
    assert notes[0]["title"] == "Video Storyteller: batch finished" and notes[0]["body"].endswith(": 5 done of 5.")

    # Compact stories: more than three rows on one screen.
    page.get_by_text("Compact", exact=True).click()
    page.wait_for_timeout(1_000)
    page.locator('[class*="st-key-row-"]').first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    boxes = page.evaluate("""() => [...document.querySelectorAll('[class*="st-key-row-"]')]
        .map(e => { const r = e.getBoundingClientRect(); return [Math.round(r.top), Math.round(r.bottom)]; })""")
    height = page.viewport_size["height"]
    assert sum(top >= 0 and bottom <= height for top, bottom in boxes) > 3, (boxes, height)
    # The copy button shows without hovering.
    page.mouse.move(0, 0)
    copy = page.locator('[class*="st-key-story-"] [data-testid="stCode"] button[aria-label="Copy to clipboard"]').first
    assert copy.evaluate(
        "e => { let n = e; while (n) { const s = getComputedStyle(n); "
        "if (s.visibility === 'hidden' || s.opacity === '0') return false; n = n.parentElement; } "
        "return true; }"
    )

    for name in ("Results", "Queue", "Settings", "Batch"):
        page.get_by_role("link", name=name).click()
        page.wait_for_timeout(2_500)
        no_internal_names(page, name)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            shoot(page, f"{name.lower()}-{scheme}")
        page.emulate_media(color_scheme="light")


@browser_test
def test_retry_on_a_finished_batch_goes_live_to_done_and_the_webhook_tells_each_end(keyed, app_url, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    emulator = keyed
    hook = Receiver(fail_first=1)
    try:
        folder = tmp_path / "footage"
        make_video(folder / "interview-EMPTYME.mp4", seconds=1.0, seed=3)
        make_video(folder / "street.mp4", seconds=1.0, seed=4)

        page.get_by_role("link", name="Settings").click()
        page.get_by_label("Webhook URL (Slack, Teams, or anything that takes a JSON POST)").fill(
            hook.url, timeout=90_000
        )  # Settings draws late on a loaded machine
        page.get_by_role("button", name="Save webhook").click()
        expect(page.get_by_text("127.0.0.1/…part")).to_be_visible(timeout=30_000)

        page.get_by_role("link", name="Batch").click()
        add_from_folder(page, folder)
        page.get_by_role("button", name="Start batch (2 video(s))").click(timeout=60_000)
        expect(metric(page, "Failed")).to_contain_text("1", timeout=90_000)
        expect(page).to_have_title("Done 1/2 · Video Storyteller", timeout=30_000)
        tab_b = page.context.new_page()
        tab_b.goto(app_url)
        expect(metric(tab_b, "Done")).to_contain_text("1 / 2", timeout=60_000)

        emulator.config.empty_marker = "no longer matches"
        page.get_by_role("button", name="Retry").click()
        # No reload: the finished board goes live again and reaches Done, here and in the other tab.
        for tab in (page, tab_b):
            expect(metric(tab, "Done")).to_contain_text("2 / 2", timeout=60_000)
            expect(tab.get_by_text(re.compile(r"^interview-EMPTYME\.mp4 · .*Done"))).to_be_visible(timeout=15_000)
            expect(tab).to_have_title("Done 2/2 · Video Storyteller", timeout=15_000)
        assert emulator.uploads_of("interview-EMPTYME.mp4") == 1  # the retry reused the uploaded file

        # One message per end of the batch (the first after a 503), whichever tab saw it.
        tab_b.wait_for_timeout(6_000)  # both tabs' timers have passed the end
        assert [(b["batch"]["done"], b["batch"]["failed"]) for b in hook.bodies] == [(1, 1), (2, 0)], hook.bodies
        assert hook.requests == 3
        sent = json.dumps(hook.bodies)
        assert KEY not in sent and hook.bodies[0]["batch"]["link"].startswith(app_url + "/?batch=")

        # Ask again of one row: the answer joins this batch, beside its video, live to Done, no new upload.
        batch_shown = page.get_by_role("combobox", name="Batch").input_value()
        page.get_by_role("button", name="Ask again").first.click()
        asking = page.get_by_test_id("stPopoverBody")
        asking.get_by_role("textbox", name="Prompt").fill("Who speaks in this video, and about what?")
        expect(asking.get_by_text(re.compile(r"^1 video · about \$"))).to_be_visible(timeout=15_000)  # count, cost
        asking.get_by_role("button", name="Analyze again").click()
        expect(metric(page, "Done")).to_contain_text("3 / 3", timeout=60_000)
        assert page.get_by_role("combobox", name="Batch").input_value() == batch_shown  # no new one-row batch
        expect(page.get_by_text("Who speaks in this video, and about what?").first).to_be_visible(timeout=15_000)
        assert emulator.uploads_of("interview-EMPTYME.mp4") == 1
        no_internal_names(page, "after analyze again")
    finally:
        hook.close()


@browser_test
def test_the_checked_list_survives_a_reload_before_start(keyed, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    for n in range(2):
        make_video(folder / f"take-{n}.mp4", seconds=1.0, seed=n)
    add_from_folder(page, folder)
    expect(page.get_by_role("button", name="Start batch (2 video(s))")).to_be_visible(timeout=60_000)

    page.reload()

    expect(page.get_by_role("button", name="Start batch (2 video(s))")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("take-0.mp4")).to_be_visible()
    expect(page.get_by_text("take-1.mp4")).to_be_visible()
    page.locator("[class*=st-key-drop-] button").first.click()  # the list's "x": remove one file
    expect(page.get_by_role("button", name="Start batch (1 video(s))")).to_be_visible(timeout=30_000)
    page.reload()
    expect(page.get_by_role("button", name="Start batch (1 video(s))")).to_be_visible(timeout=60_000)
