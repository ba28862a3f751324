"""Settings: the API key, the models and prices, and the limits in force."""

from __future__ import annotations

import streamlit as st

from storyteller_core.config import MODELS
from storyteller_core.errors import GeminiError, Kind
from storyteller_ui.engine import get_engine, key_source, masked
from storyteller_ui.view import plain

engine = get_engine()
st.title(":material/settings: Settings")

st.subheader("Gemini API key")
if engine.settings.api_key:
    st.write(f"In use: **{masked(engine.settings.api_key)}**, {key_source(engine)}.")
else:
    st.write("In use: **not set: demo mode** (stories come from a local emulator, not Gemini).")
with st.form("key-form", clear_on_submit=True):
    typed = st.text_input("Set a key for as long as this app runs (not saved anywhere)", type="password")
    if st.form_submit_button("Use this key") and typed.strip():
        engine.set_api_key(typed.strip())
        try:
            models = engine.available_models()
            if engine.settings.model not in models:
                st.warning(f"The key works, but the model {engine.settings.model} is not offered to it. Pick another.")
            st.success("Gemini accepted the key. New videos use it; retry failed ones on the Batch page.")
        except GeminiError as exc:
            if exc.kind is Kind.AUTH:
                st.error("Gemini rejected this key. Copy it again from Google AI Studio and paste it here.")
            else:
                st.warning(f"Could not check the key right now ({plain(exc.label)}). It will be used for new videos.")
if engine.settings.api_key and st.button("Forget the key (back to demo mode)"):
    engine.set_api_key(None)
    st.rerun()
st.caption("To keep a key across restarts, set GEMINI_API_KEY in the environment or in .streamlit/secrets.toml "
           "(git ignores that file).")

st.subheader("Models and prices (USD per million tokens)")
st.dataframe(
    [{"model": m.name, "label": m.label, "input": m.usd_per_m_input, "output": m.usd_per_m_output} for m in MODELS.values()],
    hide_index=True, width="stretch",
)
st.caption("Video costs about 300 tokens per second. Prices live in storyteller_core/config.py.")

st.subheader("Limits")
s = engine.settings
st.dataframe([  # one text column: mixed types in a column break the table
    {"setting": "videos at once", "value": str(s.max_jobs), "change with": "STORYTELLER_MAX_JOBS"},
    {"setting": "uploads at once", "value": str(s.max_uploads), "change with": "STORYTELLER_MAX_UPLOADS"},
    {"setting": "status checks per second", "value": f"{s.polls_per_second:g}", "change with": "config.py"},
    {"setting": "largest file", "value": f"{s.max_file_bytes / 1024**3:g} GB", "change with": "config.py"},
    {"setting": "data folder", "value": str(s.data_dir), "change with": "STORYTELLER_DATA_DIR"},
], hide_index=True, width="stretch")
