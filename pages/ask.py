"""Ask: one question over some batches or the whole library, each citation checked against its clip.

Thin: storyteller_core.collection.ask does the work (and keeps every answer). Model output and file names are
untrusted: shown through plain() or as text widgets, never as Markdown of their own.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from storyteller_core.collection.ask import Asker, AskError, AskResult, CitationResult, Scope
from storyteller_core.collection.material import ScopeError
from storyteller_core.errors import GeminiError, QuotaPaused
from storyteller_core.records.timecode import timestamp
from storyteller_core.records.video import Video
from storyteller_core.views.board import batch_labels
from storyteller_ui.app_engine import get_engine
from storyteller_ui.view import PLAYABLE_BYTES, model_label, plain

engine = get_engine()
st.title(":material/forum: Ask the collection")
st.caption(
    "One question over the stories already written: Gemini answers from them (no video is uploaded again), "
    "then every citation is checked against its own clip of the footage."
)

STATUS_LOOK = {
    "confirmed": (":material/verified:", "Confirmed by the footage"),
    "corrected": (":material/edit_calendar:", "Shown at another time (corrected)"),
    "unsupported": (":material/report:", "Not supported by the footage: not a fact"),
    "unchecked": (":material/pending:", "Not checked yet"),
}

batch_ids = engine.store.batch_ids()
names = batch_labels(engine.store, batch_ids)
left, right = st.columns([1, 2])
whole = left.radio("Ask", ["The whole library", "Some batches"], key="ask-scope", horizontal=True) == "The whole library"
picked = right.multiselect(
    "Batches", batch_ids, format_func=lambda b: names[b], key="ask-batches", disabled=whole, placeholder="Pick one or more batches"
)
model = left.selectbox("Model", engine.catalog.choices(), key="ask-model", format_func=model_label)
question = st.text_area("Question", key="ask-question", placeholder="Which of these interviews mention pricing, and where?")
scope = Scope(None if whole else tuple(picked))
if not whole and not picked:
    st.info("Pick at least one batch, or ask the whole library.", icon=":material/info:")
    st.stop()


def asker() -> Asker:
    return Asker(engine.settings, engine.store, engine.ctx.gateway, cooldown=engine.gate.cooldown)


def player(result: AskResult) -> None:
    seek = st.session_state.get("ask-seek")
    if not seek or seek[0] != result.key:
        return
    _, sha, at = seek
    video = engine.store.get(Video, sha)
    source = next((s for s in (video.sources if video else []) if Path(s).is_file() and Path(s).stat().st_size <= PLAYABLE_BYTES), None)
    if video and video.url:
        source = video.url
    if source:
        st.video(source, start_time=int(at), autoplay=True, muted=True)
    else:
        st.caption(
            f"This video cannot be played here (its copy was not kept, or it is too large): open it in your "
            f"player at {plain(timestamp(at))}."
        )


def citation_view(result: AskResult, n: int, cited: CitationResult) -> None:
    c, o = cited.citation, cited.outcome
    icon, words = STATUS_LOOK[cited.status]
    span = f"{timestamp(c.start_s)}-{timestamp(c.end_s)}"
    box = st.container(border=True)
    head = f"{icon} **{n}. {plain(words)}** · {plain(c.file_name or c.video_label)} · {plain(span)}"
    if o and o.status == "corrected" and o.corrected_start_s is not None and o.corrected_end_s is not None:
        head += f" → {plain(timestamp(o.corrected_start_s))}-{plain(timestamp(o.corrected_end_s))}"
    box.markdown(head)
    box.text(f"Claim: {c.claim}\nQuote: {c.quote}")
    if o and o.status != "confirmed":
        box.caption(plain(o.reason))
    if o and o.status in ("confirmed", "corrected"):
        at = o.corrected_start_s if o.status == "corrected" and o.corrected_start_s is not None else c.start_s
        box.button(
            "Play from here",
            key=f"ask-play-{result.key}-{n}",
            icon=":material/play_arrow:",
            on_click=st.session_state.__setitem__,
            args=("ask-seek", (result.key, c.video_sha256, at)),
        )


def result_view(result: AskResult) -> None:
    st.subheader("Answer")
    st.markdown(plain(result.answer))
    counts = {s: sum(c.status == s for c in result.citations) for s in STATUS_LOOK}
    cost = "no cost: answered before" if result.reused else "demo mode: nothing charged" if engine.demo else f"cost ${result.cost_usd:.4f}"
    st.caption(
        f"{len(result.citations)} citation(s): {counts['confirmed']} confirmed, {counts['corrected']} corrected, "
        f"{counts['unsupported']} unsupported · {cost}"
    )
    uncited = sum(1 for claim in result.claims if not claim.get("citations"))
    if uncited:
        st.warning(f"{uncited} claim(s) of the answer came with no citation: they are not checked facts.", icon=":material/report:")
    for problem in result.problems:
        st.warning(plain(problem), icon=":material/warning:")
    player(result)
    for n, cited in enumerate(result.citations, 1):
        citation_view(result, n, cited)


if not question.strip():
    st.stop()
work = asker()
try:
    estimate = work.estimate(question, scope, model)
    st.caption(plain(estimate.describe()))
    shown = work.stored(question, scope, model)
    if st.button("Ask", type="primary", icon=":material/send:", key="ask-go"):
        with st.status("Asking...", expanded=True) as status:
            shown = work.ask(question, scope, model, on_progress=lambda text: status.write(plain(text)))
            status.update(
                label="Answered" if shown.complete else "Answered; some checks are left", state="complete" if shown.complete else "error"
            )
    if shown is not None:
        result_view(shown)
except ScopeError as exc:
    st.info(plain(str(exc)), icon=":material/info:")
except AskError as exc:
    st.error(plain(exc.message), icon=":material/error:")
except QuotaPaused as exc:
    st.warning(
        plain(f"The Gemini quota is exhausted for now ({exc}). What was answered and checked is kept: ask again later to finish."),
        icon=":material/hourglass_top:",
    )
except GeminiError as exc:
    st.error(
        plain(f"Gemini could not answer ({exc.label}: {exc.message[:200]}). Nothing was stored; ask again later."), icon=":material/error:"
    )
finally:
    work.close()
