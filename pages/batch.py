"""Batch: add videos, check them, start, and watch each one become a story."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from storyteller_core import State
from storyteller_core.config import MODELS, PROMPT_PRESETS, estimate_cost, estimate_tokens
from storyteller_core.export import stories_markdown
from storyteller_core.intake import expand, inspect_path, inspect_stream
from storyteller_ui.engine import get_engine
from storyteller_ui.view import duration, job_row, money, size

PAGE_SIZE = 25
engine = get_engine()
state = st.session_state
state.setdefault("pending", [])
state.setdefault("uploader_key", 0)

st.title("🎬 New batch")
upload_tab, path_tab = st.tabs(["Drop video files", "Local folder or file path (large files)"])
with upload_tab:
    files = st.file_uploader("Drop videos here (up to 2 GB each)", accept_multiple_files=True,
                             key=f"uploader-{state.uploader_key}")
    if files:
        with st.spinner(f"Saving and checking {len(files)} file(s)..."):
            for uploaded in files:
                state.pending.append(inspect_stream(uploaded, uploaded.name, engine.settings))
        state.uploader_key += 1  # a new widget frees the uploaded bytes from the server's memory
        st.rerun()
with path_tab:
    raw_path = st.text_input("Path to a video file or a folder of videos", placeholder="/home/me/footage")
    # Always enabled: a text input commits only on Enter or blur, so a disabled button would eat the click.
    if st.button("Add from path"):
        target = raw_path.strip()
        found, skipped = expand([Path(target).expanduser()]) if target else ([], [])
        if not target:
            st.warning("Type the path of a video file or a folder first.")
        elif not found:
            st.warning(f"No video files found at {target}.")
        with st.spinner(f"Checking {len(found)} file(s)..."):
            state.pending.extend(inspect_path(p, engine.settings) for p in found)
        for item in skipped:
            st.caption(item.reason)

preset = st.selectbox("Prompt preset", list(PROMPT_PRESETS))
prompt = st.text_area("Prompt", value=PROMPT_PRESETS[preset], height=100)
left, right = st.columns(2)
model = left.selectbox("Model", list(MODELS), index=list(MODELS).index(engine.settings.model)
                       if engine.settings.model in MODELS else 0, format_func=lambda m: MODELS[m].label)
priority = right.radio("Priority", ["high", "normal", "low"], index=1, horizontal=True)

accepted = [c for c in state.pending if c.ok]
refused = [c for c in state.pending if not c.ok]
if state.pending:
    st.subheader(f"Ready: {len(accepted)} video(s)" + (f", refused: {len(refused)}" if refused else ""))
    if accepted:
        costs = [estimate_cost(model, c.probe.duration_s, prompt) for c in accepted]
        st.dataframe(
            [{"file": c.display_name, "duration": duration(c.probe.duration_s), "size": size(c.size_bytes),
              "est. tokens": estimate_tokens(c.probe.duration_s, prompt), "est. cost": money(cost)}
             for c, cost in zip(accepted, costs, strict=True)],
            hide_index=True, width="stretch",
        )
        total = sum(cost or 0 for cost in costs)
        st.caption(f"Estimated cost for the batch with {MODELS[model].label}: {money(total)}")
    for c in refused:
        st.warning(c.error_message, icon="🚫")
    start, clear = st.columns([3, 1])
    if start.button(f"Start batch ({len(accepted)} video(s))", type="primary", disabled=not accepted):
        jobs = engine.submit(state.pending, prompt=prompt, model=model, priority=priority)
        state.batch_id = jobs[0].batch_id
        state.pending = []
        st.rerun()
    if clear.button("Clear list"):
        state.pending = []
        st.rerun()

batches = engine.store.batch_ids()
if not batches:
    st.caption("No batches yet: drop some videos above.")
    st.stop()
batch_id = st.selectbox("Batch", batches, index=batches.index(state.batch_id) if state.get("batch_id") in batches else 0)
in_flight = any(j.batch_id == batch_id for j in engine.store.unfinished())


@st.fragment(run_every=1.5 if in_flight else None)
def board() -> None:
    jobs = engine.store.jobs_in_batch(batch_id)
    done = [j for j in jobs if j.state is State.COMPLETED]
    failed = [j for j in jobs if j.state in (State.FAILED, State.CANCELLED)]
    live = [j for j in jobs if not j.state.terminal]
    started = min((j.created_at for j in jobs), default=time.time())
    ended = max((j.completed_at or 0 for j in jobs), default=started) if not live else time.time()
    cols = st.columns(6)
    cols[0].metric("Done", f"{len(done)} / {len(jobs)}")
    cols[1].metric("Failed", len(failed))
    cols[2].metric("In flight", len(live))
    cols[3].metric("Elapsed", duration(ended - started))
    cols[4].metric("Tokens", f"{sum(j.total_tokens or 0 for j in jobs):,}")
    cols[5].metric("Cost", money(sum(j.cost_usd or 0 for j in jobs)))

    shown = st.segmented_control("Show", ["All", "In flight", "Completed", "Failed"], default="All", key="board-filter")
    pick = {"In flight": live, "Completed": done, "Failed": failed}.get(shown or "All", jobs)
    pages = max(1, -(-len(pick) // PAGE_SIZE))
    page = st.number_input("Page", 1, pages, 1, key="board-page") if pages > 1 else 1
    for job in pick[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]:
        job_row(engine, job)

    if done:
        with st.expander(f"All {len(done)} stories (copy all)"):
            text = stories_markdown(done)
            st.code(text, language=None, wrap_lines=True)
            st.download_button("Download all stories (Markdown)", text, file_name=f"stories-{batch_id}.md",
                               mime="text/markdown")
    if in_flight and not live:
        st.rerun()  # everything ended: a full rerun turns the timer off


board()
