"""Video Storyteller's engine: videos in, Gemini stories out. Never imports streamlit."""

from typing import TYPE_CHECKING, Any

from storyteller_core.settings import Settings

if TYPE_CHECKING:  # type checkers see the real class; at run time it is imported on first use (below)
    from storyteller_core.engine import Engine

__all__ = ["Engine", "Settings"]


def __getattr__(name: str) -> Any:  # the engine pulls in google.genai: import it only when asked for
    if name == "Engine":
        from storyteller_core.engine import Engine

        return Engine
    raise AttributeError(name)
