"""The `table` command of the CLI (registered by storyteller_core.cli)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add this command to the CLI's subcommands (imports nothing heavy: `status` must answer at once)."""
