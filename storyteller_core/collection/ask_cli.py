"""The `ask` command of the CLI (registered by storyteller_core.cli)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this command to the CLI's subcommands (imports nothing heavy: `status` must answer at once)."""
