"""Every page through streamlit.testing.v1.AppTest, against a live emulator with a test key."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storyteller_core.records.batch import Batch, Item
from storyteller_core.storage.disk_store import DiskStore
from storyteller_core.views.board import Status, batch_rows
from storyteller_ui.view import plain

from .helpers import ROOT, TEST_KEY

INTERNAL_NAMES = re.compile(r"\b(CREATED|UPLOADING|UPLOADED|FILE_PROCESSING|FILE_ACTIVE|ANALYZING|COMPLETED|WAITING)\b")


@pytest.fixture
def data_dir(tmp_path, monkeypatch, emulator):
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(ROOT)
    return tmp_path / "data"


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "ui.py"), default_timeout=60)


def text_of(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [c.value for c in at.code] + [i.value for i in at.info] + [str(m.value) for m in at.metric]
    parts += [m.label for m in at.metric] + [c.value for c in at.caption]
    return re.sub(r"\\(.)", r"\1", "\n".join(parts)).replace("\u2060", "")  # as shown: escapes and word joiners gone


def wait_ended(data_dir: Path, count: int, timeout: float = 60) -> list:
    store = DiskStore(data_dir / "store")
    deadline = time.monotonic() + timeout
    while True:
        rows = batch_rows(store)
        if len(rows) == count and all(r.ended for r in rows):
            return rows
        assert time.monotonic() < deadline, [r.label for r in rows]
        time.sleep(0.1)


def add_from_folder(at: AppTest, paths: list[Path], folder: Path) -> None:
    """Add videos through the local path tab (not the uploader widget)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        (folder / p.name).write_bytes(p.read_bytes())
    next(t for t in at.text_input if t.label.startswith("Path to a video file")).input(str(folder))
    next(b for b in at.button if b.label == "Add from path").click().run()


def start(at: AppTest) -> None:
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()


def finished_batch(data_dir: Path, paths: list[Path], folder: Path) -> tuple[AppTest, list]:
    """The app after a batch of these videos, started from the page, has ended; (the app, its rows)."""
    at = app().run()
    add_from_folder(at, paths, folder)
    start(at)
    rows = wait_ended(data_dir, len(paths))
    return at.run(), rows


@pytest.mark.slow
def test_upload_start_and_board_shows_every_outcome(data_dir, videos, one_video):
    at = app().run()
    assert not at.exception
    files = [(p.name, p.read_bytes(), "video/mp4") for p in videos[:2]]
    files += [("notes.mp4", b"not a video", "video/mp4"), ("bad-FAILME.mp4", one_video("x.mp4").read_bytes(), "video/mp4")]
    at.file_uploader[0].set_value(files).run()

    assert "notes.mp4 is not a video file" in text_of(at)
    assert next(b for b in at.button if b.label.startswith("Start batch")).label == "Start batch (3 video(s))"
    start(at)
    rows = wait_ended(data_dir, 3)  # the refused file never becomes a row...
    at.run()

    shown = text_of(at)
    assert {r.status for r in rows} == {Status.DONE, Status.FAILED}
    assert "notes.mp4" not in {r.name for r in rows}
    assert "could not be processed (emulated failure)" in shown  # FAILED row with Gemini's reason
    assert "notes.mp4 is not a video file" in shown  # ...it stays listed as not added, with its reason
    assert sum("1.0-second video" in c.value for c in at.code) >= 2  # stories in copyable code blocks
    assert "2 / 3" in shown
    dismiss = next(b for b in at.button if b.key and b.key.startswith("dismiss-") and b.key != "dismiss-all")
    dismiss.click().run()
    assert "notes.mp4 is not a video file" not in text_of(at)
    assert TEST_KEY not in shown
    assert not INTERNAL_NAMES.search(shown), INTERNAL_NAMES.search(shown)


@pytest.mark.slow
def test_the_checked_list_survives_a_reload_and_one_file_can_be_dropped(data_dir, videos):
    at = app().run()
    at.file_uploader[0].set_value([(p.name, p.read_bytes(), "video/mp4") for p in videos[:3]]).run()

    reloaded = app().run()  # a new session: what was dropped is still there

    assert next(b for b in reloaded.button if b.label.startswith("Start batch")).label == "Start batch (3 video(s))"
    drop = next(b for b in reloaded.button if b.key and b.key.startswith("drop-"))
    drop.click().run()
    assert next(b for b in reloaded.button if b.label.startswith("Start batch")).label == "Start batch (2 video(s))"
    assert len(list((data_dir / "spool").iterdir())) == 2  # the dropped file's copy is gone


@pytest.mark.slow
def test_retry_and_remove_act_on_the_row(data_dir, one_video, emulator):
    video = one_video("interview-EMPTYME.mp4")
    at = app().run()
    at.file_uploader[0].set_value([(video.name, video.read_bytes(), "video/mp4")]).run()
    start(at)
    [row] = wait_ended(data_dir, 1)
    assert row.status is Status.FAILED and row.analysis.error_code == "empty_answer"
    at.run()
    emulator.config.empty_marker = "no longer matches"

    at.button(key=f"retry-{row.item.id}").click().run()
    [row] = wait_ended(data_dir, 1)
    assert row.status is Status.DONE
    assert emulator.uploads_of(video.name) == 1  # the retry reused the ACTIVE file
    at.run()
    at.button(key=f"remove-{row.item.id}").click().run()
    assert DiskStore(data_dir / "store").item_ids() == []


@pytest.mark.slow
def test_results_page_filters_and_offers_the_csv(data_dir, videos):
    at = app().run()
    at.file_uploader[0].set_value([(p.name, p.read_bytes(), "video/mp4") for p in videos[:2]]).run()
    start(at)
    wait_ended(data_dir, 2)

    at.switch_page("pages/results.py").run()

    assert not at.exception
    assert len(at.dataframe[0].value) == 2
    at.text_input[0].input("clip-001").run()
    assert list(at.dataframe[0].value["file_name"]) == ["clip-001.mp4"]
    assert set(at.dataframe[0].value["status"]) == {"Done"}
    assert at.get("download_button")[0].proto.label == "Download CSV (1 row(s))"


def test_queue_and_settings_pages_render_and_never_show_the_key(data_dir):
    at = app().run()
    at.switch_page("pages/queue.py").run()
    assert not at.exception
    assert [m.label for m in at.metric] == [
        "Waiting",
        "Uploading",
        "Gemini is processing",
        "Ready to analyze",
        "Writing story",
    ]  # in the order of a video's life

    at.switch_page("pages/settings.py").run()
    assert not at.exception
    shown = text_of(at) + "\n".join(str(df.value) for df in at.dataframe)
    assert "••••••••6789" in shown and TEST_KEY not in shown
    assert "gemini-3.8-flash" in shown


def test_demo_banner_when_no_key(data_dir, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL")
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(data_dir) + "-demo")

    at = app().run()

    assert any("Demo mode: no API key; stories are emulator output." in i.value for i in at.info)
    at.switch_page("pages/settings.py").run()
    assert "not set: demo mode" in text_of(at)


def test_two_batches_with_the_same_name_stay_apart_in_the_picker(data_dir):
    # Started in the same minute from the same first file, two batches share their default name. The picker told its
    # options apart by label, so every rerun after the first jumped to the older one (another tab's new batch too).
    store = DiskStore(data_dir / "store")
    older, newer = "20261128-093614-1357", "20261128-093647-21fc"
    for batch_id, files in ((older, 1), (newer, 2)):
        store.add_batch(Batch(id=batch_id, name="2026-11-28 09:36 · clip-000.mp4"))
        for i in range(files):
            store.add_item(
                Item(
                    id=f"{batch_id}-{i}",
                    batch_id=batch_id,
                    display_name=f"clip-{i:03d}.mp4",
                    source_path=f"/videos/clip-{i:03d}.mp4",
                    error_code="not_video",
                    error_message="Not a video.",
                )
            )

    at = app().run()
    at.run()  # a rerun, as the board's timer makes

    picker = at.selectbox(key=f"board-batch-{newer}-2")
    assert picker.value == newer and "0 / 2" in text_of(at)
    assert picker.options == [f"2026-11-28 09:36 · clip-000.mp4 ({newer})", f"2026-11-28 09:36 · clip-000.mp4 ({older})"]
    picker.set_value(older).run()
    at.run()
    assert at.selectbox(key=f"board-batch-{newer}-2").value == older and "0 / 1" in text_of(at)


def test_a_row_renders_every_status_in_plain_words():
    def script() -> None:
        from storyteller_core.gemini.catalog import Catalog
        from storyteller_core.records.analysis import Analysis, AnalysisState
        from storyteller_core.records.batch import Item
        from storyteller_core.records.video import Video, VideoState
        from storyteller_core.settings import Settings
        from storyteller_core.views.board import row_of
        from storyteller_ui.view import row_view

        class NoCommands:
            def retry(self, item_id): ...
            def cancel(self, item_id): ...
            def remove(self, item_id): ...

        class NoEngine:
            commands = NoCommands()
            settings = Settings(api_key="k")
            catalog = Catalog(lambda: ["m"], lambda: Settings(api_key="k"))

        cases = [
            (VideoState.CREATED, AnalysisState.WAITING),
            (VideoState.UPLOADING, AnalysisState.WAITING),
            (VideoState.FILE_PROCESSING, AnalysisState.WAITING),
            (VideoState.FILE_ACTIVE, AnalysisState.WAITING),
            (VideoState.FILE_ACTIVE, AnalysisState.ANALYZING),
            (VideoState.FILE_ACTIVE, AnalysisState.COMPLETED),
            (VideoState.FAILED, AnalysisState.FAILED),
            (VideoState.CREATED, AnalysisState.CANCELLED),
        ]
        for n, (video_state, state) in enumerate(cases):
            video = Video(id=f"v{n}", sha256="a" * 64, display_name=f"{n}.mp4", state=video_state, progress=30)
            analysis = Analysis(
                id=f"a{n}",
                video_id=video.id,
                model="m",
                prompt="p",
                backend=NoEngine.settings.backend,
                state=state,
                story="The story." if state is AnalysisState.COMPLETED else None,
                error_message="Gemini could not process it." if state is AnalysisState.FAILED else None,
            )
            item = Item(
                id=f"i{n}", batch_id="b", display_name=video.display_name, source_path="/x", video_id=video.id, analysis_id=analysis.id
            )
            row_view(NoEngine(), row_of(item, analysis, video))

    at = AppTest.from_function(script).run()

    assert not at.exception
    shown = "\n".join(m.value for m in at.markdown)
    for label in ("Waiting", "Uploading 45 %", "Gemini is processing", "Ready to analyze", "Writing story", "Done", "Failed", "Cancelled"):
        assert label in shown
    assert not INTERNAL_NAMES.search(shown)
    assert [e.value for e in at.error] == ["Gemini could not process it\\."]  # escaped: shown as plain text
    assert [c.value for c in at.code] == ["The story."]
    labels = [b.label for b in at.button]
    assert labels.count("Cancel") == 5 and labels.count("Retry") == 2 and labels.count("Remove") == 8


@pytest.mark.slow
def test_names_and_server_messages_render_as_text_not_markdown(data_dir, one_video):
    name = "![x](http:&#47;&#47;host&#47;beacon.png) [click](javascript:alert(1)) <img src=x>-FAILME.mp4"
    video = one_video("plain.mp4")
    at = app().run()
    at.file_uploader[0].set_value([(name, video.read_bytes(), "video/mp4"), ("](x).mp4", b"junk", "video/mp4")]).run()
    start(at)
    wait_ended(data_dir, 1)  # the junk file is not added: it stays listed with its reason, shown below
    at.run()

    rendered = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    assert any("\\]\\(x\\)" in w.value for w in at.warning)  # the refused "](x).mp4", as text
    joined = "\n".join(rendered)
    assert "beacon" in joined and "click" in joined  # the names are shown...
    assert not re.search(r"(?<!\\)(!\[|\]\(|<img)", joined)  # ...as text: no image, link or tag syntax left live
    assert "\\!\\[x\\]\\(http" in joined and "\\[click\\]\\(javascript" in joined and "\\<img src\\=x\\>" in joined


@pytest.mark.slow
def test_cancel_button_stops_a_running_row(data_dir, videos, emulator):
    emulator.config.processing_delay_s = 30
    at = app().run()
    at.file_uploader[0].set_value([(videos[0].name, videos[0].read_bytes(), "video/mp4")]).run()
    start(at)
    [item_id] = DiskStore(data_dir / "store").item_ids()

    at.button(key=f"cancel-{item_id}").click().run()

    [row] = wait_ended(data_dir, 1, timeout=30)
    assert row.status is Status.CANCELLED
    assert not emulator.stats.generates


@pytest.mark.parametrize(
    "name",
    ["../../outside.mp4", "..\\\\..\\\\windows.mp4", "/etc/cron.d/job.mp4", "ñandú ☃ " * 40 + ".mp4", "..", "a\x00b.mp4"],
)
def test_uploaded_names_cannot_escape_the_data_dir(data_dir, videos, tmp_path, name):
    before = set(tmp_path.rglob("*"))
    at = app().run()

    at.file_uploader[0].set_value([(name, videos[0].read_bytes(), "video/mp4")]).run()

    assert not at.exception
    written = set(tmp_path.rglob("*")) - before
    assert written and all(data_dir in p.parents or p == data_dir for p in written), written
    spooled = list((data_dir / "spool").iterdir())
    assert len(spooled) == 1 and re.fullmatch(r"[0-9a-f]{64}(\.[a-z0-9]{1,9})?", spooled[0].name), spooled
    label = next(b for b in at.button if b.label.startswith("Start batch"))
    assert label.label == "Start batch (1 video(s))"


@pytest.mark.slow
def test_the_same_file_dropped_twice_becomes_one_row(data_dir, videos):
    at = app().run()
    content = videos[0].read_bytes()
    at.file_uploader[0].set_value([("a.mp4", content, "video/mp4"), ("a.mp4", content, "video/mp4")]).run()
    start(at)

    rows = wait_ended(data_dir, 1)

    assert len(rows) == 1 and rows[0].status is Status.DONE


@pytest.mark.slow
def test_removing_a_row_keeps_its_place_until_the_batch_changes(data_dir, videos, tmp_path):
    at, rows = finished_batch(data_dir, videos[:3], tmp_path / "pick")
    middle = rows[1].item.id

    at.button(key=f"remove-{middle}").click().run()

    assert middle not in DiskStore(data_dir / "store").item_ids()  # removed for real...
    removed = at.button(key=f"removed-{middle}")  # ...and drawn in its place, faded, with nothing to click
    assert removed.disabled and removed.label == "Removed"
    names = [m.value for m in at.markdown if "· " in m.value]
    assert [n.split(" · ")[0] for n in names] == [f"**{plain(r.name)}**" for r in rows]
    assert "2 / 2" in text_of(at)  # the totals count what is left


@pytest.mark.slow
def test_compact_view_and_a_finished_batch_title(data_dir, videos, tmp_path):
    at, _ = finished_batch(data_dir, videos[:2], tmp_path / "pick")

    at.toggle(key="board-compact").set_value(True).run()

    assert not at.exception
    assert at.session_state["compact-stories"] is True
    assert len([c for c in at.code if "1.0-second video" in c.value]) >= 2


@pytest.mark.slow
def test_all_stories_are_built_only_while_their_expander_is_open(data_dir, videos, tmp_path):
    at, rows = finished_batch(data_dir, videos[:2], tmp_path / "pick")
    names = [r.name for r in rows]

    def all_in_one() -> list:
        return [c for c in at.code if all(f"# {name}" in c.value for name in names)]

    assert [e.label for e in at.expander if e.label.startswith("All ")] == ["All 2 stories (copy all)"]
    assert all_in_one() == []  # closed: not built, not sent
    at.session_state[f"all-stories-{rows[0].item.batch_id}"] = True  # opened
    at.run()
    assert len(all_in_one()) == 1


@pytest.mark.slow
def test_results_count_rows_by_status_in_words(data_dir, videos, tmp_path):
    at = app().run()
    add_from_folder(at, videos[:2], tmp_path / "pick")
    start(at)
    wait_ended(data_dir, 2)

    at.switch_page("pages/results.py").run()

    assert "2 row(s): 2 done, 0 failed, 0 cancelled, 0 in flight." in text_of(at)
    assert set(at.dataframe[0].value["status"]) == {"Done"}
    assert not INTERNAL_NAMES.search(str(at.dataframe[0].value[["status", "progress"]]))


def test_settings_say_where_the_key_came_from_and_keep_a_webhook_url(data_dir):
    at = app().run()
    at.switch_page("pages/settings.py").run()
    assert "from the environment (GEMINI_API_KEY or GOOGLE_API_KEY)" in text_of(at)
    assert "Webhook: **not set**" in text_of(at)

    url_input = next(t for t in at.text_input if t.label.startswith("Webhook URL"))
    url_input.input("hooks.example.com/no-scheme")
    next(b for b in at.button if b.label == "Save webhook").click().run()
    assert "A webhook URL starts with https://" in text_of(at)

    url_input = next(t for t in at.text_input if t.label.startswith("Webhook URL"))
    url_input.input("https://hooks.example.com/services/T0/B0/abcdWXYZ")
    next(b for b in at.button if b.label == "Save webhook").click().run()

    assert "hooks.example.com/…WXYZ" in text_of(at)
    assert "abcdWXYZ" not in text_of(at).replace("…WXYZ", "")
    saved = data_dir / "notify.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert "Remove the webhook" in [b.label for b in at.button]


def test_progress_titles_in_words():
    from storyteller_core.views.board import Totals
    from storyteller_ui.notify import progress_title

    def t(rows: int, done: int, in_flight: int) -> Totals:
        return Totals(rows, done, rows - done - in_flight, 0, in_flight, 0, None, None, None, 0.0)

    assert progress_title(t(10, 3, 7)) == "3/10 · Video Storyteller"
    assert progress_title(t(10, 9, 0)) == "Done 9/10 · Video Storyteller"
    assert progress_title(t(0, 0, 0)) == "Video Storyteller"


def test_the_board_compares_the_cost_with_its_estimate(data_dir, videos, tmp_path):
    at, rows = finished_batch(data_dir, videos[:2], tmp_path / "pick")
    actual = sum(row.analysis.cost_usd for row in rows)
    estimate = sum(row.analysis.estimated_cost_usd for row in rows)
    cost = next(m for m in at.metric if m.label == "Cost")
    assert actual > 0 and estimate > 0
    assert cost.value == f"${actual:.4f}" and cost.delta == f"{(actual - estimate) / estimate:+.0%} vs estimate"


def test_a_large_folder_is_listed_at_once_and_checked_after_start(data_dir, videos, tmp_path):
    folder = tmp_path / "large"
    folder.mkdir()
    raw = videos[0].read_bytes()
    for i in range(24):  # more than the page checks before Start
        (folder / f"clip-{i:02d}.mp4").write_bytes(raw + f"#{i}".encode())
    (folder / "broken.mp4").write_bytes(b"not a video")
    at = app().run()
    next(t for t in at.text_input if t.label.startswith("Path to a video file")).input(str(folder))
    next(b for b in at.button if b.label == "Add from path").click().run()
    assert "25 file(s) are checked (length, format, cost) after Start" in text_of(at)
    assert len(at.dataframe) == 0  # 25 rows are still shown one by one; a table only past 50
    assert "checked after Start" in text_of(at)
    start(at)
    rows = wait_ended(data_dir, 25)
    assert sorted(row.status.value for row in rows) == ["Done"] * 24 + ["Failed"]
    assert next(row.error for row in rows if row.status is Status.FAILED).startswith("broken.mp4 is not a video file")
