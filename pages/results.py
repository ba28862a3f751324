"""Results: every job of every batch, filtered, with a CSV export."""

from __future__ import annotations

import streamlit as st

from storyteller_core import State
from storyteller_core.export import jobs_frame, to_csv_bytes
from storyteller_ui.engine import get_engine

engine = get_engine()
st.title("📋 Results")
jobs = engine.store.jobs()
if not jobs:
    st.caption("No videos yet. Start a batch on the Batch page.")
    st.stop()

left, mid, right = st.columns(3)
batches = left.multiselect("Batch", engine.store.batch_ids())
states = mid.multiselect("Status", [s.value for s in State])
text = right.text_input("Search file names and stories")
picked = [
    j for j in jobs
    if (not batches or j.batch_id in batches) and (not states or j.state.value in states)
    and (not text or text.lower() in f"{j.display_name}\n{j.story or ''}\n{j.error_message or ''}".lower())
]

frame = jobs_frame(picked)
frame.insert(2, "progress", [j.progress for j in picked])
st.dataframe(
    frame, hide_index=True, width="stretch",
    column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%d%%"),
        "status": st.column_config.TextColumn("status"),
        "story": st.column_config.TextColumn("story", width="large"),
        "total_tokens": st.column_config.NumberColumn("tokens", format="%d"),
        "cost_usd": st.column_config.NumberColumn("cost (USD)", format="$%.4f"),
    },
)
st.download_button(f"Download CSV ({len(picked)} row(s))", to_csv_bytes(picked), file_name="video-stories.csv",
                   mime="text/csv", type="primary")
st.caption("The CSV is UTF-8 with a byte order mark, so Excel shows accents correctly.")
