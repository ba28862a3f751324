"""Run the emulator alone: python -m storyteller_core.emulator --port 8765"""

from __future__ import annotations

import argparse
import time

from . import Emulator, EmulatorConfig

parser = argparse.ArgumentParser(description="Local Gemini REST emulator")
parser.add_argument("--port", type=int, default=8765)
parser.add_argument("--processing-delay", type=float, default=1.5)
parser.add_argument("--analysis-delay", type=float, default=1.0)
args = parser.parse_args()
emulator = Emulator(EmulatorConfig(processing_delay_s=args.processing_delay, analysis_delay_s=args.analysis_delay),
                    port=args.port).start()
print(f"Gemini emulator listening on {emulator.base_url} (Ctrl+C stops it)", flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    emulator.stop()
