"""Results: every row of every batch, filtered, with a CSV export; it follows running work live."""

from __future__ import annotations

from typing import Any

import streamlit as st

from storyteller_core.views.board import Row, Status, batch_labels, batch_rows, totals
from storyteller_core.views.export import (
    batch_names,
    chapters_file_name,
    chapters_vtt,
    rows_frame,
    stories_markdown,
    to_csv_bytes,
    to_json_bytes,
)
from storyteller_ui import notify
from storyteller_ui.app_engine import get_engine
from storyteller_ui.deliverables_view import deliverables
from storyteller_ui.view import plain

engine = get_engine()
st.title(":material/table_view: Results")
if not engine.store.item_ids():
    st.caption("No videos yet. Start a batch on the Batch page.")

    @st.fragment(run_every=3)
    def first_rows() -> None:
        if engine.store.item_ids():  # a batch started in another tab or the CLI: show it here
            st.rerun()

    first_rows()
    st.stop()

batch_ids = engine.store.batch_ids()
names = batch_labels(engine.store, batch_ids)
# The batch picker has the page's width and its chips wrap: a batch's name ("2026-12-02 18:37 · harbour.mp4") is
# long, and in a third of the page at 1024 px Streamlit scrolled the one chip so its start was cut off.
batches = st.multiselect("Batch", batch_ids, format_func=lambda b: names[b], placeholder="All batches", key="results-batches", wrap=True)
mid, right = st.columns(2)
statuses = mid.multiselect("Status", [s.value for s in Status], placeholder="Any status", key="results-statuses")
text = right.text_input("Search file names, prompts and stories").lower()
# The CSV's own column names stay as they are (scripts read them); the table shows them in words.
LABELS = {
    "file_name": "File",
    "status": "Status",
    "prompt": "Prompt",
    "model": "Model",
    "title": "Title",
    "story": "Story",
    "key_moments": "Key moments",
    "tags": "Tags",
    "error": "Problem",
    "duration_s": "Length (s)",
    "prompt_tokens": "Tokens in",
    "output_tokens": "Tokens out",
    "reused": "Earlier answer reused",
    "batch_id": "Batch id",
    "video_sha256": "Video fingerprint",
    "created_at": "Added",
    "completed_at": "Finished",
}


def pick(rows: list[Row]) -> list[Row]:
    return [
        r
        for r in rows
        if (not batches or r.item.batch_id in batches)
        and (not statuses or r.status.value in statuses)
        and (not text or text in f"{r.name}\n{r.story or ''}\n{r.error or ''}\n{r.analysis.prompt_label if r.analysis else ''}".lower())
    ]


@st.fragment(run_every=2)
def table() -> None:
    if engine.store.batch_ids() != batch_ids:
        st.rerun()  # a batch came or went: refresh the Batch filter's choices
    rows = batch_rows(engine.store)
    notify.running_title(rows)  # the tab's title shows the running batches' progress here too
    picked = pick(rows)
    t = totals(picked)
    st.caption(f"{t.rows} row(s): {t.done} done, {t.failed} failed, {t.cancelled} cancelled, {t.in_flight} in flight.")
    batch_of = batch_names(engine.store, picked)
    frame = rows_frame(picked, batch_of)
    frame["status"] = [r.label for r in picked]  # "Uploading 43 %" on screen; the CSV keeps the plain status
    frame.insert(2, "progress", [r.progress for r in picked])
    frame.insert(3, "batch", [names.get(r.item.batch_id, r.item.batch_id) for r in picked])
    config: dict[str, Any] = {column: st.column_config.Column(label) for column, label in LABELS.items() if column in frame.columns}
    config.update(
        {
            "progress": st.column_config.ProgressColumn("Progress", min_value=0, max_value=100, format="%d%%"),
            "batch": st.column_config.TextColumn("Batch"),
            "story": st.column_config.TextColumn("Story", width="large"),
            "total_tokens": st.column_config.NumberColumn("Tokens", format="%d"),
            "cost_usd": None if engine.demo else st.column_config.NumberColumn("Cost (USD)", format="$%.4f"),
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)
    line = st.container(horizontal=True)
    line.download_button(
        f"Download CSV ({len(picked)} row(s))",
        to_csv_bytes(picked, batch_of),
        file_name="video-stories.csv",
        mime="text/csv",
        type="primary",
        icon=":material/download:",
    )
    line.download_button(
        "JSON (full stories)",
        to_json_bytes(picked, batch_of),
        file_name="video-stories.json",
        mime="application/json",
        icon=":material/data_object:",
    )
    line.download_button(
        "Markdown (one section per video)",
        stories_markdown(picked),
        file_name="video-stories.md",
        mime="text/markdown",
        icon=":material/article:",
    )
    chapters = [(row, chapters_vtt(row)) for row in picked]
    with st.expander("Chapters (WebVTT) of the key moments, per video", icon=":material/subtitles:"):
        found = [(row, vtt) for row, vtt in chapters if vtt]
        if not found:
            st.caption("No story with key moments in this selection.")
        for row, vtt in found:
            st.download_button(
                plain(row.name[:80]),
                vtt or "",
                file_name=chapters_file_name(row),
                mime="text/vtt",
                key=f"vtt-{row.item.id}",
                icon=":material/download:",
            )
    st.caption(
        "The CSV is UTF-8 with a byte order mark, so Excel shows accents correctly; cells that could run "
        "as a formula start with an apostrophe."
    )


table()

# Outside the timed table: a report is built on a click, from the rows the filters pick at that moment.
st.subheader("Reports and subtitles", divider="gray")
only = names[batches[0]] if len(batches) == 1 else None
deliverables(lambda: pick(batch_rows(engine.store)), key="results", selection=repr((batches, statuses, text)), batch_name=only)
st.caption(
    "Word and PDF reports hold each finished story with its key moments' frames, people, places and tags; "
    "the zip holds one SRT and one WebVTT file per video, named after it."
)
