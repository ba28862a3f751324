"""Every page through streamlit.testing.v1.AppTest, against a live emulator with a test key."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from storyteller_core import State
from storyteller_core.store import JobStore

from .conftest import TEST_KEY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path, monkeypatch, emulator):
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(ROOT)
    return tmp_path / "data"


def app(page: str = "app.py") -> AppTest:
    return AppTest.from_file(str(ROOT / page), default_timeout=60)


def text_of(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [c.value for c in at.code] + [i.value for i in at.info] + [str(m.value) for m in at.metric]
    return "\n".join(parts)


def wait_terminal(data_dir: Path, count: int, timeout: float = 60) -> list:
    store = JobStore(data_dir / "jobs")
    deadline = time.monotonic() + timeout
    while True:
        jobs = store.jobs()
        if len(jobs) == count and all(j.state.terminal for j in jobs):
            return jobs
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_upload_start_and_board_shows_every_outcome(data_dir, videos, one_video):
    at = app().run()
    assert not at.exception
    files = [(p.name, p.read_bytes(), "video/mp4") for p in videos[:2]]
    files += [("notes.mp4", b"not a video", "video/mp4"), ("bad-FAILME.mp4", one_video("x.mp4").read_bytes(), "video/mp4")]
    at.file_uploader[0].set_value(files).run()

    assert "notes.mp4 is not a video file" in text_of(at)
    assert at.dataframe  # the accepted list with duration, size, tokens and cost
    start = next(b for b in at.button if b.label.startswith("Start batch"))
    assert start.label == "Start batch (3 video(s))"
    start.click().run()
    jobs = wait_terminal(data_dir, 4)
    at.run()

    shown = text_of(at)
    assert {j.state for j in jobs} == {State.COMPLETED, State.FAILED}
    assert "could not be processed (emulated failure)" in shown  # FAILED row with Gemini's reason
    assert "notes.mp4 is not a video file" in shown
    assert sum("1.0-second video" in c.value for c in at.code) >= 2  # stories in copyable code blocks
    assert "2 / 4" in shown
    assert TEST_KEY not in shown


def test_retry_and_remove_buttons_act_on_the_job(data_dir, one_video, emulator):
    video = one_video("interview-EMPTYME.mp4")
    at = app().run()
    at.file_uploader[0].set_value([(video.name, video.read_bytes(), "video/mp4")]).run()
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()
    [job] = wait_terminal(data_dir, 1)
    assert job.state is State.FAILED and job.error_code == "empty_answer"
    at.run()
    emulator.config.empty_marker = "no longer matches"

    at.button(key=f"retry-{job.id}").click().run()
    [job] = wait_terminal(data_dir, 1)
    assert job.state is State.COMPLETED
    assert emulator.uploads_of(video.name) == 1  # the retry reused the ACTIVE file
    at.run()
    at.button(key=f"remove-{job.id}").click().run()
    assert JobStore(data_dir / "jobs").job_ids() == []


def test_results_page_filters_and_offers_the_csv(data_dir, videos):
    at = app().run()
    at.file_uploader[0].set_value([(p.name, p.read_bytes(), "video/mp4") for p in videos[:2]]).run()
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()
    wait_terminal(data_dir, 2)

    at.switch_page("pages/results.py").run()

    assert not at.exception
    assert len(at.dataframe[0].value) == 2
    at.text_input[0].input("clip-001").run()
    assert list(at.dataframe[0].value["file_name"]) == ["clip-001.mp4"]
    assert at.get("download_button")[0].proto.label == "Download CSV (1 row(s))"


def test_queue_and_settings_pages_render_and_never_show_the_key(data_dir):
    at = app().run()
    at.switch_page("pages/queue.py").run()
    assert not at.exception and "Running" in [m.label for m in at.metric]

    at.switch_page("pages/settings.py").run()
    assert not at.exception
    shown = text_of(at) + "\n".join(str(df.value) for df in at.dataframe)
    assert "••••••••6789" in shown and TEST_KEY not in shown
    assert "gemini-2.5-flash" in shown


def test_demo_banner_when_no_key(data_dir, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL")
    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(data_dir) + "-demo")

    at = app().run()

    assert any("Demo mode: no API key; stories are emulator output." in i.value for i in at.info)


def test_a_job_row_renders_every_state():
    def script() -> None:
        from storyteller_core import Job, State
        from storyteller_ui.view import job_row

        class NoEngine:
            def retry(self, job_id): ...
            def cancel(self, job_id): ...
            def remove(self, job_id): ...

        for state in State:
            job = Job(display_name=f"{state.value}.mp4", source_path="/x", size_bytes=1, sha256="a" * 64,
                      mime_type="video/mp4", model="m", prompt="p", batch_id="b", state=state, progress=50,
                      story="The story." if state is State.COMPLETED else None,
                      error_message="Gemini could not process it." if state is State.FAILED else None)
            job_row(NoEngine(), job)

    at = AppTest.from_function(script).run()

    assert not at.exception
    shown = "\n".join(m.value for m in at.markdown)
    for label in ("Queued", "Uploading", "Uploaded", "Gemini processing", "Ready to analyze", "Writing story",
                  "Completed", "Failed", "Cancelled"):
        assert label in shown
    assert [e.value for e in at.error] == ["Gemini could not process it."]
    assert [c.value for c in at.code] == ["The story."]
    labels = [b.label for b in at.button]
    assert labels.count("Cancel") == 6 and labels.count("Retry") == 2 and labels.count("Remove") == 9


def test_cancel_button_stops_a_running_job(data_dir, videos, emulator):
    emulator.config.processing_delay_s = 30
    at = app().run()
    at.file_uploader[0].set_value([(videos[0].name, videos[0].read_bytes(), "video/mp4")]).run()
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()
    [job] = JobStore(data_dir / "jobs").jobs()

    at.button(key=f"cancel-{job.id}").click().run()

    [job] = wait_terminal(data_dir, 1, timeout=30)
    assert job.state is State.CANCELLED
    assert not emulator.stats.generates


@pytest.mark.parametrize(
    "name",
    ["../../outside.mp4", "..\\\\..\\\\windows.mp4", "/etc/cron.d/job.mp4", "ñandú ☃ " * 40 + ".mp4", "..", "a\x00b.mp4"],
)
def test_uploaded_names_cannot_escape_the_data_dir(data_dir, videos, tmp_path, name):
    before = {p for p in tmp_path.rglob("*")}
    at = app().run()

    at.file_uploader[0].set_value([(name, videos[0].read_bytes(), "video/mp4")]).run()

    assert not at.exception
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(data_dir in p.parents or p == data_dir for p in written), written
    spooled = list((data_dir / "spool").iterdir())
    assert len(spooled) == 1 and re.fullmatch(r"[0-9a-f]{64}(\.[a-z0-9]{1,9})?", spooled[0].name), spooled
    label = next(b for b in at.button if b.label.startswith("Start batch"))
    assert label.label == "Start batch (1 video(s))"


def test_the_same_file_dropped_twice_becomes_one_job(data_dir, videos):
    at = app().run()
    content = videos[0].read_bytes()
    at.file_uploader[0].set_value([("a.mp4", content, "video/mp4"), ("a.mp4", content, "video/mp4")]).run()
    next(b for b in at.button if b.label.startswith("Start batch")).click().run()

    jobs = wait_terminal(data_dir, 1)

    assert len(jobs) == 1 and jobs[0].state is State.COMPLETED
