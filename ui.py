"""Video Storyteller's UI: a router over four thin pages (served by app.py; AppTest runs this file)."""

import streamlit as st

from storyteller_ui.engine import get_engine
from storyteller_ui.view import banners

st.set_page_config(page_title="Video Storyteller", page_icon=":material/movie:", layout="wide")
engine = get_engine()
page = st.navigation([
    st.Page("pages/batch.py", title="Batch", icon=":material/movie:", default=True),
    st.Page("pages/results.py", title="Results", icon=":material/table_view:"),
    st.Page("pages/queue.py", title="Queue", icon=":material/queue:"),
    st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
])
banners(engine)
page.run()
