"""Video Storyteller's server: `streamlit run app.py` serves this st.App; the UI itself is ui.py.

The engine starts with the server (unfinished jobs resume with no browser open) and stops with it;
every request, the websocket included, must carry this run's access token and come from this server's
own address (storyteller_ui.access). The browser is opened on a 0600 file that redirects to the link, so the
token is never on a command line.
The uploader's routes (storyteller_ui.uploader: browser uploads streamed straight to disk) and the job API for
programs (storyteller_ui.api: tus uploads, batches and jobs, SSE events under /api/v1, Bearer token only; and the
open GET /health) sit behind the same gate.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import streamlit as st
from starlette.middleware import Middleware

from storyteller_core.errors import DataDirError
from storyteller_core.settings import default_data_dir
from storyteller_ui import access, api, uploader
from storyteller_ui.app_engine import data_dir_problem, start_engine, stop_engines


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    try:
        await asyncio.to_thread(start_engine)
    except (OSError, DataDirError) as exc:  # the pages show it too, and try again on each visit
        print(f"error: {data_dir_problem(exc)}", file=sys.stderr, flush=True)
    token = access.access_token()
    url = access.app_url(token)
    link_file = access.write_link_file(url, default_data_dir(), access.server_port()) if token else None
    access.announce(url, token, link_file)
    access.open_browser(link_file.as_uri() if link_file else url.split("?", 1)[0])  # the token never on argv
    try:
        yield
    finally:
        if link_file:
            link_file.unlink(missing_ok=True)
        await asyncio.to_thread(stop_engines)


app = st.App(
    "ui.py",
    lifespan=lifespan,
    routes=[*uploader.routes(), *api.routes()],
    middleware=[Middleware(access.TokenGate, token=access.access_token(), api_tokens=api.tokens.check)],
)
