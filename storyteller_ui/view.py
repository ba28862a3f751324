"""Rendering pieces shared by the pages: plain text for untrusted strings, a row, the banners, formats.

Anything a file name, a path, a server or a model controls goes through
``plain()`` before it reaches Markdown, or is shown in a widget that renders
text as text (st.code, st.dataframe, st.text).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from storyteller_core import Engine
from storyteller_core.commands import Ask
from storyteller_core.gemini import reach
from storyteller_core.gemini.estimates import Estimate, cache_saving_usd
from storyteller_core.records.options import PROCESSING_MODES, RESOLUTIONS, VideoOptions
from storyteller_core.records.story import Story
from storyteller_core.records.timecode import seconds_of, timestamp
from storyteller_core.sanitize import plain_text
from storyteller_core.settings import PROMPT_PRESETS, TIERS, model_info
from storyteller_core.views.board import Row, Status
from storyteller_core.views.export import copy_text, story_of
from storyteller_core.views.rows import waiting_for
from storyteller_ui.story_view import plain, safe_markdown

PLAYABLE_BYTES = 300 * 1024**2  # st.video reads a local file into the server's memory: larger ones are not played here

STATUS_ICON = {
    Status.WAITING: ":material/schedule:",
    Status.UPLOADING: ":material/upload:",
    Status.PROCESSING: ":material/hourglass_top:",
    Status.READY: ":material/task_alt:",
    Status.WRITING: ":material/edit_note:",
    Status.DONE: ":material/check_circle:",
    Status.FAILED: ":material/error:",
    Status.CANCELLED: ":material/block:",
}


def banners(engine: Engine) -> None:
    if engine.demo:
        st.info(
            "**Demo mode: no API key; stories are emulator output.** Add a Gemini API key on the Settings page to get real stories.",
            icon=":material/science:",
        )
    unreachable = reach.banner()
    if unreachable:
        st.warning(plain(unreachable), icon=":material/wifi_off:")
    if engine.gate.message:
        st.error(plain(engine.gate.message), icon=":material/key_off:")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return ""


def money(usd: float | None, *, demo: bool = False) -> str:
    if demo:
        return "demo"  # emulator answers cost nothing: never show a dollar figure as if it were real
    return "–" if usd is None else f"${usd:.4f}"


STYLE = """<style>
/* A story's copy button shows without hovering (Streamlit shows it on hover only). */
[class*="st-key-story-"] [data-testid="stCode"] > div:has([data-testid="stElementToolbarButton"]) {
  opacity: 1 !important; visibility: visible !important; transition: none !important;
}
[class*="st-key-story-"] [data-testid="stCode"] pre { padding-right: 3rem; }
/* A removed row keeps its place, faded, so the rows below don't slide under the pointer. */
[class*="st-key-ghost-"] { opacity: 0.5; }
</style>"""


def page_style() -> None:
    """The app's own static CSS (never text from a file, a server or a person)."""
    st.html(STYLE)


def own_thumbnail(data_dir: Path, stored: str | None) -> Path | None:
    """The thumbnail file to draw, or None: only a file under the data dir's thumbs folder, never a URL.

    st.image fetches a URL in the browser, with the access cookie; a record in a team's Redis may say
    anything, so a path that is a URL, or resolves (symlinks followed) outside our folder, is not drawn.
    """
    if not stored or "://" in stored or stored.startswith(("//", "data:")):
        return None
    folder = (data_dir / "thumbs").resolve()
    try:
        path = Path(stored).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_relative_to(folder) and path.is_file() else None


def row_view(engine: Engine, row: Row, *, compact: bool = False, removed: bool = False) -> None:
    """One row: thumbnail, name and status, progress, actions; the story with its copy button when done.

    The actions sit in one right-aligned line whose height does not depend on the
    status, and a ``removed`` row (kept for this visit) is drawn at the same size with
    its actions replaced, so nothing moves under the pointer after a click.
    """
    item = row.item
    with st.container(border=True, key=f"{'ghost' if removed else 'row'}-{item.id}"):
        if compact:
            body, actions = st.columns([7, 5], vertical_alignment="center")
        else:
            thumb, body, actions = st.columns([1, 6, 5], vertical_alignment="center")
            shown = own_thumbnail(engine.settings.data_dir, row.video.thumbnail_path if row.video else None)
            if shown is not None:
                thumb.image(str(shown), width=64)
        waiting = None if removed or row.ended else waiting_for(row, engine.settings)
        facts = [f"{STATUS_ICON[row.status]} {'Removed' if removed else plain(row.label)}"]
        if not row.ended and not removed:
            facts.append(f"{duration(time.time() - row.since)} so far")  # time in stage: work in flight only
        if row.video and row.video.duration_s:
            facts.append(f"{duration(row.video.duration_s)} video")
        if row.analysis:
            facts.append(plain(row.analysis.prompt_label[:60]))
        if item.reused:
            facts.append("earlier answer reused")
        saved = cache_saving_usd(row.analysis) if row.analysis and row.status is Status.DONE else 0.0
        if saved >= 0.0005 and not engine.demo:
            facts.append(f"context cache saved {money(saved)}")
        body.markdown(f"**{plain(row.name)}** · " + " · ".join(facts))
        if not row.ended:
            body.progress(row.progress / 100)
        if waiting:  # asked of another Gemini: left for the app or CLI that has it, never failed here
            body.caption(plain(waiting) + ". Retry asks the Gemini this app uses instead.")
        if row.status is Status.FAILED:
            body.error(plain(row.error or "Failed"), icon=":material/warning:")
        line = actions.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center")
        if removed:
            line.button("Removed", key=f"removed-{item.id}", icon=":material/delete:", disabled=True)
        else:
            _actions(engine, row, line, waiting=bool(waiting))
        story = story_of(row)
        if story:
            markdown = copy_text(row) if story.moments or story.title else plain_text(story.text)
            if not compact:  # read as formatted text; the box below copies the Markdown in one click
                st.markdown(safe_markdown(markdown))
            with st.container(key=f"story-{item.id}"):  # copy gives clean Markdown with the timestamps
                st.code(markdown, language=None, wrap_lines=True, height=90)
            if not compact:
                st.caption("The box above is the story as Markdown: its button copies it.")
            if story.moments and not compact and not removed:
                moments_view(row, story)
            if story.note:
                st.caption(plain(story.note))
        elif row.status is Status.WRITING and row.analysis and row.analysis.partial_story:
            partial = row.analysis.partial_story
            if row.analysis.video_options.structured:
                st.caption(f"Gemini is writing: {len(partial):,} characters so far")
            else:
                st.text(plain_text(partial[-2000:]))  # the story as it is written, shown as text


def moments_view(row: Row, story: Story) -> None:
    """Each key moment is a button that plays the video from that second."""
    key = f"seek-{row.item.id}"
    if story.dropped_moments:
        st.caption(f"{story.dropped_moments} moment(s) Gemini placed outside the video were left out.")
    line = st.container(horizontal=True, key=f"moments-{row.item.id}")
    for n, moment in enumerate(story.moments):
        line.button(
            plain(f"{moment.time} {moment.description[:60]}"),
            key=f"{key}-{n}",
            icon=":material/play_arrow:",
            on_click=st.session_state.__setitem__,
            args=(key, moment.seconds),
        )
    seek = st.session_state.get(key)
    if seek is not None:
        line.button(
            "Close the player",
            key=f"{key}-close",
            icon=":material/close:",
            type="tertiary",
            on_click=st.session_state.pop,
            args=(key, None),
        )
    source = _playable(row)
    if seek is not None and source:
        st.video(source, start_time=int(seek), autoplay=True, muted=True)
    elif seek is not None:
        st.caption(
            "This video cannot be played here (its copy was not kept, or it is too large): open it in your "
            f"player at {plain(timestamp(seek))}."
        )


def _playable(row: Row) -> str | None:
    video = row.video
    if video is None:
        return None
    if video.url:
        return video.url  # st.video plays YouTube links from the given second
    for source in video.sources:
        path = Path(source)
        if path.is_file() and path.stat().st_size <= PLAYABLE_BYTES:
            return str(path)
    return None


def model_label(name: str) -> str:
    return model_info(name).label  # a model not in prices.json: "NAME (price estimated from FAMILY)"


TIER_LABELS = {
    "standard": "standard",
    "flex": "Flex: half price, answers take minutes",
    "batch": "Batch (about half price, results within hours)",
}


def video_options_form(key: str) -> tuple[VideoOptions, str, str | None]:
    """Part of the video, frames per second, resolution and tier; (options, tier, a problem to show or None)."""
    with st.expander("Part of the video and cost", icon=":material/content_cut:"):
        left, mid, right, far = st.columns(4)
        start = left.text_input("Clip from (MM:SS)", key=f"{key}-clip-start", placeholder="start")
        end = mid.text_input("Clip to (MM:SS)", key=f"{key}-clip-end", placeholder="end")
        fps = right.number_input(
            "Frames per second",
            min_value=0.1,
            max_value=24.0,
            value=1.0,
            step=0.5,
            key=f"{key}-fps",
            help="Below 1 for talks, higher for fast action",
        )
        resolution = far.selectbox("Resolution", ["default", *RESOLUTIONS], key=f"{key}-resolution", help="low costs about a third")
        processing = st.selectbox(
            "Video processing (Gemini 3)",
            ["default", *PROCESSING_MODES],
            key=f"{key}-processing",
            index=1 if st.session_state.get("default-processing") == "agentic" else 0,
            help="agentic (preview): far fewer tokens on long videos; a different analysis",
        )
        tier = st.radio(
            "Price",
            TIERS,
            horizontal=True,
            key=f"{key}-tier",
            format_func=TIER_LABELS.get,
            help="Flex and Batch cost about half. Batch sends the videos in one Gemini batch job: stories "
            "arrive within hours (up to 24 h), and a job Gemini cannot run in 48 h fails.",
        )
    try:
        start_s = seconds_of(start) if start.strip() else None
        end_s = seconds_of(end) if end.strip() else None
        if (start.strip() and start_s is None) or (end.strip() and end_s is None):
            raise ValueError("clip times are MM:SS or H:MM:SS")
        options = VideoOptions(
            start_s=start_s,
            end_s=end_s,
            fps=None if fps == 1.0 else float(fps),
            resolution=None if resolution == "default" else resolution,
            processing=None if processing == "default" else processing,
        )
    except ValueError as exc:
        return VideoOptions(), tier, f"Part of the video: {exc}."
    return options, tier, None


def then_nothing(command: Callable[..., object], *args: object) -> None:
    """A widget callback that runs ``command`` and drops what it returns (Streamlit's callbacks return None)."""
    command(*args)


def _actions(engine: Engine, row: Row, line: DeltaGenerator, *, waiting: bool = False) -> None:
    """``waiting``: the row waits for another process's Gemini; Retry asks this one instead."""
    commands, item = engine.commands, row.item
    if item.analysis_id and (row.status in (Status.FAILED, Status.CANCELLED) or waiting):
        line.button("Retry", key=f"retry-{item.id}", on_click=then_nothing, args=(commands.retry, item.id), icon=":material/refresh:")
    elif not row.ended:
        line.button(
            "Cancel", key=f"cancel-{item.id}", on_click=then_nothing, args=(commands.cancel, item.id), icon=":material/stop_circle:"
        )
    if item.video_id:
        asking = line.popover("Ask again", icon=":material/forum:", key=f"again-open-{item.id}", on_change="rerun")
        if asking.open:  # drawn (and priced) only while open: a page of rows would price every row on each rerun
            with asking:
                ask_again(engine, [item.id], key=f"again-{item.id}", beside=True)  # the answer joins this batch
    with line.popover("Remove", icon=":material/delete:"):
        if row.ended:
            st.caption("Remove this row? Its story stays available for reuse if the same question is asked again.")
        else:
            st.caption("Remove this row? The work on it stops.")
        st.button("Remove", key=f"remove-{item.id}", on_click=_remove, args=(engine, row), type="primary")


def _remove(engine: Engine, row: Row) -> None:
    """Remove the row; this tab keeps drawing it, faded, in the same place (see row_view)."""
    st.session_state.setdefault("removed-rows", {})[row.item.id] = row
    engine.commands.remove(row.item.id)


def removed_rows(batch_id: str) -> dict[str, Row]:
    """Rows this tab removed from the batch, kept in place until the batch or the session changes."""
    return {k: r for k, r in st.session_state.get("removed-rows", {}).items() if r.item.batch_id == batch_id}


def again_caption(estimate: Estimate, *, demo: bool) -> str:
    """ "3 videos · about $0.41 (the context cache saves $0.90)" """
    videos = f"{estimate.videos:,} video{'s' if estimate.videos != 1 else ''}"
    if demo:
        return f"{videos} · demo mode: nothing is charged"
    if estimate.usd is None:
        return f"{videos} · price unknown for this model"
    saving = f" (the context cache saves {money(estimate.saving_usd)})" if estimate.saving_usd >= 0.0005 else ""
    return f"{videos} · about {money(estimate.usd)}{saving}"


def ask_again(engine: Engine, item_ids: list[str], *, key: str, beside: bool = False) -> None:
    """Another question of the same videos: their Gemini files are reused while ACTIVE (no upload, no wait)."""
    preset = st.selectbox("Prompt preset", [*PROMPT_PRESETS, "Custom"], key=f"{key}-preset")
    prompt = st.text_area("Prompt", value=PROMPT_PRESETS.get(preset, ""), key=f"{key}-prompt-{preset}", height=90)
    model = st.selectbox("Model", engine.catalog.choices(), key=f"{key}-model", format_func=model_label)
    options, tier, problem = video_options_form(key)
    if problem:
        st.error(plain(problem), icon=":material/error:")
    named = preset if PROMPT_PRESETS.get(preset) == prompt else None
    ask = Ask(prompt, model, named, options=options, tier=tier) if prompt.strip() and not problem else None
    if ask:
        st.caption(again_caption(engine.commands.again_estimate(item_ids, ask), demo=engine.demo))
    if st.button("Analyze again", key=f"{key}-go", type="primary", disabled=ask is None):
        items = engine.commands.analyze_again(item_ids, ask, beside=beside) if ask else []
        if items:
            st.session_state.batch_id = items[0].batch_id
            st.session_state.picked_batch = False  # the Batch page shows the newest batch: this one
        st.switch_page("pages/batch.py")
