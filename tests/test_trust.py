"""Trust: what a server answer, a quota, a damaged or foreign data dir, or an unknown model cannot do to us."""

from __future__ import annotations

import os
import time

import pytest

from storyteller_core.errors import Code
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.views.board import Status
from storyteller_core.views.export import to_csv_bytes

from .helpers import ask, cli_env, run_all, run_cli, wait_until


@pytest.mark.slow
def test_a_key_echoed_by_the_server_is_stored_nowhere(make_engine, emulator, one_video, tmp_path):
    key = "AIza-echo-secret-0042"
    engine = make_engine(api_key=key)

    [row] = run_all(engine, [one_video("talk-ECHOKEY.mp4")])

    assert row.status is Status.FAILED and "***" in row.error and key not in row.error
    assert key.encode() not in to_csv_bytes([row])
    engine.shutdown()
    leaks = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_an_exhausted_quota_pauses_the_batch_instead_of_failing_each_video(make_engine, emulator, videos):
    emulator.config.rate_429 = 1.0
    emulator.config.retry_delay_s = 0.0  # "retry in 0 s": once made 5,859 requests in 305 s
    emulator.config.fault_on = {"generate"}
    engine = make_engine(quota_pause_after_s=3.0, analysis_budget_s=30)
    items = engine.commands.submit_paths(videos[:3], ask(engine))

    wait_until(lambda: engine.gate.message is not None, timeout=30, what="quota pause")
    asked = emulator.stats.faults["429"]
    time.sleep(2)

    assert "Gemini quota exhausted; the batch resumes at" in engine.gate.message
    assert emulator.stats.faults["429"] - asked <= 3  # paused: at most one probe per worker, not a request storm
    assert asked <= 12  # a shared cool-down with a floor: about one request per second in all
    rows = engine.rows(engine.store.many(type(items[0]), [i.id for i in items]))
    assert not any(r.status is Status.FAILED for r in rows)  # nobody failed one by one

    emulator.config.rate_429 = 0.0
    engine.resume()
    done = engine.wait([i.id for i in items], timeout=60)
    assert [r.status for r in done] == [Status.DONE] * 3 and engine.gate.message is None


@pytest.mark.slow
def test_cancel_ends_an_analysis_that_is_backing_off(make_engine, emulator, videos):
    emulator.config.rate_503 = 1.0
    emulator.config.fault_on = {"generate"}
    engine = make_engine(analysis_budget_s=120)
    [item] = engine.commands.submit_paths([videos[0]], ask(engine))
    wait_until(lambda: emulator.stats.faults["503"] >= 2, timeout=30, what="retries")

    asked = time.monotonic()
    engine.commands.cancel(item.id)
    wait_until(lambda: engine.store.require(Analysis, item.analysis_id).state is AnalysisState.CANCELLED, timeout=20)

    assert time.monotonic() - asked < 20  # not the 120 s budget (about a second on an idle machine)
    assert engine.rows([engine.store.require(type(item), item.id)])[0].status is Status.CANCELLED


@pytest.mark.slow
def test_answers_that_are_not_json_are_retried_as_gemini_faults(make_engine, emulator, videos):
    emulator.config.bad_body_rate = 0.3
    emulator.config.fault_on = {"upload_start", "poll", "generate"}
    engine = make_engine(upload_budget_s=60, processing_budget_s=60, analysis_budget_s=60)

    rows = run_all(engine, videos[:4], timeout=120)

    assert [r.status for r in rows] == [Status.DONE] * 4
    assert emulator.stats.faults["bad_body"] > 0


@pytest.mark.slow
def test_a_model_gemini_does_not_offer_stops_the_batch_asking_and_never_re_uploads(make_engine, emulator, videos):
    engine = make_engine(max_workers=1)

    rows = run_all(engine, videos[:3], model="gemini-0-retired")

    assert {r.status for r in rows} == {Status.FAILED}
    assert {r.analysis.error_code for r in rows} == {Code.MODEL_NOT_FOUND}
    assert "gemini-0-retired is not offered" in rows[0].error
    assert sum(emulator.stats.uploads_finished.values()) == 3  # each once: a missing model is not a missing file
    assert sum(emulator.stats.generates.values()) == 0  # no story was ever written with a model that is not there


def test_a_damaged_store_is_reported_and_kept_by_the_cli(tmp_path):
    data = tmp_path / "data"
    (data / "store").mkdir(parents=True, mode=0o700)
    os.chmod(data, 0o700)
    (data / "store" / "cache.db").write_bytes(b"")

    result = run_cli(["status"], cli_env(data))

    assert result.returncode == 2
    assert "is damaged (the file is empty (0 bytes))" in result.stderr and "Traceback" not in result.stderr
    assert (data / "store" / "cache.db").read_bytes() == b""
    assert list((data / "store").glob("cache.db.damaged-*"))


def test_a_data_dir_other_users_can_write_is_refused_with_the_fix(tmp_path):
    data = tmp_path / "shared"
    data.mkdir()
    os.chmod(data, 0o777)

    result = run_cli(["status"], cli_env(data))

    assert result.returncode == 2 and "chmod 700" in result.stderr and "Traceback" not in result.stderr
    assert not (data / "store").exists()
