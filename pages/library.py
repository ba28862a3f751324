"""Library: search every story, key moment, person, place and tag (each hit plays its video from its time), and
build one table from the videos of a batch (the analyst's fields, one answer per video, filters, summaries, exports).

Thin: storyteller_core.collection.search and .table do the work; every text from a file name or a model is shown
as text (plain() before Markdown, or a dataframe cell).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from storyteller_core.collection.search import search_library
from storyteller_core.collection.table import TYPES, Field, Table, ask_table, build_table, fields_of
from storyteller_core.records.timecode import timestamp
from storyteller_core.records.video import Video
from storyteller_core.views.board import batch_labels
from storyteller_ui.app_engine import get_engine
from storyteller_ui.view import PLAYABLE_BYTES, model_label, money, plain

engine = get_engine()
st.title(":material/search: Library")
SEEK = "library-seek"  # (video sha256, second) the last hit pressed
TABLE = "library-table"  # {"batch", "fields", "model"} of the table being shown
KIND_LABELS = {
    "story": "story",
    "title": "title",
    "moment": "key moment",
    "person": "person",
    "place": "place",
    "tag": "tag",
    "table": "table answer",
    "answer": "collection answer (checked)",
}


def player() -> None:
    """The video of the last hit pressed, from its second (served from its local copy, or its web link)."""
    seek = st.session_state.get(SEEK)
    if not seek:
        return
    sha, at = seek
    video = engine.store.get(Video, sha)
    source = (
        video.url
        if video and video.url
        else next((s for s in (video.sources if video else []) if Path(s).is_file() and Path(s).stat().st_size <= PLAYABLE_BYTES), None)
    )
    if source:
        st.video(source, start_time=int(at), autoplay=True, muted=True)
    else:
        st.caption(
            "This video cannot be played here (its copy was not kept, or it is too large): open it in your "
            f"player at {plain(timestamp(at))}."
        )


def search_section() -> None:
    terms = st.text_input(
        "Search the library",
        key="library-terms",
        placeholder="e.g. crowd at night, pricing, Marta",
        help="Every word is searched as a word (no query syntax); stories, key moments, people, places and tags of every finished video.",
    )
    if not terms.strip():
        return
    try:
        hits = search_library(engine.store, engine.settings.data_dir, terms, limit=50)
    except sqlite3.Error:  # locked for a long first build by another search, or a damaged index file
        logging.getLogger(__name__).exception("search failed")
        st.warning(
            "The search index is busy (another search is building it for a large library) or could not be "
            "read. Search again in a minute; if it keeps failing, delete the folder 'search' in the data "
            "folder: it is rebuilt from the stories.",
            icon=":material/hourglass_top:",
        )
        return
    if not hits:
        st.caption("Nothing in the library matches these words.")
        return
    if hits[0].match == "any":
        st.caption("No text has all these words; these have some of them.")
    st.caption(f"{len(hits)} hit(s), best first.")
    for n, hit in enumerate(hits):
        line = st.container(horizontal=True, vertical_alignment="center")
        at = hit.start_s or 0.0
        if hit.video_sha256:  # a collection answer's question points at no video
            line.button(
                timestamp(at),
                key=f"library-hit-{n}",
                icon=":material/play_arrow:",
                on_click=st.session_state.__setitem__,
                args=(SEEK, (hit.video_sha256, at)),
            )
        where = f"**{plain(hit.file_name)}** · " if hit.file_name else ""
        line.markdown(f"{where}{plain(KIND_LABELS.get(hit.kind, hit.kind))} · {plain(hit.snippet)}")
    player()


def table_section() -> None:
    batch_ids = engine.store.batch_ids()
    if not batch_ids:
        st.caption("No batches yet. Start one on the Batch page, then build a table from its videos here.")
        return
    names = batch_labels(engine.store, batch_ids)
    left, right = st.columns(2)
    batch_id = left.selectbox("Batch", batch_ids, format_func=lambda b: names[b], key="library-batch")
    model = right.selectbox("Model", engine.catalog.choices(), key="library-model", format_func=model_label)
    st.caption("One column per field. Types: " + ", ".join(TYPES) + ". The instruction says what to look for.")
    edited = st.data_editor(
        pd.DataFrame(
            [
                {"name": "summary", "type": "text", "instruction": "one sentence"},
                {"name": "people", "type": "number", "instruction": "how many different people appear"},
            ]
        ),
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        key="library-fields",
        column_config={
            "name": st.column_config.TextColumn("Field", required=True, max_chars=60),
            "type": st.column_config.SelectboxColumn("Type", options=list(TYPES), required=True),
            "instruction": st.column_config.TextColumn("Instruction", max_chars=500),
        },
    )
    if st.button("Build the table", type="primary", icon=":material/table_chart:", key="library-build"):
        try:
            fields = fields_of(
                Field(str(r["name"] or ""), str(r["type"] or ""), str(r["instruction"] or ""))
                for r in edited.to_dict("records")
                if str(r.get("name") or "").strip()
            )
            asked = ask_table(engine.commands, batch_id, fields, model)
        except ValueError as exc:
            st.error(plain(f"{exc}."), icon=":material/error:")
            return
        st.session_state[TABLE] = {"batch": batch_id, "model": model, "fields": [(f.name, f.type, f.instruction) for f in fields]}
        estimate = money(asked.estimated_usd, demo=engine.demo) if asked.batch_id else "nothing to pay"
        st.toast(
            f"{asked.videos} video(s): {asked.already} answered before (reused), {asked.videos - asked.already} asked now ({estimate})."
        )
    shown = st.session_state.get(TABLE)
    if shown:
        fields = fields_of(Field(*f) for f in shown["fields"])
        live = not build_table(engine.store, shown["batch"], fields, shown["model"], engine.settings.backend).complete
        st.fragment(run_every=2 if live else None)(table_view)(shown, fields, live)  # ticks only while answers come


def table_view(shown: dict[str, Any], fields: list[Field], live: bool) -> None:
    table = build_table(engine.store, shown["batch"], fields, shown["model"], engine.settings.backend)
    if live and table.complete:
        st.rerun()  # the last answer came: the whole page again, so the fragment stops ticking
    waiting = sum(row.status == "waiting" for row in table.rows)
    st.caption(
        f"{table.answered} of {len(table.rows)} video(s) answered"
        + (f", {waiting} being asked" if waiting else "")
        + ("" if engine.demo or table.cost_usd is None else f"; the answers cost {money(table.cost_usd)}")
        + "."
    )
    text = st.text_input("Only rows containing", key="library-filter").strip().lower()
    picks = {}
    yes_no = [f for f in fields if f.type == "yes/no"]
    if yes_no:
        line = st.container(horizontal=True)
        for f in yes_no:
            picks[f.name] = line.segmented_control(plain(f.name), ["yes", "no"], key=f"library-yn-{f.key}")
    rows = [
        row
        for row in table.rows
        if (not text or text in " ".join(map(str, [row.file_name, *row.values.values()])).lower())
        and all(pick is None or row.values.get(name) is (pick == "yes") for name, pick in picks.items())
    ]
    picked = Table(fields, rows, table.cost_usd)
    st.dataframe(
        picked.frame(),
        hide_index=True,
        width="stretch",
        column_config={"video_sha256": st.column_config.TextColumn("Video fingerprint", width="small")},
    )
    summaries = picked.summaries()
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "field": name,
                    "type": s["type"],
                    "with a value": f"{s['count']} of {s['rows']}",
                    "mean": s.get("mean"),
                    "share of yes": s.get("share_yes"),
                    "most common": ", ".join(f"{v} ({n})" for v, n in s.get("top") or []),
                }
                for name, s in summaries.items()
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={"share of yes": st.column_config.NumberColumn(format="percent")},
    )
    problems = [f"{row.file_name}: {p}" for row in rows for p in row.problems]
    if problems:
        with st.expander(f"{len(problems)} value(s) left empty"):
            for problem in problems[:200]:
                st.text(problem)
    line = st.container(horizontal=True)
    line.download_button(
        f"Download CSV ({len(rows)} row(s))",
        picked.csv_bytes(),
        file_name="video-table.csv",
        mime="text/csv",
        type="primary",
        icon=":material/download:",
        key="library-csv",
    )
    line.download_button(
        "JSON (with summaries)",
        picked.json_bytes(),
        file_name="video-table.json",
        mime="application/json",
        icon=":material/data_object:",
        key="library-json",
    )


search_tab, table_tab = st.tabs(["Search", "One table from many videos"])
with search_tab:
    search_section()
with table_tab:
    table_section()
