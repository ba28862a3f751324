"""Video Storyteller's engine: videos in, Gemini stories out. Never imports streamlit."""

from .config import Settings
from .engine import Engine
from .jobs import Job, State

__all__ = ["Engine", "Job", "Settings", "State"]
