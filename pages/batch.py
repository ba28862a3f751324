"""Batch: add videos, check them, start, and watch each one become a story.

The board re-reads the store on a timer (1.5 s with work in flight, else 5 s), so
another tab, the CLI or a retry elsewhere shows up here without a reload; when work
starts or ends the whole page reruns once to change the pace. The tab's title follows
the batch, and its end is announced (storyteller_ui.notify).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from storyteller_core.commands import Ask
from storyteller_core.intake.candidates import Candidate, expand, inspect_path, inspect_stream, inspect_url, unchecked
from storyteller_core.settings import PROMPT_PRESETS, estimate_cost, estimate_tokens
from storyteller_core.views.board import FILTERS, LIFE_ORDER, Row, Totals, batch_labels, batch_rows, kept_totals, page_rows, with_videos
from storyteller_core.views.export import stories_markdown
from storyteller_ui import notify
from storyteller_ui.app_engine import get_engine
from storyteller_ui.deliverables_view import deliverables
from storyteller_ui.uploader import render_uploader
from storyteller_ui.view import ask_again, duration, model_label, money, page_style, plain, removed_rows, row_view, size, video_options_form

PAGE_SIZE = 25
CHECK_AT_ONCE = 20  # a larger selection is checked after Start, so the page never waits on hashing it
LIST_AT_ONCE = 50  # a longer checked list is shown as a table, not one row of widgets per file
engine = get_engine()
commands = engine.commands
state = st.session_state
state.setdefault("uploader_key", 0)
page_style()

st.title(":material/movie: New batch")
upload_tab, path_tab, page_tab = st.tabs(["Drop video files", "Local folder, file path or YouTube link", "Simple upload (small files)"])
with upload_tab:
    render_uploader(engine)  # streams straight to disk: a 2 GB drop costs the server a few MB of memory
with page_tab:  # Streamlit's own uploader holds each file in server memory until it is saved: small files only
    files = st.file_uploader(
        "Drop small videos here (up to 200 MB each is kind to the computer)",
        accept_multiple_files=True,
        key=f"uploader-{state.uploader_key}",
    )
    if files:
        with st.spinner(f"Saving and checking {len(files)} file(s)..."):
            commands.add_pending(inspect_stream(uploaded, uploaded.name, engine.settings) for uploaded in files)
        state.uploader_key += 1  # a new widget frees the uploaded bytes from the server's memory
        st.rerun()
with path_tab:
    with st.form("add-path", border=False, enter_to_submit=True):  # Enter in the field adds, like the button
        raw_path = st.text_input(
            "Path to a video file or a folder of videos, or a public YouTube link",
            placeholder="/home/me/footage  or  https://www.youtube.com/watch?v=...",
        )
        add = st.form_submit_button("Add from path")
    if add:  # what is wrong with the path is said here, by the field
        target = raw_path.strip()
        link = target if "://" in target or target.startswith(("youtube.com", "www.youtube.com", "youtu.be")) else None
        where = Path(target).expanduser()
        try:
            there = bool(target) and where.exists()
        except (OSError, ValueError):  # a name the system cannot even look up (a NUL byte, too long)
            there = False
        found, skipped = expand([where]) if there and not link else ([], [])
        if link:
            commands.add_pending([inspect_url(link)])
        elif not target:
            st.warning("Type the path of a video file or a folder first.")
        elif not there:
            st.warning(
                f"Nothing is at {plain(target)}. Check the path (copy it from your file manager) and add it again.",
                icon=":material/folder_off:",
            )
        elif not found:
            st.warning(f"No video files in {plain(target)}.")
        if len(found) > CHECK_AT_ONCE:  # listed in a moment; each file is checked after Start, in the background
            commands.add_pending(unchecked(p) for p in found)
        else:
            with st.spinner(f"Checking {len(found)} file(s)..."):
                commands.add_pending(inspect_path(p, engine.settings) for p in found)
        for item in skipped:
            st.caption(plain(item.reason))

pending = commands.pending()
accepted = [c for c in pending if c.ok]
refused = [c for c in pending if not c.ok]
# With nothing to start (nothing listed, or only files not added), the question's settings fold away so the board is
# on the first screen.
setup = st.container() if accepted else st.expander("Prompt, model and priority for the next batch", icon=":material/tune:")
with setup:
    preset = st.selectbox("Prompt preset", [*PROMPT_PRESETS, "Custom"], key="new-preset")
    prompt = st.text_area("Prompt", value=PROMPT_PRESETS.get(preset, ""), height=100, key=f"new-prompt-{preset}")
    left, mid, right = st.columns([2, 2, 3])
    model = left.selectbox("Model", engine.catalog.choices(), key="new-model", format_func=model_label)
    priority = mid.radio("Priority", ["high", "normal", "low"], index=1, horizontal=True, key="new-priority")
    batch_name = right.text_input("Batch name", placeholder="date and the first file's name", key="new-name")
    if engine.catalog.warning(model):
        st.warning(plain(engine.catalog.warning(model)), icon=":material/warning:")
    options, tier, problem = video_options_form("new")
    if problem:
        st.error(plain(problem), icon=":material/error:")
ask_preset = preset if preset in PROMPT_PRESETS and prompt == PROMPT_PRESETS[preset] else None


def dismiss_all(refused: list[Candidate]) -> None:
    for c in refused:
        commands.remove_pending(c.source)


def where_from(c: Candidate) -> str:
    """The folder a local file was added from; "" for a dropped file (its copy's folder means nothing) or a link."""
    if c.url or c.path.parent == engine.settings.spool_dir:
        return ""
    return str(c.path.parent)


def length(c: Candidate) -> str:
    return "YouTube" if c.url else duration(c.probe.duration_s if c.probe else None) if c.checked else "checked after Start"


if pending:
    if accepted:
        st.subheader(f"Ready: {len(accepted)} video(s)" + (f", not added: {len(refused)}" if refused else ""))
    start_line = st.container(horizontal=True)  # Start sits above the list, not below 45 rows of it (filled below)
    if len(accepted) > LIST_AT_ONCE:
        st.dataframe(
            pd.DataFrame(
                {
                    "File": [c.display_name for c in accepted],
                    "Folder": [where_from(c) for c in accepted],
                    "Length": [length(c) for c in accepted],
                    "Size": [size(c.size_bytes) for c in accepted],
                }
            ),
            hide_index=True,
            height=240,
        )
    for c in accepted if len(accepted) <= LIST_AT_ONCE else []:
        name_col, facts_col, cost_col, drop_col = st.columns([4, 3, 2, 1], vertical_alignment="center")
        name_col.markdown(plain(c.display_name))
        if where_from(c):
            name_col.caption(plain(where_from(c)))  # two files of the same name are told apart by their folder
        seconds = c.probe.duration_s if c.probe else None
        facts_col.caption(
            f"{length(c)} · {size(c.size_bytes) if not c.url else 'no upload'}"
            + (f" · about {estimate_tokens(seconds, prompt, options):,} tokens" if c.checked else "")
        )
        cost_col.caption(money(estimate_cost(model, seconds, prompt, options, tier), demo=engine.demo) if c.checked else "")
        drop_col.button(
            "",
            key=f"drop-{c.source}",
            icon=":material/close:",
            help="Remove from the list",
            on_click=commands.remove_pending,
            args=(c.source,),
        )
    later = sum(not c.checked for c in accepted)
    checked = [c for c in accepted if c.checked]
    if checked and not engine.demo:
        costs = [estimate_cost(model, c.probe.duration_s if c.probe else None, prompt, options, tier) for c in checked]
        priced = "price unknown for this model" if any(cost is None for cost in costs) else money(sum(c or 0 for c in costs))
        st.caption(
            f"Estimated cost for {'the batch' if not later else f'the {len(checked)} checked videos'} with "
            f"{model_label(model)}: {priced}"
            + (f" ({plain(options.describe())})" if options.describe() else "")
            + {"flex": " at the Flex tier", "batch": " at the Batch tier"}.get(tier, "")
        )
    if later:
        st.caption(
            f"{later:,} file(s) are checked (length, format, cost) after Start, while the batch runs; the page does not wait for them."
        )
    if refused:  # never rows: they stay here, with the reason, until dismissed
        with st.container(border=True, key="not-added"):
            head = st.container(horizontal=True, vertical_alignment="center")
            head.markdown(f"**Not added ({len(refused)})**: these will not be part of the batch.")
            head.button("Dismiss all", key="dismiss-all", icon=":material/clear_all:", on_click=dismiss_all, args=(refused,))
            for c in refused:
                line = st.container(horizontal=True, vertical_alignment="center")
                line.warning(plain(c.error_message), icon=":material/block:")
                line.button(
                    "",
                    key=f"dismiss-{c.source}",
                    icon=":material/close:",
                    help="Dismiss",
                    on_click=commands.remove_pending,
                    args=(c.source,),
                )
    start = clear = start_line
    if accepted and start.button(f"Start batch ({len(accepted)} video(s))", type="primary", disabled=not prompt.strip() or bool(problem)):
        started = commands.start_pending(Ask(prompt, model, ask_preset, priority, options, tier), batch_name=batch_name)
        if started:
            state.batch_id = started.id
            state.picked_batch = False  # this tab shows the batch it started: the newest
        st.rerun()
    if accepted:
        clear.button("Clear list", on_click=commands.clear_pending)

batches = engine.store.batch_ids()
if not batches:
    st.caption("No batches yet: drop some videos above.")

    @st.fragment(run_every=3)
    def first_batch() -> None:
        if engine.store.batch_ids():  # started in another tab or the CLI: show it here
            st.rerun()

    first_batch()
    st.stop()
linked = st.query_params.get("batch")  # a link from the webhook message opens its batch
if linked in batches and "batch_id" not in state:
    state.batch_id = linked
    state.picked_batch = True
names = batch_labels(engine.store, batches)
st.subheader(":material/view_list: Batches")
# A tab follows the newest batch (started here, in another tab or the CLI) until the person picks one. The picker's
# key names the batch list, so a new batch makes a new picker that starts at `shown` (a widget keeps its own value
# when only its options change).
following = not state.get("picked_batch") or state.get("batch_id") not in batches
shown = batches[0] if following else state.batch_id  # batches[0] is the newest: ids start with their creation time
batch_id = st.selectbox(
    "Batch",
    batches,
    index=batches.index(shown),
    key=f"board-batch-{batches[0]}-{len(batches)}",
    format_func=lambda b: names[b],
    label_visibility="collapsed",
)
if batch_id != shown:
    state.picked_batch = True
state.batch_id = batch_id
opened = kept_totals(engine.store, batch_id)
opened_in_flight = opened.in_flight > 0

# The batch's actions sit at the top, out of the timed board: what they read is read on a full rerun only.
actions = st.container(horizontal=True, key="batch-actions")
again = actions.popover(
    f"Analyze the whole batch again ({opened.rows:,} video(s))",
    icon=":material/forum:",
    key=f"again-batch-open-{batch_id}",
    on_change="rerun",
)
if again.open:
    with again:
        ask_again(engine, engine.store.item_ids(batch_id), key=f"again-batch-{batch_id}")
reports = actions.popover("Reports and subtitles", icon=":material/description:", key=f"reports-open-{batch_id}", on_change="rerun")
if reports.open:
    with reports:
        deliverables(lambda: batch_rows(engine.store, batch_id), key=f"board-{batch_id}", batch_name=names[batch_id])


def versus_estimate(t: Totals) -> str | None:
    """Actual cost against the estimate of the same analyses, e.g. "+12 % vs estimate"."""
    if engine.demo or t.cost_usd is None or not t.estimated_done_usd:
        return None
    return f"{(t.cost_usd - t.estimated_done_usd) / t.estimated_done_usd:+.0%} vs estimate"


@st.fragment(run_every=1.5 if opened_in_flight else 5)
def board() -> None:
    t = kept_totals(engine.store, batch_id)  # kept counts and sums: no row is read for them
    if (t.in_flight > 0) != opened_in_flight or engine.store.batch_ids() != batches:
        st.rerun()  # work started or ended, or a batch came or went (here, in another tab or the CLI)
    notify.watch(engine, batch_id, names[batch_id], [], t)
    figures = st.container(horizontal=True, gap="large")  # wraps on a narrow window instead of cutting figures
    figures.metric("Done", f"{t.done} / {t.rows}", width="content")
    figures.metric("Failed", t.failed, width="content")
    figures.metric("Cancelled", t.cancelled, width="content")
    figures.metric("In flight", t.in_flight, width="content")
    figures.metric("Elapsed", duration(t.elapsed_s), width="content")
    figures.metric(
        "Cost",
        money(t.cost_usd, demo=engine.demo),
        delta=versus_estimate(t),
        delta_color="off",
        width="content",
        help=f"{t.tokens:,} tokens. Estimated before the start: {money(t.estimated_cost_usd, demo=engine.demo)}"
        " for the whole batch; the change shown compares the analyses that have finished with "
        "their own estimate.",
    )

    controls = st.container(horizontal=True, vertical_alignment="bottom")  # wraps on a narrow window
    text = controls.text_input("Search", placeholder="file name or story", key="board-search", width=220).lower()
    shown = controls.segmented_control("Show", list(FILTERS), default="All", key="board-filter") or "All"
    order = controls.selectbox("Sort by", ["Added", "Name", "Status"], key="board-sort", width=150)
    # The choice outlives the widget (Streamlit forgets a widget's state on another page).
    compact = controls.toggle(
        "Compact",
        value=state.get("compact-stories", False),
        key="board-compact",
        help="Short story boxes, so more rows fit on a screen",
        on_change=lambda: state.update({"compact-stories": state["board-compact"]}),
    )

    # Rows this tab removed stay in place, faded, until the batch changes: nothing slides under the pointer.
    ghosts = removed_rows(batch_id)
    if text or ghosts:  # a search reads every row's name and story; so does a batch with removed rows in place
        picked = searched_rows(batch_id, text, shown, order, ghosts)
        matching = len(picked)
    else:
        counts = engine.store.status_counts(batch_id)
        statuses = FILTERS[shown]
        matching = sum(counts.values()) if statuses is None else sum(counts[s] for s in statuses)
    pages = max(1, -(-matching // PAGE_SIZE))
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="board-page") if pages > 1 else 1
    if text or ghosts:
        shown_rows = with_videos(engine.store, picked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE])
    else:
        shown_rows, _ = page_rows(engine.store, batch_id, shown, order, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    if not shown_rows:
        st.caption("No rows match." if t.rows else "This batch is empty.")
    for row in shown_rows:
        row_view(engine, row, compact=compact, removed=row.item.id in ghosts)

    if t.done:
        # Built and sent only while open: a thousand stories are about a megabyte on every rerun of the board.
        label = f"All {t.done} stories (copy all)" if t.done > 1 else "The story (copy)"
        everything = st.expander(label, key=f"all-stories-{batch_id}", on_change="rerun")
        if everything.open:
            with everything:
                done = [r for r in batch_rows(engine.store, batch_id) if r.story]
                with st.container(key=f"story-all-{batch_id}"):
                    st.code(stories_markdown(done), language=None, wrap_lines=True)
                st.download_button(
                    "Download all stories (Markdown)",
                    lambda: stories_markdown(done),
                    file_name=f"stories-{batch_id}.md",
                    mime="text/markdown",
                )


def searched_rows(batch_id: str, text: str, shown: str, order: str, ghosts: dict[str, Row]) -> list[Row]:
    """Every row of the batch that matches the search and the filter, sorted as asked (reads all of them)."""
    rows = batch_rows(engine.store, batch_id, videos_of_done=False)
    all_rows = sorted([*rows, *ghosts.values()], key=lambda r: r.item.created_at) if ghosts else rows
    statuses = FILTERS[shown]
    picked = [
        r for r in all_rows if (statuses is None or r.status in statuses) and (not text or text in f"{r.name}\n{r.story or ''}".lower())
    ]
    if order == "Name":
        picked.sort(key=lambda r: r.name.lower())
    elif order == "Status":
        picked.sort(key=lambda r: LIFE_ORDER.index(r.status))
    return picked


board()
