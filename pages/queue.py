"""Queue: what runs now, what waits, and where the time goes."""

from __future__ import annotations

import streamlit as st

from storyteller_core.analysis import Analysis
from storyteller_core.board import batch_rows
from storyteller_core.reports import recent_failures, time_per_status
from storyteller_core.spool import size_bytes
from storyteller_core.video import Video
from storyteller_ui.engine import get_engine
from storyteller_ui.view import plain, size

engine = get_engine()
st.title(":material/queue: Queue")


@st.fragment(run_every=2)
def live() -> None:
    snap = engine.snapshot()
    cols = st.columns(5)
    cols[0].metric("Working on", f"{len(snap['running'])} / {snap['workers']}")
    cols[1].metric("Uploads", f"{snap['uploads_running']} / {snap['max_uploads']}")
    cols[2].metric("Waiting", len(snap["queued"]))
    cols[3].metric("Status checks", f"≤ {snap['polls_per_second']:g} per second")
    cols[4].metric("Uploaded copies kept", size(size_bytes(engine.settings.spool_dir)))
    if snap["halted"]:
        st.warning(plain(snap["halted"]), icon=":material/pause_circle:")
        st.button("Resume now", on_click=engine.resume, icon=":material/play_arrow:")
    if not snap["healthy"]:
        st.error("A background worker stopped. Restart the app; the log in the data folder says why.")
    work = []
    for task in snap["running"] + snap["queued"]:
        kind, record_id = task.split(":", 1)
        record = engine.store.get(Video if kind == "video" else Analysis, record_id)
        if record is None:
            continue
        video = record if isinstance(record, Video) else engine.store.get(Video, record.video_id)
        work.append({"video": video.display_name if video else "", "what": "upload and processing" if kind == "video"
                     else "writing the story", "now": "working" if task in snap["running"] else "waiting"})
    st.dataframe(work, hide_index=True, width="stretch")


live()
rows = batch_rows(engine.store)
st.subheader("Recent problems")
failures = recent_failures(rows)
if not failures:
    st.caption("None.")
for row in failures:
    st.error(f"**{plain(row.name)}**: {plain(row.error)}", icon=":material/error:")

st.subheader("Time per stage (finished videos, seconds)")
stats = time_per_status(engine.store, rows)
if stats is not None:
    st.bar_chart(stats[["median", "p90"]], stack=False, sort=False, x_label="stage, in the order of a video's life",
                 y_label="seconds")
    st.dataframe(stats.round(2), width="stretch")
else:
    st.caption("No finished videos yet.")
