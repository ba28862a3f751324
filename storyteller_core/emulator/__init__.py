"""Local Gemini REST emulator for demo mode and tests."""

from .config import EmulatorConfig
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
