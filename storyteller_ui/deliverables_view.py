"""Reports and subtitles on the pages: built when the person asks, with progress, then offered for download.

A report reads each key moment's frame from the local file, so it is built on a click (never on every rerun)
and kept in the session until the selection changes; subtitles are text and are zipped at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from storyteller_core.cli.export_command import moments_of
from storyteller_core.deliverables import docx_report, pdf_report, subtitles
from storyteller_core.views.board import Row

KINDS = {
    "docx": (
        "Word report",
        docx_report,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ":material/description:",
    ),
    "pdf": ("PDF report", pdf_report, "application/pdf", ":material/picture_as_pdf:"),
}


def file_stem(name: str | None) -> str:
    """A download name from a batch name: letters, digits, dashes."""
    stem = re.sub(r"[^\w-]+", "-", name or "", flags=re.UNICODE).strip("-")[:60]
    return stem or "video-stories"


def deliverables(rows: Callable[[], list[Row]], *, key: str, selection: str = "", batch_name: str | None = None) -> None:
    """Buttons that build a Word or PDF report of ``rows()`` and a zip of their subtitles.

    ``rows`` is called on a click, so the page does not read every row on each rerun for a report nobody asked for.
    A built report is offered until ``selection`` (what the rows were picked by) changes.
    """
    line = st.container(horizontal=True)
    stem = file_stem(batch_name)
    for kind, (label, module, mime, icon) in KINDS.items():
        state_key = f"{key}-{kind}-built"
        if st.session_state.get(state_key, (selection,))[0] != selection:
            del st.session_state[state_key]  # built for another selection
        if line.button(f"Build {label}", key=f"{key}-{kind}", icon=icon):
            listed = [r for r in rows() if r.story]
            if not listed:
                st.warning("No finished story in this selection yet: a report is built from finished rows.", icon=":material/info:")
                continue
            bar = st.progress(0.0, text=f"Building the {label}: 0 / {len(listed)} video(s)")

            def show(done: int, total: int, bar: Any = bar, label: str = label) -> None:
                bar.progress(done / max(total, 1), text=f"Building the {label}: {done} / {total} video(s)")

            try:
                data = module.build_bytes(listed, batch_name=batch_name, progress=show)
            except OSError as exc:
                bar.empty()
                st.error(
                    f"The {label} could not be built ({exc.strerror or exc}). Check that the disk has room, then build it again.",
                    icon=":material/error:",
                )
                continue
            bar.empty()
            st.session_state[state_key] = (selection, data, len(listed))
        built = st.session_state.get(state_key)
        if built:
            _, data, count = built
            line.download_button(
                f"Download {label} ({count} video(s))",
                data,
                file_name=f"{stem}.{kind}",
                mime=mime,
                key=f"{key}-{kind}-download",
                icon=":material/download:",
                on_click="ignore",
            )

    def subtitles_zip() -> bytes:
        return subtitles.zip_bytes(moments_of(rows()))

    line.download_button(
        "Subtitles (SRT and WebVTT, zip)",
        subtitles_zip,
        file_name=f"{stem}-subtitles.zip",
        mime="application/zip",
        key=f"{key}-subtitles",
        icon=":material/subtitles:",
        on_click="ignore",
    )
