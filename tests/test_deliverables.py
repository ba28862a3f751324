"""Word/PDF reports, SRT/WebVTT key moments: opened and parsed with their own libraries."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from storyteller_core.deliverables import docx_report, pdf_report, subtitles
from storyteller_core.intake.samples import make_video
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.story import Moment, Story
from storyteller_core.records.video import Video
from storyteller_core.views.board import Row
from storyteller_core.views.export import chapters_vtt
from storyteller_core.views.rows import row_of

INJECTION = "Boat leaves\n\n99\n00:00:00.000 --> 00:00:09.000\nInjected cue"


def story_row(n: int, source: str, *, name: str | None = None, moments: list[Moment] | None = None) -> Row:
    name = name or f"video-{n}.mp4"
    moments = moments if moments is not None else [Moment(0.5, f"Start of {n}"), Moment(1.5, f"Middle of {n} **bold**")]
    story = Story(
        text=f"First paragraph of {n}.\n\nSecond <b>paragraph</b> of {n}.",
        title=f"Title {n}",
        moments=moments,
        people=["Ann"],
        places=["Pier"],
        tags=["boats"],
    )
    video = Video(id=f"v{n}".ljust(64, "0"), sha256=f"v{n}".ljust(64, "0"), display_name=name, duration_s=3.0)
    analysis = Analysis(
        id=f"a{n}",
        video_id=video.id,
        model="gemini-test",
        prompt="Tell",
        preset="Story",
        backend="b",
        state=AnalysisState.COMPLETED,
        story=story.text,
        structured=story.to_dict(),
        total_tokens=10,
    )
    item = Item(id=f"i{n}", batch_id="b1", display_name=name, source_path=source, video_id=video.id, analysis_id=f"a{n}")
    return row_of(item, analysis, video)


@pytest.fixture
def rows(tmp_path: Path) -> list[Row]:
    local = make_video(tmp_path / "local.mp4", seconds=3.0, seed=3)
    return [story_row(1, str(local)), story_row(2, "https://www.youtube.com/watch?v=abc"), story_row(3, str(tmp_path / "gone.mp4"))]


def test_the_docx_holds_every_title_moment_time_and_a_picture_per_moment_of_a_local_video(rows, tmp_path):
    import docx

    seen: list[tuple[int, int]] = []
    out = tmp_path / "r.docx"
    assert docx_report.build(rows, out, batch_name="Harbour batch", progress=lambda a, b: seen.append((a, b))) == 3
    document = docx.Document(str(out))
    text = "\n".join(p.text for p in document.paragraphs)
    assert "Harbour batch" in text and "gemini-test" in text
    for n in (1, 2, 3):
        assert f"Title {n}" in text and "00:00  Start of" in text and f"00:01  Middle of {n} **bold**" in text
    assert "Second <b>paragraph</b> of 1." in text  # untrusted text stays text
    assert len(document.inline_shapes) == 2  # the local video's two moments; the others get placeholders
    assert "the video is a link" in text and "the source file is gone" in text
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_the_pdf_opens_with_the_same_titles(rows, tmp_path):
    from pypdf import PdfReader

    out = tmp_path / "r.pdf"
    pdf_report.build(rows, out, batch_name="Harbour batch")
    reader = PdfReader(str(out))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Harbour batch" in text
    for n in (1, 2, 3):
        assert f"Title {n}" in text
    assert sum(len(page.images) for page in reader.pages) == 2


def test_srt_and_vtt_parse_with_one_cue_per_moment_named_after_the_video(rows, tmp_path):
    import srt
    import webvtt

    videos = [(r.name, Story.from_dict(r.analysis.structured).moments, 3.0) for r in rows]
    videos.append(("../../evil:name?.mov", [Moment(1.0, "x")], None))
    srts = subtitles.write_dir(videos, tmp_path / "srt", "srt")
    vtts = subtitles.write_dir(videos, tmp_path / "vtt", "vtt")
    assert [p.name for p in srts] == ["video-1.srt", "video-2.srt", "video-3.srt", "evil_name.srt"]
    assert all(p.parent == tmp_path / "srt" for p in srts)
    for path in srts[:3]:
        assert len(list(srt.parse(path.read_text()))) == 2
    for path in vtts[:3]:
        assert len(webvtt.read(str(path)).captions) == 2
    names = zipfile.ZipFile(io.BytesIO(subtitles.zip_bytes(videos))).namelist()
    assert "srt/video-1.srt" in names and "vtt/video-3.vtt" in names


def test_a_newline_in_a_key_moment_does_not_create_a_cue(tmp_path):
    import srt
    import webvtt

    row = story_row(1, "/x", moments=[Moment(1.0, INJECTION), Moment(2.0, "Second")])
    vtt = chapters_vtt(row)
    assert vtt is not None
    path = tmp_path / "c.vtt"
    path.write_text(vtt)
    captions = webvtt.read(str(path)).captions
    assert len(captions) == 2 and "Injected cue" in captions[0].text and "\n" not in captions[0].text
    assert len(list(srt.parse(subtitles.to_srt(row_moments(row), 3.0)))) == 2


def row_moments(row: Row) -> list[Moment]:
    return Story.from_dict(row.analysis.structured).moments


def test_safe_names_are_unique_and_never_leave_the_folder():
    taken: set[str] = set()
    assert subtitles.safe_stem("a/b/../c.mp4", taken) == "c"
    assert subtitles.safe_stem("C.mp4", taken) == "C (2)"
    assert subtitles.safe_stem("...", taken) == "video"


@pytest.mark.slow
def test_the_cli_exports_reports_and_subtitles_of_a_batch(tmp_path):
    import docx

    from .helpers import cli_env, run_cli

    env = cli_env(tmp_path / "data")
    video = make_video(tmp_path / "in" / "harbour.mp4", seconds=4.0, seed=5)
    assert run_cli(["process", str(video), "--preset", "Story", "--batch-name", "Harbour"], env).returncode == 0

    out = run_cli(
        [
            "export",
            "--batch",
            "Harbour",
            "--docx",
            str(tmp_path / "r.docx"),
            "--pdf",
            str(tmp_path / "r.pdf"),
            "--srt",
            str(tmp_path / "srt"),
            "--vtt",
            str(tmp_path / "vtt"),
        ],
        env,
    )

    assert out.returncode == 0, out.stderr
    assert "r.docx: 1/1 video(s)" in out.stderr and "Wrote 1 SRT file(s)" in out.stdout
    document = docx.Document(str(tmp_path / "r.docx"))
    assert document.paragraphs[0].text == "Harbour" and len(document.inline_shapes) >= 1
    assert (tmp_path / "srt" / "harbour.srt").is_file() and (tmp_path / "vtt" / "harbour.vtt").is_file()
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
