"""Video Storyteller: a router. Logic lives in storyteller_core; pages only read state and call the engine."""

import streamlit as st

from storyteller_ui.engine import get_engine
from storyteller_ui.view import banners

st.set_page_config(page_title="Video Storyteller", page_icon="🎬", layout="wide")
engine = get_engine()
page = st.navigation([
    st.Page("pages/batch.py", title="Batch", icon="🎬", default=True),
    st.Page("pages/results.py", title="Results", icon="📋"),
    st.Page("pages/queue.py", title="Queue", icon="🚦"),
    st.Page("pages/settings.py", title="Settings", icon="⚙️"),
])
banners(engine)
page.run()
