"""Tell me when it's done: the tab title, a toast, a desktop notification, the webhook and the e-mail.

The tab title follows the batch on screen ("3/10 · Video Storyteller", then
"Done 10/10 · ..."). When a batch this browser tab watched in flight ends,
the tab shows a toast and, if the person allowed it, a desktop notification
(the browser's Notification API, through a small st.components.v2 component
running in the page; several tabs showing the same completion collapse into
one notification by its tag and a note in localStorage). The webhook is
sent by whichever tab sees the completion first (storyteller_core.deliverables.webhook
claims each completion once, across tabs and processes); the e-mail beside it
(storyteller_core.deliverables.mail, its own claim, the same completion id).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import streamlit as st

from storyteller_core import Engine
from storyteller_core.deliverables.mail import mail_once
from storyteller_core.deliverables.webhook import BatchReport, fire_once, summary
from storyteller_core.views.board import Row, Totals, batch_rows, totals

APP_NAME = "Video Storyteller"
NOTE_FOR_S = 30.0  # seconds a finished batch's desktop note is offered to the page

_JS = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const d = data || {};
  const supported = typeof window.Notification !== "undefined";
  let box = parentElement.querySelector(".vs-notify");
  if (!box) {
    box = document.createElement("div");
    box.className = "vs-notify";
    parentElement.appendChild(box);
  }
  const note = (text) => {
    const span = document.createElement("span");
    span.className = "note";
    span.textContent = text;
    box.appendChild(span);
  };
  const render = () => {
    box.textContent = "";
    if (!d.offer) return;
    if (!supported) { note("This browser cannot show desktop notifications."); return; }
    const permission = Notification.permission;
    if (permission === "granted") { note("Desktop notifications are on in this browser."); return; }
    if (permission === "denied") {  // said on Settings only: on the board it would nag everyone who said no
      if (d.explain) note("Desktop notifications are blocked for this app in the browser's site settings.");
      return;
    }
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Notify me on this computer when a batch finishes";
    button.onclick = async () => {
      const answer = await Notification.requestPermission();
      setStateValue("permission", answer);
      render();
    };
    box.appendChild(button);
  };
  render();
  const n = d.notify;
  if (supported && n && n.id && Notification.permission === "granted") {
    const key = "video-storyteller-notified";
    let seen = [];
    try { seen = JSON.parse(localStorage.getItem(key) || "[]"); } catch (e) { seen = []; }
    if (!seen.includes(n.id)) {
      seen.push(n.id);
      try { localStorage.setItem(key, JSON.stringify(seen.slice(-100))); } catch (e) {}
      try { new Notification(n.title, { body: n.body, tag: n.id }); } catch (e) {}
    }
  }
}
"""
_CSS = """
.vs-notify { font-size: 0.875rem; }
.vs-notify button {
  font: inherit; color: var(--st-text-color); background: var(--st-secondary-background-color);
  border: 1px solid var(--st-border-color, rgba(128, 128, 128, 0.4)); border-radius: 0.5rem;
  padding: 0.3rem 0.75rem; cursor: pointer;
}
.vs-notify button:hover { border-color: var(--st-primary-color); color: var(--st-primary-color); }
.vs-notify .note { color: var(--st-text-color); opacity: 0.7; }
"""
_component = st.components.v2.component("video_storyteller_notify", js=_JS, css=_CSS)


# Streamlit puts its toasts at the top right, over the banners (the demo mode's, Gemini out of reach) and the
# title: they sit at the bottom right instead, where a finished batch's toast hides nothing one reads first.
TOAST_STYLE = """<style>
.stToastContainer, [data-testid="stToastContainer"] { top: auto !important; bottom: 1rem !important; }
</style>"""


def place_toasts() -> None:
    """Call on every page (ui.py): a toast outlives the page it was raised on."""
    st.html(TOAST_STYLE)


def desktop(*, offer: bool, notify: dict[str, str] | None = None, key: str = "desktop-notify", explain: bool = False) -> None:
    """Mount the component: the opt-in button when ``offer``, and ``notify`` shown once per id if allowed.

    ``explain``: say so when the browser blocks notifications (the Settings page; elsewhere nothing is said).
    """
    _component(
        data={"offer": offer, "notify": notify, "explain": explain},
        key=key,
        default={"permission": None},
        on_permission_change=lambda: None,
    )


def progress_title(totals: Totals) -> str:
    """The browser tab's title for a batch: progress while it runs, "Done" when it has ended."""
    ended = totals.rows - totals.in_flight
    if totals.rows == 0:
        return APP_NAME
    if totals.in_flight:
        return f"{ended}/{totals.rows} · {APP_NAME}"
    return f"Done {totals.done}/{totals.rows} · {APP_NAME}"


def set_title(title: str) -> None:
    st.set_page_config(page_title=title)


def running_title(rows: list[Row]) -> None:
    """For pages that show every batch: the progress of the batches with work in flight, if any."""
    running = {row.item.batch_id for row in rows if not row.ended}
    if running:
        set_title(progress_title(totals([row for row in rows if row.item.batch_id in running])))


def finished_at(rows: list[Row]) -> float:
    return max((row.finished_at or row.item.created_at for row in rows), default=0.0)


def completion_id(batch_id: str, rows: list[Row], totals: Totals) -> str:
    """Names one completion of a batch: a retry that ends later is another completion."""
    last = totals.last_finished if totals.last_finished is not None else finished_at(rows)
    return f"{batch_id}-{int(last)}-{totals.done}-{totals.failed}-{totals.cancelled}"


def app_link(batch_id: str) -> str | None:
    """A link back to this batch: the address in the browser, without its query (never the access token)."""
    try:
        url = st.context.url
    except Exception:
        return None
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/", urllib.parse.urlencode({"batch": batch_id}), ""))


def watch(engine: Engine, batch_id: str, name: str, rows: list[Row], totals: Totals) -> None:
    """Call from the board on every run: title, and once per completion the toast, desktop note and webhook."""
    set_title(progress_title(totals))
    state = st.session_state
    watching: set[str] = state.setdefault("watching-batches", set())
    # The desktop note is handed to the page for a while, not once: a run cut short by the next rerun must not
    # lose it; the component shows each id once (localStorage), in this tab or any other.
    pending: dict[str, tuple[dict[str, Any], float]] = state.setdefault("desktop-notes", {})
    if totals.in_flight:
        watching.add(batch_id)
        pending.pop(batch_id, None)
    elif totals.rows:
        report = BatchReport(batch_id, name, totals.rows, totals.done, totals.failed, totals.cancelled, app_link(batch_id))
        completion = completion_id(batch_id, rows, totals)
        if batch_id in watching:  # this tab saw it run: say so here
            watching.discard(batch_id)
            st.toast(f"Batch finished: {summary(report)}.", icon=":material/task_alt:", duration="long")
            pending[batch_id] = (
                {"id": completion, "title": f"{APP_NAME}: batch finished", "body": f"{name}: {summary(report)}."},
                time.monotonic() + NOTE_FOR_S,
            )
        last = totals.last_finished if totals.last_finished is not None else finished_at(rows)
        fire_once(engine.settings.data_dir, report, completion, finished_at=last)
        mail_once(
            engine.settings.data_dir,
            report,
            rows or (lambda: batch_rows(engine.store, batch_id)),
            completion,
            demo=engine.demo,
            finished_at=last,
        )  # the board passes no rows: they are read for the one e-mail
    note, until = pending.get(batch_id, (None, 0.0))
    if note is not None and time.monotonic() > until:
        pending.pop(batch_id, None)
        note = None
    desktop(offer=bool(totals.in_flight), notify=note, key=f"desktop-notify-{batch_id}")
