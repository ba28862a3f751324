"""Settings and folders renamed so one word names one idea: the old names still work, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from storyteller_core.records.batch import Batch
from storyteller_core.settings import Settings
from storyteller_core.storage.datadir import ensure_data_dir, store_dir
from storyteller_core.storage.disk_store import DiskStore


def test_the_old_worker_count_name_still_sets_the_workers_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("STORYTELLER_MAX_WORKERS", raising=False)
    monkeypatch.setenv("STORYTELLER_MAX_JOBS", "5")
    with caplog.at_level(logging.WARNING):
        assert Settings.from_env().max_workers == 5
    assert "STORYTELLER_MAX_JOBS is now called STORYTELLER_MAX_WORKERS" in caplog.text
    monkeypatch.setenv("STORYTELLER_MAX_WORKERS", "2")  # the new name wins
    assert Settings.from_env().max_workers == 2


def test_a_data_dir_of_an_earlier_release_keeps_its_rows_in_the_renamed_store_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    old = DiskStore(root / "jobs")  # how releases before 0.3 named the store's folder
    old.add_batch(Batch(id="20261202-101010-abcd", name="kept", created_at=1.0))
    old.close()
    with caplog.at_level(logging.WARNING):
        ensure_data_dir(root)
    assert not (root / "jobs").exists()
    assert "renamed the data dir's store folder from jobs to store" in caplog.text
    reopened = DiskStore(store_dir(root))
    assert reopened.batch_ids() == ["20261202-101010-abcd"]
