"""Deliverables an analyst hands on: Word and PDF reports, SRT/WebVTT key moments, and the e-mail when a batch ends.

Each module is small and imports its library only when used, so the engine starts without them.
"""
