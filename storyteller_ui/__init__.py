"""Streamlit helpers shared by the pages: the one engine, formatting, job rows."""
