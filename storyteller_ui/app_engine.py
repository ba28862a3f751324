"""One engine per Streamlit server: started with the server (app.py's lifespan), stopped with it.

Pages call get_engine(). The engine lives in this module, not in st.cache_resource, so "Clear cache"
never builds a second one; where no lifespan ran (streamlit.testing AppTest), the first call builds it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import streamlit as st

from storyteller_core import Engine, Settings
from storyteller_core.assembly import open_engine
from storyteller_core.errors import DataDirError
from storyteller_core.gemini import demo_mode as demo
from storyteller_core.settings import api_key_from_env, default_data_dir

_engines: dict[Path, Engine] = {}  # by data dir: one per server; AppTest runs may point at several
_lock = threading.Lock()


def _secret_key() -> str | None:
    try:  # with no secrets file, st.secrets raises
        return st.secrets.get("GEMINI_API_KEY") or st.secrets.get("GOOGLE_API_KEY")
    except Exception:
        return None


def start_engine() -> Engine:
    """The engine for the configured data dir, built and started once per process."""
    data_dir = default_data_dir()
    with _lock:
        engine = _engines.get(data_dir)
        if engine is None:
            settings = Settings.from_env(data_dir=data_dir, api_key=_secret_key() or api_key_from_env())
            # The server's terminal shows warnings; the log file in the data dir has everything.
            engine = _engines[data_dir] = open_engine(settings, stderr_log_level=logging.WARNING).start()
        return engine


def stop_engines() -> None:
    """At server stop: release every lease and stop the workers."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.shutdown()
    demo.stop()  # what demo mode's emulator was sent is deleted with the server (a SIGTERM skips atexit)


def data_dir_problem(exc: OSError | DataDirError) -> str:
    if isinstance(exc, DataDirError):
        return exc.message
    return (
        f"Video Storyteller cannot use its data folder {default_data_dir()} ({exc.strerror or exc}). "
        "Set STORYTELLER_DATA_DIR to a folder you can write to, then restart the app."
    )


def get_engine() -> Engine:
    """The server's engine; a clear message and a stop when the data dir is unusable."""
    try:
        return start_engine()
    except (OSError, DataDirError) as exc:
        st.error(data_dir_problem(exc), icon=":material/folder_off:")
        st.stop()
        raise  # unreachable: st.stop() ends the run


def key_source(engine: Engine) -> str:
    key = engine.settings.api_key
    if not key:
        return "none"
    if key == _secret_key():
        return "secrets.toml"
    if key == api_key_from_env():
        return "environment"
    return "typed in on the Settings page"


def masked(key: str | None) -> str:
    return "not set" if not key else f"{'•' * 8}{key[-4:]}"
