"""Results: every row of every batch, filtered, with a CSV export."""

from __future__ import annotations

import streamlit as st

from storyteller_core.batch import Batch
from storyteller_core.board import Status, batch_rows
from storyteller_core.export import rows_frame, to_csv_bytes
from storyteller_ui.engine import get_engine

engine = get_engine()
st.title(":material/table_view: Results")
if not engine.store.item_ids():
    st.caption("No videos yet. Start a batch on the Batch page.")
    st.stop()

batch_ids = engine.store.batch_ids()
names = {b: (engine.store.get(Batch, b) or Batch(id=b, name=b)).name for b in batch_ids}
left, mid, right = st.columns(3)
batches = left.multiselect("Batch", batch_ids, format_func=lambda b: names[b])
statuses = mid.multiselect("Status", [s.value for s in Status])
text = right.text_input("Search file names, prompts and stories").lower()


@st.fragment(run_every=3)
def table() -> None:
    rows = batch_rows(engine.store)
    picked = [
        r for r in rows
        if (not batches or r.item.batch_id in batches) and (not statuses or r.status.value in statuses)
        and (not text or text in f"{r.name}\n{r.story or ''}\n{r.error or ''}\n"
                                 f"{r.analysis.prompt_label if r.analysis else ''}".lower())
    ]
    frame = rows_frame(picked)
    frame.insert(2, "progress", [r.progress for r in picked])
    frame.insert(3, "batch", [names.get(r.item.batch_id, r.item.batch_id) for r in picked])
    st.dataframe(
        frame, hide_index=True, width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%d%%"),
            "story": st.column_config.TextColumn("story", width="large"),
            "total_tokens": st.column_config.NumberColumn("tokens", format="%d"),
            "cost_usd": st.column_config.NumberColumn("cost (USD)", format="$%.4f"),
        },
    )
    st.download_button(f"Download CSV ({len(picked)} row(s))", to_csv_bytes(picked), file_name="video-stories.csv",
                       mime="text/csv", type="primary", icon=":material/download:")
    st.caption("The CSV is UTF-8 with a byte order mark, so Excel shows accents correctly; cells that could run "
               "as a formula start with an apostrophe.")


table()
