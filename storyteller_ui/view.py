"""Rendering pieces shared by the pages."""

from __future__ import annotations

import streamlit as st

from storyteller_core import Engine, Job, State

STATE_LABEL = {
    State.CREATED: "⏳ Queued", State.UPLOADING: "⬆️ Uploading", State.UPLOADED: "⬆️ Uploaded",
    State.FILE_PROCESSING: "⚙️ Gemini processing", State.FILE_ACTIVE: "✅ Ready to analyze",
    State.ANALYZING: "🧠 Writing story", State.COMPLETED: "✔️ Completed", State.FAILED: "❌ Failed",
    State.CANCELLED: "⏹️ Cancelled",
}


def banners(engine: Engine) -> None:
    if engine.demo:
        st.info("**Demo mode: no API key; stories are emulator output.** Add a Gemini API key on the Settings page "
                "to get real stories.", icon="🧪")
    if engine.halted:
        st.error(engine.halted, icon="🔑")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024  # type: ignore[assignment]
    return ""


def money(usd: float | None) -> str:
    return "–" if usd is None else f"${usd:.4f}"


def job_row(engine: Engine, job: Job) -> None:
    """One compact row: thumbnail, name and stage, progress, actions; the story when done."""
    with st.container(border=True):
        thumb, body, actions = st.columns([1, 7, 2], vertical_alignment="center")
        if job.thumbnail_path:
            thumb.image(job.thumbnail_path, width=64)
        reused = " · reused earlier result" if job.reused_from else ""
        body.markdown(f"**{job.display_name}** · {STATE_LABEL[job.state]} · {duration(job.in_stage_s)} in stage"
                      f" · {duration(job.duration_s)} video{reused}")
        if not job.state.terminal:
            body.progress(job.progress / 100)
        if job.state is State.FAILED:
            body.error(job.error_message or "Failed", icon="⚠️")
        _actions(engine, job, actions)
        if job.story:
            st.code(job.story, language=None, wrap_lines=True)


def _actions(engine: Engine, job: Job, col) -> None:  # type: ignore[no-untyped-def]
    if job.state in (State.FAILED, State.CANCELLED):
        col.button("Retry", key=f"retry-{job.id}", on_click=engine.retry, args=(job.id,), width="stretch")
    elif not job.state.terminal:
        col.button("Cancel", key=f"cancel-{job.id}", on_click=engine.cancel, args=(job.id,), width="stretch")
    col.button("Remove", key=f"remove-{job.id}", on_click=engine.remove, args=(job.id,), width="stretch")
