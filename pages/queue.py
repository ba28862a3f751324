"""Queue: what runs now, what waits, and where the time goes; live, like the board."""

from __future__ import annotations

import time
from collections import Counter

import streamlit as st

from storyteller_core.deliverables import mail
from storyteller_core.intake.spool import size_bytes
from storyteller_core.views.board import LIFE_ORDER, Status, batch_labels, batch_rows, live_rows, set_aside_note
from storyteller_core.views.reports import recent_failures, time_per_status
from storyteller_core.views.rows import left_for_others
from storyteller_ui import notify
from storyteller_ui.app_engine import get_engine
from storyteller_ui.view import duration, plain, size

engine = get_engine()
st.title(":material/queue: Queue")
CHART_NAMES = {"median": "Typical (median)", "p90": "Slow (9 in 10 take less)"}
HELP = {
    Status.WAITING: "Added, waiting for a free worker",
    Status.READY: "Uploaded and processed by Gemini; waiting for a free worker to write the story",
}
TABLE_NAMES = {"count": "Videos", "median": "Typical (s)", "p90": "9 in 10 take less (s)", "max": "Longest (s)"}


@st.fragment(run_every=2)
def live() -> None:
    snap = engine.snapshot()
    aside = set_aside_note(engine.store)
    if aside:
        st.warning(plain(aside), icon=":material/inventory_2:")
    rows, running = live_rows(engine.store)  # from the kept indexes: in flight and the latest failures only
    if running.in_flight:
        notify.set_title(notify.progress_title(running))
    in_flight = sorted((r for r in rows if not r.ended), key=lambda r: (LIFE_ORDER.index(r.status), r.since))
    count = Counter(r.status for r in in_flight)
    cols = st.columns(5)  # in the order of a video's life
    for col, status in zip(cols, LIFE_ORDER[:5], strict=True):
        col.metric(status.value, count[status], help=HELP.get(status))
    st.caption(
        f"Up to {snap['workers']} videos at once and {snap['max_uploads']} uploads at once. Copies of dropped "
        f"files kept until their stories are written: {size(size_bytes(engine.settings.spool_dir))}."
    )
    if snap["halted"]:
        st.warning(plain(snap["halted"]), icon=":material/pause_circle:")
        st.button("Resume now", on_click=engine.resume, icon=":material/play_arrow:")
    if not snap["healthy"]:
        st.error("A background worker stopped. Restart the app; the log in the data folder says why.")
    if in_flight:
        names = batch_labels(engine.store, sorted({r.item.batch_id for r in in_flight}))
        st.dataframe(
            [
                {"File": r.name, "Batch": names[r.item.batch_id], "Status": r.label, "In this step for": duration(time.time() - r.since)}
                for r in in_flight
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("Nothing running or waiting.")

    for which, waiting in left_for_others(engine.store, engine.settings).items():
        st.info(
            f"{waiting:,} video(s) wait for the app or CLI that has {plain(which)}: this app leaves them alone. "
            "Give both the same key, or press Retry on a row to ask the Gemini this app uses.",
            icon=":material/key:",
        )
    st.subheader("Recent problems")
    failures = recent_failures(rows)
    mailed = mail.last_outcome(engine.settings.data_dir)
    if mailed and not mailed.ok:  # a send that failed never fails the batch: it is said here and on Settings
        st.warning(
            f"E-mail for {plain(mailed.batch or 'a batch')} not sent: {plain(mailed.message)}. Check the "
            "SMTP settings on the Settings page.",
            icon=":material/mail:",
        )
    if not failures and not (mailed and not mailed.ok):
        st.caption("None.")
    for row in failures:
        st.error(f"**{plain(row.name)}**: {plain(row.error)}", icon=":material/error:")


live()

st.subheader("Time per stage (finished videos)")
stats = time_per_status(engine.store, batch_rows(engine.store))
if stats is not None:
    st.caption("Seconds each stage took, in the order of a video's life.")
    order = list(stats.index)  # reports.py gives the stages in the order of a video's life
    long = stats[["median", "p90"]].rename(columns=CHART_NAMES).reset_index(names="stage")
    long = long.melt(id_vars="stage", var_name="measure", value_name="seconds")
    st.vega_lite_chart(
        long,
        {
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "y": {"field": "stage", "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 400}},
                "yOffset": {"field": "measure", "sort": list(CHART_NAMES.values())},
                "x": {"field": "seconds", "type": "quantitative", "title": "seconds"},
                "color": {
                    "field": "measure",
                    "type": "nominal",
                    "sort": list(CHART_NAMES.values()),
                    "legend": {"title": None, "orient": "bottom"},
                },
            },
        },
        width="stretch",
        height=120 + 60 * len(order),
    )
    st.dataframe(stats.round(2).rename(columns=TABLE_NAMES).rename_axis("Stage"), width="stretch")
else:
    st.caption("No finished videos yet.")
