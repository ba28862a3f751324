"""Queue: what runs now, what waits, and where the time goes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from storyteller_core import State
from storyteller_ui.engine import get_engine
from storyteller_ui.view import STATE_LABEL

STAGES = [state.value for state in State if not state.terminal]  # in pipeline order
engine = get_engine()
st.title("🚦 Queue")


@st.fragment(run_every=2)
def live() -> None:
    snap = engine.snapshot()
    cols = st.columns(4)
    cols[0].metric("Running", f"{len(snap['running'])} / {snap['workers']}")
    cols[1].metric("Uploads", f"{snap['uploads_running']} / {snap['max_uploads']}")
    cols[2].metric("Queued or waiting", len(snap["queued"]))
    cols[3].metric("Poll rate cap", f"{snap['polls_per_second']:g}/s")
    if not snap["healthy"]:
        st.error("A background worker stopped. Restart the app; the log in the data folder says why.")
    rows = []
    for job_id in snap["running"] + snap["queued"]:
        job = engine.store.get(job_id)
        if job:
            rows.append({"file": job.display_name, "stage": STATE_LABEL[job.state], "priority": job.priority,
                         "running": job_id in snap["running"], "polls": job.poll_attempts})
    st.dataframe(rows, hide_index=True, width="stretch")


live()
jobs = engine.store.jobs()
errors = sorted((j for j in jobs if j.state is State.FAILED), key=lambda j: j.completed_at or 0, reverse=True)[:10]
st.subheader("Recent errors")
if not errors:
    st.caption("None.")
for job in errors:
    st.error(f"**{job.display_name}** ({job.failed_step}): {job.error_message}")

st.subheader("Time per stage (completed videos, seconds)")
spans = []
for job in jobs:
    if job.state is State.COMPLETED and not job.reused_from:
        times = sorted(job.state_entered_at.items(), key=lambda kv: kv[1])
        for (stage, start), (_, end) in zip(times, times[1:], strict=False):
            if stage in STAGES:
                spans.append({"stage": stage, "seconds": end - start})
if spans:
    stats = pd.DataFrame(spans).groupby("stage")["seconds"].describe(percentiles=[0.5, 0.9])
    stats = stats.reindex([s for s in STAGES if s in stats.index])
    st.bar_chart(stats[["50%", "90%"]].rename(columns={"50%": "median", "90%": "p90"}), stack=False)
    st.dataframe(stats.round(2), width="stretch")
else:
    st.caption("No completed videos yet.")
