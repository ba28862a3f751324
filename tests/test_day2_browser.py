"""Issue 19 in a real browser (Debian's chromium via playwright): what a person sees on the Batch page.

1. Rows asked of another Gemini (demo mode, another key) are left for it, never failed, and Retry makes them Done.
2. Gemini out of reach: the row says why it waits and when it tries again; one banner says since when.
4. Refused files are listed with their reason (never rows); a mistyped path is said by the field.
5. A finished story reads as formatted text with its Markdown copy box; at 1024 px nothing on the board is cut;
   the batch actions sit above the rows.

The app runs as a real server (tests/conftest.py `app_server`); files come in through the local path tab.
Screenshots go to /tmp/day2shots/ (not the repo).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from storyteller_core.emulator import Emulator, EmulatorConfig
from storyteller_core.intake.samples import make_video
from storyteller_core.records.video import VideoState

from .helpers import ask, row_of_item, wait_until
from .test_day import (
    KEY,
    add_from_folder,
    browser_test,
    keyed,  # noqa: F401 - a fixture, used by name
    metric,
)

SHOTS = Path("/tmp/day2shots")
OTHER_KEY = "another-key-for-server-b-wxyz"
ROW = '[class*="st-key-row-"]'
METRICS = ("Done", "Failed", "Cancelled", "In flight", "Elapsed", "Cost")


def shot(page, name: str, width: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """The whole page at ``width`` px (Streamlit scrolls inside stMain: the window grows to its height first)."""
    SHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    page.set_viewport_size({"width": width or size["width"], "height": size["height"]})
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": width or size["width"], "height": min(6000, max(size["height"], height + 40))})
    page.wait_for_timeout(500)  # the layout settles at the new size (a screenshot, not an assertion)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def reads(text: str) -> re.Pattern[str]:
    """``text`` as a person reads it: the pages put an invisible word joiner into addresses (so they are not links)."""
    return re.compile("".join(re.escape(c) + "\u2060?" for c in text))


def figure(page, label: str):  # type: ignore[no-untyped-def]
    """The board's metric ``label``: while a rerun replaces the board, Streamlit briefly draws the old one beside it."""
    return metric(page, label).first


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row_of(page, name: str):  # type: ignore[no-untyped-def]
    """The row of ``name`` (the first: a rerun briefly leaves the old board's beside the new one, as for metrics)."""
    return page.locator(ROW).filter(has_text=reads(name)).first


# -- item 1: rows asked of another Gemini are left, not failed ----------------------------------------------
@pytest.fixture
def left_by_others(
    keyed,  # noqa: F811
    make_engine,
    tmp_path,
):  # type: ignore[no-untyped-def]
    """Before the app starts, its data folder holds two rows it cannot do with its key: one asked in demo mode
    (a CLI without a key), one of another Gemini server with another key. Neither process is running now."""
    data = tmp_path / "data"  # app_env's STORYTELLER_DATA_DIR
    demo_video = make_video(tmp_path / "in" / "asked-in-demo.mp4", seconds=1.0, seed=5)
    other_video = make_video(tmp_path / "in" / "asked-of-server-b.mp4", seconds=1.0, seed=6)
    demo = make_engine(data_dir=data, api_key="", start=False)  # no workers: the rows wait, as a stopped CLI leaves them
    demo.commands.submit_paths([demo_video], ask(demo), batch_name="Asked in demo mode")
    demo.shutdown(timeout=5)
    with Emulator(EmulatorConfig(processing_delay_s=600, analysis_delay_s=0.05)) as gemini_b:  # another Gemini
        other = make_engine(data_dir=data, base_url=gemini_b.base_url, api_key=OTHER_KEY)  # a CLI with another key
        [item] = other.commands.submit_paths([other_video], ask(other), batch_name="Asked of server B")
        wait_until(lambda: row_of_item(other, item.id).video.state is VideoState.FILE_PROCESSING, what="processing")
        other.shutdown(timeout=5)  # its row waits at Gemini B; nobody holds it now
        server_b = gemini_b.base_url.rstrip("/")
    return server_b


@browser_test
def test_rows_asked_of_another_gemini_wait_for_it_and_retry_makes_them_done(left_by_others, app_url, page):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    server_b = left_by_others
    # Server B's row, left for the CLI that has B's key. (Both batches began in the same second: either is newest.)
    expect(page.get_by_role("combobox", name="Batch")).to_be_visible(timeout=60_000)
    pick_batch(page, "Asked of server B")
    other_row = row_of(page, "asked-of-server-b.mp4")
    expect(other_row).to_contain_text(
        reads(
            f"Waiting for the app or CLI that has the key for the Gemini server at "
            f"{server_b}, the key ending …wxyz; this one uses the Gemini server at"
        ),
        timeout=60_000,
    )
    waiting_sentences_hold(page, other_row)
    shot(page, "item1-waiting-for-another-key")

    # The other batch: the row asked in demo mode (a CLI without a key) waits too, never failed meanwhile.
    pick_batch(page, "Asked in demo mode")
    demo_row = row_of(page, "asked-in-demo.mp4")
    expect(demo_row).to_contain_text(
        "Waiting for an app or CLI in demo mode (no key: the local emulator); this one uses the Gemini server at", timeout=60_000
    )
    waiting_sentences_hold(page, demo_row)
    shot(page, "item1-waiting-for-demo-mode")

    # Retry asks this app's Gemini instead: Done, in each batch.
    for batch, name, row in (
        ("Asked in demo mode", "asked-in-demo.mp4", demo_row),
        ("Asked of server B", "asked-of-server-b.mp4", other_row),
    ):
        pick_batch(page, batch)
        expect(row.get_by_role("button", name="Retry")).to_be_visible(timeout=30_000)
        if batch == "Asked of server B":  # still left alone while the demo row was done: never failed
            expect(row).to_contain_text("Waiting for the app or CLI that has the key for")
            expect(figure(page, "Failed")).to_contain_text("0")
        row.get_by_role("button", name="Retry").click()
        expect(figure(page, "Done")).to_contain_text("1 / 1", timeout=90_000)
        expect(page.get_by_text(re.compile(rf"^{re.escape(name)} · .*Done"))).to_be_visible(timeout=15_000)
        expect(figure(page, "Failed")).to_contain_text("0")
        expect(row).not_to_contain_text("Waiting for")
        expect(row.get_by_role("button", name="Retry")).to_have_count(0)
    shot(page, "item1-retried-to-done")


def waiting_sentences_hold(page, row) -> None:  # type: ignore[no-untyped-def]
    """A row left for another Gemini: its sentence, a Retry button, no Failed anywhere, no key on the page."""
    from playwright.sync_api import expect

    expect(row).to_contain_text("Retry asks the Gemini this app uses instead.")
    expect(row.get_by_role("button", name="Retry")).to_be_visible()
    expect(row).not_to_contain_text("Failed")
    expect(figure(page, "Failed")).to_contain_text("0")
    expect(figure(page, "Done")).to_contain_text("0 / 1")
    expect(page.get_by_text("This analysis was asked of another Gemini")).to_have_count(0)
    body = page.locator("body").inner_text()
    assert OTHER_KEY not in body and KEY not in body and "Press Retry" not in body


def pick_batch(page, name: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    picker = page.get_by_role("combobox", name="Batch")
    if name not in picker.input_value():
        picker.click()
        page.get_by_role("option", name=re.compile(re.escape(name))).click()
    expect(picker).to_have_value(re.compile(re.escape(name)), timeout=30_000)


# -- item 2: Gemini out of reach ------------------------------------------------------------------------------
@pytest.fixture
def unreachable(app_env: dict[str, str]) -> str:
    """The app with a key, pointed at a port nobody listens on."""
    url = f"http://127.0.0.1:{dead_port()}"
    app_env["GEMINI_API_KEY"] = KEY
    app_env["GOOGLE_GEMINI_BASE_URL"] = url
    return url


@browser_test
def test_gemini_out_of_reach_shows_on_the_row_and_once_as_a_banner(unreachable, app_url, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    make_video(folder / "harbour.mp4", seconds=1.0, seed=1)
    add_from_folder(page, folder)
    page.get_by_role("button", name="Start batch (1 video(s))").click(timeout=60_000)

    row = row_of(page, "harbour.mp4")
    retrying = re.compile(r"Can't reach Gemini, retrying (in \d+ s|now) \(attempt (\d+)\)")
    expect(row).to_contain_text(retrying, timeout=60_000)
    expect(row).to_contain_text(
        re.compile(r"Can't reach Gemini, retrying (in \d+ s|now) \(attempt ([2-9]|\d\d+)\)"), timeout=60_000
    )  # the attempt counts up
    found = retrying.search(row.inner_text())
    assert found, row.inner_text()
    expect(row).not_to_contain_text("Failed")
    banner = page.get_by_text(re.compile(r"^Can't reach Gemini since \d\d:\d\d; retrying"))
    expect(banner).to_have_count(1, timeout=30_000)  # once, however many rows wait
    expect(banner).to_contain_text("Check the network connection (or GOOGLE_GEMINI_BASE_URL); nothing is lost meanwhile.")
    expect(banner).to_be_visible()
    text = page.locator("body").inner_text()
    assert text.count("Can't reach Gemini since") == 1, text
    assert "NETWORK" not in text and KEY not in text
    shot(page, "item2-gemini-out-of-reach-1440", 1440)
    shot(page, "item2-gemini-out-of-reach-1024", 1024)


# -- item 4: refused files are listed, never rows -------------------------------------------------------------
@browser_test
def test_refused_files_stay_in_a_dismissible_list_and_never_become_rows(keyed, app_url, page, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    make_video(folder / "take-1.mp4", seconds=1.0, seed=1)
    make_video(folder / "take-2.mp4", seconds=1.0, seed=2)
    (folder / "notes.mp4").write_text("meeting notes, not a video\n")
    mistyped = tmp_path / "fotage"

    add_from_folder(page, mistyped)
    field = page.get_by_label("Path to a video file or a folder of videos")
    nothing = page.get_by_text(reads(f"Nothing is at {mistyped}. Check the path"))
    expect(nothing).to_be_visible(timeout=30_000)
    below = nothing.bounding_box()["y"] - (field.bounding_box()["y"] + field.bounding_box()["height"])
    assert 0 <= below < 150, below  # by the field, not at the bottom of the page
    assert page.locator('[data-testid="stTabs"]').filter(has=nothing).count() == 1  # in the path tab itself
    shot(page, "item4-mistyped-path")

    field.fill(str(folder))
    page.get_by_role("button", name="Add from path").click()
    not_added = page.locator('[class*="st-key-not-added"]')
    expect(not_added).to_contain_text("Not added (1)", timeout=30_000)
    expect(not_added).to_contain_text("notes.mp4 is not a video")
    expect(page.get_by_text("Ready: 2 video(s), not added: 1")).to_be_visible()
    expect(nothing).to_have_count(0)  # said once, for the path it was about
    start = page.get_by_role("button", name="Start batch (2 video(s))")
    expect(start).to_be_visible()
    shot(page, "item4-not-added-before-start")
    start.click()

    expect(figure(page, "Done")).to_contain_text("2 / 2", timeout=90_000)
    expect(page.locator(ROW)).to_have_count(2, timeout=15_000)
    expect(row_of(page, "notes.mp4")).to_have_count(0)
    expect(figure(page, "Failed")).to_contain_text("0")
    expect(not_added).to_contain_text("notes.mp4 is not a video")  # kept, with its reason, until dismissed
    shot(page, "item4-finished-with-not-added")

    cross = not_added.locator('[class*="st-key-dismiss-"]:not(.st-key-dismiss-all) button:visible')
    expect(cross).to_have_count(1)  # one ✕ per refused file (Streamlit draws a hidden twin of a button with help)
    cross.hover()
    expect(page.get_by_test_id("stTooltipContent").filter(has_text="Dismiss")).to_be_visible(timeout=10_000)
    cross.click()
    expect(not_added).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("notes.mp4 is not a video")).to_have_count(0)
    expect(figure(page, "Done")).to_contain_text("2 / 2")  # dismissing touches no row


# -- item 5: the board is easy to read -----------------------------------------------------------------------------
CUT = """(els) => els.flatMap(e => [e, ...e.querySelectorAll('*')])
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    .map(e => e.tagName + ':' + e.textContent.slice(0, 40))"""


def assert_board_fits(page, width: int) -> None:  # type: ignore[no-untyped-def]
    """Every metric, the filter's choices and the toggle lie inside the window; none of their text is clipped."""
    from playwright.sync_api import expect

    expect(metric(page, "Done")).to_have_count(1, timeout=15_000)  # one board drawn: no rerun under way
    for label in METRICS:
        shown = figure(page, label)
        expect_visible(shown)
        value = shown.get_by_test_id("stMetricValue")
        for part in (shown.get_by_test_id("stMetricLabel"), value):
            box = part.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (label, box, width)
        cut = value.evaluate_all(CUT) + shown.get_by_test_id("stMetricLabel").evaluate_all(CUT)
        assert cut == [], (label, cut)
    controls = page.get_by_role("radiogroup", name="Show")
    for choice in ("All", "In flight", "Done", "Failed", "Cancelled"):
        button = controls.get_by_role("radio", name=choice, exact=True)
        expect_visible(button)
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (choice, box, width)
        assert button.evaluate_all(CUT) == [], choice
    toggle = page.get_by_test_id("stCheckbox").filter(has_text="Compact")
    box = toggle.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, ("Compact", box, width)


def expect_visible(locator) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(locator).to_be_visible(timeout=15_000)


@browser_test
def test_a_finished_story_reads_as_formatted_text_and_the_board_fits_1024_px(keyed, app_url, page, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1024, "height": 800})
    folder = tmp_path / "footage"
    make_video(folder / "harbour-interview.mp4", seconds=6.0, seed=1)
    make_video(folder / "street-market.mp4", seconds=6.0, seed=2)
    add_from_folder(page, folder)
    page.get_by_role("button", name="Start batch (2 video(s))").click(timeout=60_000)

    expect(figure(page, "In flight")).to_contain_text(re.compile(r"[12]"), timeout=60_000)
    assert_board_fits(page, 1024)
    shot(page, "item5-in-flight-1024", 1024)
    shot(page, "item5-in-flight-1440", 1440)

    expect(figure(page, "Done")).to_contain_text("2 / 2", timeout=90_000)
    row = row_of(page, "harbour-interview.mp4")
    expect(row).to_contain_text("Done", timeout=15_000)

    # The story as formatted text: a heading and a list, in the page's own font, not a `## ` line in a code box.
    story = row.get_by_test_id("stMarkdown").filter(has=page.locator("h4, h5, h6"))
    expect(story).to_have_count(1, timeout=15_000)
    heading = story.locator("h4, h5, h6").first
    expect(heading).to_contain_text("harbour-interview")
    assert not heading.inner_text().lstrip().startswith("#"), heading.inner_text()
    assert "monospace" not in heading.evaluate("e => getComputedStyle(e).fontFamily").lower()
    expect(story.locator("li").first).to_be_visible()
    assert story.locator("li").count() >= 2
    assert not re.search(r"^\s*(##|\*\*|- )", story.inner_text(), re.MULTILINE), story.inner_text()
    # Nothing fetched or linked from model text (Streamlit's own "Link to heading" anchor points inside the page).
    assert story.locator('img, a:not([href^="#"])').count() == 0, story.evaluate("e => e.innerHTML")

    # The one-click copy of the Markdown is still there.
    code = row.locator('[class*="st-key-story-"] [data-testid="stCode"]')
    expect(code).to_have_count(1)
    markdown = code.locator("code").inner_text()
    assert re.match(r"^## .*harbour-interview", markdown), markdown
    assert "**Key moments**" in markdown and re.search(r"^- \d\d:\d\d ", markdown, re.MULTILINE), markdown
    expect(code.get_by_role("button", name="Copy to clipboard")).to_have_count(1)

    # At 1024 px nothing is cut, and the batch's actions sit above the first row with their count.
    page.locator(ROW).first.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.get_by_test_id("stMetric").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    assert_board_fits(page, 1024)
    again = page.get_by_role("button", name=re.compile(r"Analyze the whole batch again \(2 video\(s\)\)"))
    reports = page.get_by_role("button", name=re.compile(r"Reports and subtitles"))
    first_row = page.locator(ROW).first.bounding_box()
    for action in (again, reports):
        expect_visible(action)
        box = action.bounding_box()
        assert box and box["y"] + box["height"] <= first_row["y"], (box, first_row)
        assert box["x"] + box["width"] <= 1024
    metrics_top = page.get_by_test_id("stMetric").first.bounding_box()["y"]
    assert again.bounding_box()["y"] < metrics_top  # the actions come before the board's figures too
    shot(page, "item5-finished-1024", 1024)
    shot(page, "item5-finished-1440", 1440)


# -- found while writing these (fixed in fd645f6): text that looks like an address became a link --------------
@browser_test
def test_text_that_looks_like_an_address_is_shown_as_text_not_a_link(keyed, app_url, page, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    make_video(folder / "www.example.com.mp4", seconds=1.0, seed=1)
    add_from_folder(page, folder)
    prompt = page.get_by_role("textbox", name="Prompt")
    expect(prompt).to_be_visible(timeout=30_000)
    prompt.fill("Tell the story; compare with https://tracker.example/pixel?id=1")  # the demo story quotes the prompt
    page.get_by_role("button", name="Start batch (1 video(s))").click(timeout=60_000)

    row = row_of(page, "www.example.com.mp4")
    expect(row).to_contain_text("Done", timeout=90_000)
    expect(row.get_by_test_id("stMarkdown").filter(has_text=reads("https://tracker.example/pixel"))).not_to_have_count(0)
    expect(row).to_contain_text(reads("www.example.com.mp4 ·"))  # the name reads as it is
    shot(page, "addresses-shown-as-text")
    links = row.locator('a:not([href^="#"])')  # Streamlit's own heading anchors point inside the page
    assert links.count() == 0, links.evaluate_all("els => els.map(e => e.href)")


# -- leftovers: the finished toast covers nothing at the top; the Results page's batch chip fits -------------------
UNCOVERED = """(e) => {
    const r = e.getBoundingClientRect(), missed = [];
    for (const fx of [0.05, 0.25, 0.5, 0.75, 0.95]) for (const fy of [0.2, 0.5, 0.8]) {
        const x = r.left + fx * r.width, y = r.top + fy * r.height, hit = document.elementFromPoint(x, y);
        if (!hit || !e.contains(hit)) missed.push([Math.round(x), Math.round(y), hit ? hit.className.toString() : null]);
    }
    return missed;
}"""


def main_to_top(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollTo(0, 0)")


@browser_test
def test_the_finished_toast_leaves_the_demo_banner_uncovered_at_1024_and_1440_px(app_url, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    make_video(folder / "harbour.mp4", seconds=1.0, seed=1)
    page.set_viewport_size({"width": 1024, "height": 800})
    add_from_folder(page, folder)
    page.get_by_role("button", name="Start batch (1 video(s))").click(timeout=60_000)
    toast = page.get_by_test_id("stToast").filter(has_text="Batch finished: 1 done of 1")
    expect(toast).to_be_visible(timeout=90_000)
    toast.hover()  # a hovered toast stays: the check below never races its ten seconds
    banner = page.get_by_test_id("stAlert").filter(has_text="Demo mode: no API key")
    for width in (1024, 1440):
        page.set_viewport_size({"width": width, "height": 800})
        main_to_top(page)
        expect(toast).to_be_visible()
        expect(banner).to_be_in_viewport()
        assert banner.evaluate(UNCOVERED) == [], width  # every part of the banner (its words, any link) is reachable
        links = banner.locator("a")
        for i in range(links.count()):
            assert links.nth(i).evaluate(UNCOVERED) == [], (width, i)
        box = toast.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= 800, box
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"toast-finished-{width}.png"))
        toast.hover()


@browser_test
def test_the_results_pages_batch_chip_is_whole_at_1024_px(app_url, page, tmp_path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    folder = tmp_path / "footage"
    make_video(folder / "harbour-interview.mp4", seconds=1.0, seed=1)
    make_video(folder / "street-market.mp4", seconds=1.0, seed=2)
    page.set_viewport_size({"width": 1024, "height": 800})
    add_from_folder(page, folder)
    page.get_by_role("button", name="Start batch (2 video(s))").click(timeout=60_000)
    expect(figure(page, "Done")).to_contain_text("2 / 2", timeout=90_000)
    page.get_by_role("link", name="Results").click()
    picker = page.get_by_role("combobox", name="Batch")
    picker.click()
    page.get_by_role("option", name=re.compile(r"harbour-interview\.mp4")).click()
    page.keyboard.press("Escape")
    chosen = page.locator('[class*="st-key-results-batches"]')
    tags = chosen.get_by_test_id("stMultiSelectTagsContainer")
    expect(tags).to_contain_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d · harbour-interview\.mp4$"), timeout=30_000)
    expect(page.get_by_text("2 row(s): 2 done")).to_be_visible(timeout=30_000)
    field = chosen.bounding_box()
    for where in (tags, tags.locator("span").filter(has_text="harbour-interview.mp4").last):
        box = where.bounding_box()
        assert box and field and box["x"] >= field["x"] >= 0 and box["x"] + box["width"] <= field["x"] + field["width"] <= 1024, (
            box,
            field,
        )
    # Not scrolled, not clipped: the chip's whole text shows from its first character.
    assert tags.evaluate("e => [e.scrollLeft, e.scrollWidth <= e.clientWidth + 1]") == [0, True]
    label = tags.locator("span").filter(has_text="harbour-interview.mp4").last
    assert label.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), label.evaluate("e => [e.scrollWidth, e.clientWidth]")
    shot(page, "results-batch-chip-1024", 1024)
