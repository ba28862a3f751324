"""Reports, subtitles and e-mail on the pages (issue 22): built on a click, sent from Settings, failures on Queue."""

from __future__ import annotations

import io

import pytest
from docx import Document
from pypdf import PdfReader

from storyteller_core.deliverables import mail
from storyteller_ui.story_view import WORD_JOINER

from .test_email import smtp, wait_for  # noqa: F401 (the loopback SMTP server fixture)
from .test_pages import app, data_dir, finished_batch, text_of  # noqa: F401 (data_dir is a fixture)


def _button(at, label):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


@pytest.mark.slow
def test_results_builds_the_word_and_pdf_reports_of_the_rows_shown_on_a_click(data_dir, videos, tmp_path):  # noqa: F811
    at, rows = finished_batch(data_dir, videos[:2], tmp_path / "pick")
    at.switch_page("pages/results.py").run()
    assert "results-docx-built" not in at.session_state  # nothing is built before the person asks

    _button(at, "Build Word report").click().run()
    _button(at, "Build PDF report").click().run()

    assert not at.exception
    _, docx_bytes, count = at.session_state["results-docx-built"]
    _, pdf_bytes, pdf_count = at.session_state["results-pdf-built"]
    assert count == pdf_count == len([r for r in rows if r.story]) == 2
    headings = [p.text for p in Document(io.BytesIO(docx_bytes)).paragraphs]
    pdf_text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf_bytes)).pages)
    for row in rows:
        assert any(row.name in h for h in headings) and row.name in pdf_text
    labels = [d.proto.label for d in at.get("download_button")]
    assert "Download Word report (2 video(s))" in labels and "Download PDF report (2 video(s))" in labels


@pytest.mark.slow
def test_the_batch_page_offers_reports_among_its_actions_at_the_top(data_dir, videos, tmp_path):  # noqa: F811
    at, _ = finished_batch(data_dir, videos[:1], tmp_path / "pick")
    labels = [p.proto.popover.label for p in at.get("popover")]
    assert "Reports and subtitles" in labels and "Analyze the whole batch again (1 video(s))" in labels
    assert "The story (copy)" in [e.label for e in at.expander]  # not "All 1 stories"


def test_settings_saves_the_smtp_server_and_sends_a_test_e_mail(data_dir, smtp):  # noqa: F811
    port, inbox = smtp
    at = app()
    at.switch_page("pages/settings.py").run()
    assert not at.exception
    form = at.text_input
    assert "SMTP server" in [t.label for t in form], ([t.label for t in form], text_of(at))
    next(t for t in form if t.label == "SMTP server").input(f"smtp://me:s3cret@127.0.0.1:{port}")
    next(t for t in form if t.label == "Send to").input("analyst@example.com")
    _button(at, "Save e-mail").click().run()

    assert not at.exception
    shown = text_of(at)
    assert f"smtp://me@127.0.0.1:{port} → analyst@example.com" in shown and "s3cret" not in shown
    _button(at, "Send a test e-mail").click().run()
    wait_for(lambda: len(inbox.messages) == 1)
    assert inbox.messages[0]["To"] == "analyst@example.com"
    assert any("sent to analyst@example.com" in s.value.replace("\\", "").replace(WORD_JOINER, "") for s in at.success)


def test_queue_says_when_the_last_e_mail_could_not_be_sent(data_dir):  # noqa: F811
    data_dir.mkdir(parents=True, exist_ok=True)
    mail.save(data_dir, "smtp://127.0.0.1:9", "analyst@example.com")
    outcome = mail.send_test(data_dir)  # port 9: nobody listens, the send fails
    assert not outcome.ok
    at = app()
    at.switch_page("pages/queue.py").run()
    warnings = [w.value for w in at.warning]
    assert any("not sent" in w and "Settings page" in w for w in warnings), warnings
