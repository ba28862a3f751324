"""Local Gemini REST emulator for demo mode and tests."""

from storyteller_core.emulator.config import EmulatorConfig
from storyteller_core.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
