"""One engine per Streamlit server, built once through st.cache_resource."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from storyteller_core import Engine, Settings
from storyteller_core.config import api_key_from_env, default_data_dir


def _secret_key() -> str | None:
    try:  # with no secrets file, st.secrets raises
        return st.secrets.get("GEMINI_API_KEY") or st.secrets.get("GOOGLE_API_KEY")
    except Exception:
        return None


@st.cache_resource(show_spinner=False)
def _engine(data_dir: str) -> Engine:
    settings = Settings.from_env(data_dir=Path(data_dir), api_key=_secret_key() or api_key_from_env())
    return Engine(settings).start()


def get_engine() -> Engine:
    """The server's engine; a clear message and a stop when the data dir is unusable."""
    data_dir = default_data_dir()
    try:
        return _engine(str(data_dir))
    except OSError as exc:
        st.error(
            f"Video Storyteller cannot use its data folder {data_dir} ({exc.strerror or exc}). "
            "Set STORYTELLER_DATA_DIR to a folder you can write to, then restart the app."
        )
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
