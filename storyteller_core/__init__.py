"""Video Storyteller's engine: videos in, Gemini stories out. Never imports streamlit."""

from typing import Any

from .config import Settings

__all__ = ["Engine", "Settings"]


def __getattr__(name: str) -> Any:  # the engine pulls in google.genai: import it only when asked for
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
