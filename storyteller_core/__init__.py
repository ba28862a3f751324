"""Video Storyteller's engine: videos in, Gemini stories out. Never imports streamlit."""

from .config import Settings

__all__ = ["Settings"]
