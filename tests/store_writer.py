"""A process that writes to a job store until it is killed, saying on stdout what each write stored once it returned.

    python -m tests.store_writer add-rows DIR BATCH     add rows to BATCH, one line per row: "row <id>"
    python -m tests.store_writer finish DIR N           finish analyses 0..N-1 with 40 KB stories: "done <id>"
    python -m tests.store_writer open DIR               open the store (migrating it), then "open"

Used by tests/test_store_durability.py, which SIGKILLs it at random moments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from storyteller_core.records.analysis import AnalysisState
from storyteller_core.records.batch import Item, new_id
from storyteller_core.storage.disk_store import DiskStore

STORY = "A long story. " * 3000  # 42 KB: over diskcache's 32 KB file threshold


def story_of(n: int) -> str:
    return f"{n}: {STORY}"


def analysis_id(n: int) -> str:
    return f"an-{n:05d}"


def main(mode: str, directory: str, arg: str = "") -> None:
    store = DiskStore(Path(directory))
    print("open", flush=True)
    if mode == "add-rows":
        while True:
            item = store.add_item(Item(id=new_id(), batch_id=arg, display_name="clip.mp4", source_path="/v/clip.mp4"))
            print("row", item.id, flush=True)
    if mode == "finish":
        from storyteller_core.records.analysis import Analysis

        for n in range(int(arg)):  # those a killed run left unfinished, from where it left them
            state = store.require(Analysis, analysis_id(n)).state
            if state is AnalysisState.COMPLETED:
                continue
            if state is AnalysisState.WAITING:
                store.transition(Analysis, analysis_id(n), AnalysisState.ANALYZING)
            store.transition(Analysis, analysis_id(n), AnalysisState.COMPLETED, story=story_of(n))
            print("done", analysis_id(n), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
