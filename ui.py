"""Video Storyteller's UI: a router over four thin pages (served by app.py; AppTest runs this file)."""

from pathlib import Path

import streamlit as st

from storyteller_ui import notify
from storyteller_ui.app_engine import get_engine
from storyteller_ui.view import banners

FAVICON = Path(__file__).parent / "storyteller_ui" / "assets" / "favicon.png"

st.set_page_config(page_title="Video Storyteller", page_icon=str(FAVICON), layout="wide")  # shipped: no fetch offline
engine = get_engine()
page = st.navigation(
    [
        st.Page("pages/batch.py", title="Batch", icon=":material/movie:", default=True),
        st.Page("pages/results.py", title="Results", icon=":material/table_view:"),
        st.Page("pages/ask.py", title="Ask", icon=":material/forum:"),
        st.Page("pages/library.py", title="Library", icon=":material/search:"),
        st.Page("pages/queue.py", title="Queue", icon=":material/queue:"),
        st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
    ]
)
banners(engine)
notify.place_toasts()  # below the page's top, so a toast never covers the banners
page.run()
