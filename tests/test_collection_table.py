"""One table from many videos (issue 21 item 2): the analyst's fields asked of every video of a batch through the
normal analysis path, one row per video with typed values, summaries, neutralized exports, the table command."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from storyteller_core.collection.search import search_library
from storyteller_core.collection.table import (
    Field,
    Span,
    SpanVerdict,
    Table,
    TableRow,
    ask_table,
    build_table,
    fields_of,
    prompt_of,
    schema_of,
    table_ask,
    typed_value,
)
from storyteller_core.commands import Ask
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.settings import PROMPT_PRESETS

from .helpers import cli_env, read_csv, run_all, run_cli

FOUR = [
    Field("people count", "number", "How many different people appear?"),
    Field("shows demo", "yes/no"),
    Field("opening", "span", "When the first person appears"),
    Field("topics", "list"),
]


# -- fields, schema, prompt ------------------------------------------------------------------------------------
def test_fields_parse_and_are_checked() -> None:
    parsed = Field.parse("mentions price:yes/no:does anyone say a price: out loud?")
    assert (parsed.name, parsed.type, parsed.instruction) == ("mentions price", "yes/no", "does anyone say a price: out loud?")
    [f] = fields_of([Field("Café  visits", "Number")])
    assert (f.name, f.type, f.key) == ("Café visits", "number", "caf_visits")
    assert fields_of([Field("東京", "text")])[0].key == "field_1"  # a name with no ASCII letter still gets a key
    assert [f.key for f in fields_of([Field("a b", "text"), Field("a-b", "text")])] == ["a_b", "a_b_2"]
    for bad, message in (
        (Field("x", "colour"), "type"),
        (Field("", "text"), "no name"),
        (Field("file_name", "text"), "twice"),
        (Field("x", "text", "i" * 501), "longer"),
    ):
        with pytest.raises(ValueError, match=message):
            fields_of([bad])
    with pytest.raises(ValueError, match="twice"):
        fields_of([Field("X", "text"), Field("x", "number")])
    with pytest.raises(ValueError, match="at least one"):
        fields_of([])
    with pytest.raises(ValueError, match="NAME:TYPE"):
        Field.parse("no type here")


def test_the_schema_and_prompt_come_from_the_fields_alone() -> None:
    fields = fields_of(FOUR)
    schema = schema_of(fields)
    assert schema["required"] == ["people_count", "shows_demo", "opening", "topics"]
    assert schema["properties"]["people_count"]["type"] == ["number", "null"]
    assert schema["properties"]["shows_demo"]["type"] == "boolean"
    assert schema["properties"]["topics"]["items"] == {"type": "string"}
    assert schema["properties"]["opening"]["anyOf"][0]["required"] == ["start_time", "end_time"]
    assert "How many different people appear?" in prompt_of(fields)
    first, again = table_ask(fields, "gemini-3-flash"), table_ask(fields_of(FOUR), "gemini-3-flash")
    assert first == again and first.key_options == again.key_options  # same fields: the same analyses (reused)
    assert table_ask(fields_of(FOUR[:3]), "gemini-3-flash").key_options != first.key_options
    with pytest.raises(ValueError, match="batch tier"):
        table_ask(fields, "m", tier="batch")
    assert Ask.from_dict(first.to_dict()) == first  # travels through a started batch's intake


@pytest.mark.parametrize(
    "kind, raw, value, problem",
    [
        ("number", 3, 3.0, None),
        ("number", "2.5", 2.5, None),
        ("number", True, None, "not a number"),
        ("number", "many", None, "not a number"),
        ("number", None, None, None),
        ("yes/no", True, True, None),
        ("yes/no", "No", False, None),
        ("yes/no", "maybe", None, "not yes or no"),
        ("list", ["a", " ", "b"], ["a", "b"], None),
        ("list", None, [], None),
        ("list", "one", ["one"], None),
        ("text", "  hi ", "hi", None),
        ("text", 12, "12", None),
        ("span", {"start_time": "00:01", "end_time": "00:03"}, Span(1.0, 3.0), None),
        ("span", {"start_time": "00:05", "end_time": "00:02"}, None, "ends before it starts"),
        ("span", {"start_time": "00:05", "end_time": "09:00"}, None, "outside the video"),
        ("span", {"start_time": "soon"}, None, "not a time span"),
        ("span", "00:01", None, "not a time span"),
    ],
)
def test_each_value_is_typed_or_left_empty_with_the_reason(kind: str, raw: object, value: object, problem: str | None) -> None:
    got, why = typed_value(Field("f", kind, key="f"), raw, 10.0)
    assert got == value
    assert (why is None) if problem is None else (problem in (why or ""))


def test_summaries_and_exports_are_typed_and_neutralized() -> None:
    fields = fields_of([Field("n", "number"), Field("ok", "yes/no"), Field("tags", "list"), Field("at", "span"), Field("note", "text")])
    rows = [
        TableRow(
            "=cmd|' /C calc'!A0.mp4",
            "a" * 64,
            "answered",
            {"n": 2.0, "ok": True, "tags": ["x", "@y"], "at": Span(1, 2), "note": "+1 hello\x1b[31m"},
        ),
        TableRow(
            "b.mp4",
            "b" * 64,
            "answered",
            {"n": 4.0, "ok": False, "tags": ["x"], "at": None, "note": ""},
            problems=["at: outside the video (00:09-01:00 in a 00:10 video): left out"],
        ),
        TableRow("c.mp4", "c" * 64, "waiting"),
    ]
    table = Table(fields, rows, cost_usd=None)
    s = table.summaries()
    assert s["n"]["count"] == 2 and s["n"]["mean"] == 3.0
    assert s["ok"]["share_yes"] == 0.5 and s["ok"]["yes"] == 1
    assert s["tags"]["top"][0] == ("x", 2)
    assert s["at"]["left_out"] == 1 and s["at"]["checks"] == {"unchecked": 1}
    frame = table.frame()
    assert list(frame.columns) == ["file_name", "video_sha256", "n", "ok", "tags", "at", "at check", "note", "status"]
    assert str(frame["n"].dtype) == "Float64" and str(frame["ok"].dtype) == "boolean"
    parsed = list(csv.DictReader(io.StringIO(table.csv_bytes().decode("utf-8-sig"))))
    assert parsed[0]["file_name"].startswith("'=") and parsed[0]["note"].startswith("'+") and "\x1b" not in parsed[0]["note"]
    assert parsed[0]["tags"] == "x; @y" and parsed[0]["at"] == "00:01-00:02" and parsed[0]["at check"] == "unchecked"
    assert parsed[1]["at"] == "" and parsed[2]["status"] == "waiting"
    document = json.loads(table.json_bytes())
    assert document["rows"][0]["at"] == {"start_s": 1, "end_s": 2, "text": "00:01-00:02", "check": "unchecked"}
    assert "\x1b" not in document["rows"][0]["note"]


# -- the whole path: real SDK against the emulator ----------------------------------------------------------------
def test_a_four_field_table_gives_one_typed_row_per_video(make_engine, videos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    copy = tmp_path / "copy of the first.mp4"
    shutil.copy(videos[0], copy)
    everything = run_all(engine, [*videos[:4], copy], PROMPT_PRESETS["Story"], preset="Story")
    assert len(everything) == 5  # five rows, four videos
    source = everything[:4]
    batch_id = source[0].item.batch_id
    fields, model = fields_of(FOUR), engine.settings.model

    asked = ask_table(engine.commands, batch_id, fields, model)
    assert asked.videos == 4 and asked.already == 0 and len(asked.item_ids) == 4 and asked.batch_id != batch_id
    engine.wait(asked.item_ids)
    table = build_table(engine.store, batch_id, fields, model, engine.settings.backend)
    assert [row.file_name for row in table.rows] == [row.name for row in source]  # one row per video, in order
    assert {row.video_sha256 for row in table.rows} == {row.video.sha256 for row in source}
    for row in table.rows:
        assert row.status == "answered" and not row.problems, row.problems
        assert isinstance(row.values["people count"], float)
        assert isinstance(row.values["shows demo"], bool)
        assert isinstance(row.values["topics"], list) and all(isinstance(t, str) for t in row.values["topics"])
        span = row.values["opening"]
        assert isinstance(span, Span) and span.check == "unchecked" and 0 <= span.start_s <= span.end_s
    analyses = engine.store.many(Analysis, [r.analysis_id for r in engine.store.items(asked.batch_id)])
    assert all(a.answer and a.options.get("answer_schema") and a.state is AnalysisState.COMPLETED for a in analyses)
    frame = table.frame()
    assert len(frame) == 4 and str(frame["people count"].dtype) == "Float64" and str(frame["shows demo"].dtype) == "boolean"
    assert table.summaries()["people count"]["count"] == 4
    hits = search_library(engine.store, engine.settings.data_dir, "topics", kinds=["table"])  # searchable too
    assert {h.video_sha256 for h in hits} == {row.video.sha256 for row in source}

    again = ask_table(engine.commands, batch_id, fields, model)  # the same fields: every answer reused, no new batch
    assert again.item_ids == [] and again.batch_id is None and again.already == 4
    checked = build_table(
        engine.store,
        batch_id,
        fields,
        model,
        engine.settings.backend,
        check_span=lambda claim: SpanVerdict("unsupported") if claim.file_name == source[0].name else SpanVerdict("corrected", 0.0, 0.5),
    )
    assert checked.rows[0].values["opening"].check == "unsupported" and pd.isna(checked.frame()["opening"][0])
    assert checked.rows[1].values["opening"] == Span(0.0, 0.5, "corrected")


def test_answers_still_in_flight_are_waited_on_not_asked_again(make_engine, videos) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    source = run_all(engine, videos[:2], "Tell the story")
    engine.shutdown(timeout=5)  # a run that stopped before its answers came
    stopped = make_engine(start=False, data_dir=engine.settings.data_dir)
    fields, model = fields_of([Field("people", "number")]), stopped.settings.model
    first = ask_table(stopped.commands, source[0].item.batch_id, fields, model)
    assert len(first.item_ids) == 2 and first.batch_id
    again = ask_table(stopped.commands, source[0].item.batch_id, fields, model)  # run again before any answer came
    assert again.batch_id is None and sorted(again.item_ids) == sorted(first.item_ids)  # the same rows, waited on
    stopped.start()
    stopped.wait(again.item_ids, timeout=60)
    table = build_table(stopped.store, source[0].item.batch_id, fields, model, stopped.settings.backend)
    assert table.complete and table.answered == 2


def test_the_table_command_waits_and_writes_csv_and_json(tmp_path: Path, emulator, videos) -> None:  # type: ignore[no-untyped-def]
    env = cli_env(tmp_path / "data", emulator.base_url)
    done = run_cli(["process", "--batch-name", "interviews", *map(str, videos[:3])], env)
    assert done.returncode == 0, done.stderr
    out_csv, out_json = tmp_path / "t.csv", tmp_path / "t.json"
    args = [
        "table",
        "--batch",
        "interviews",
        "--field",
        "summary:text:one line",
        "--field",
        "people:number",
        "--field",
        "has audio:yes/no",
        "--field",
        "first shot:span",
        "--field",
        "objects:list",
        "--csv",
        str(out_csv),
        "--json",
        str(out_json),
    ]
    made = run_cli(args, env)
    assert made.returncode == 0, made.stdout + made.stderr
    rows = read_csv(out_csv)
    assert len(rows) == 3
    assert list(rows[0]) == [
        "file_name",
        "video_sha256",
        "summary",
        "people",
        "has audio",
        "first shot",
        "first shot check",
        "objects",
        "status",
    ]
    assert all(r["status"] == "answered" and float(r["people"]) >= 0 and r["has audio"] in ("True", "False") for r in rows)
    document = json.loads(out_json.read_text(encoding="utf-8"))
    assert [f["type"] for f in document["fields"]] == ["text", "number", "yes/no", "span", "list"]
    assert all(isinstance(r["objects"], list) for r in document["rows"])
    assert "people" in made.stdout and "mean" in made.stdout

    again = run_cli(args, env)  # asked before: every answer reused
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout
    asks_before = sum(emulator.stats.generates.values())
    checked = run_cli([*args, "--check-spans"], env)  # each span checked against its clip, like a citation
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdicts = [r["first shot check"] for r in read_csv(out_csv)]
    assert verdicts and all(v in ("confirmed", "corrected", "unsupported") for v in verdicts), verdicts
    assert sum(emulator.stats.generates.values()) - asks_before == len(verdicts)  # one clip request per span, nothing else
    bad = run_cli(["table", "--batch", "interviews", "--field", "x:colour", "--csv", str(out_csv)], env)
    assert bad.returncode == 2 and "colour" in bad.stderr
    missing = run_cli(["table", "--batch", "nope", "--field", "x:text", "--csv", str(out_csv)], env)
    assert missing.returncode == 1 and "no batch" in missing.stderr


# -- the Library page: search and the table builder, through AppTest --------------------------------------------------
def test_the_library_page_searches_plays_a_hit_and_builds_a_table(tmp_path: Path, monkeypatch, emulator, one_video) -> None:  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    from storyteller_ui.app_engine import start_engine

    from .helpers import ROOT, TEST_KEY, wait_until

    monkeypatch.setenv("STORYTELLER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GEMINI_API_KEY", TEST_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(ROOT)
    engine = start_engine()
    try:
        paths = [one_video("*bold* [link](x).mp4", seed=1, seconds=6.0), one_video("plain.mp4", seed=2, seconds=6.0)]
        rows = run_all(engine, paths, PROMPT_PRESETS["Story"], preset="Story")
        batch_id = rows[0].item.batch_id

        at = AppTest.from_file(str(ROOT / "pages" / "library.py"), default_timeout=60).run()
        assert not at.exception
        at.text_input(key="library-terms").input("last look").run()
        shown = "\n".join(m.value for m in at.markdown)
        assert "key moment" in shown and r"\*bold\* \[link\]\(x\)" in shown  # the file name as text, not Markdown
        play = next(b for b in at.button if b.key.startswith("library-hit-"))
        play.click().run()
        assert at.session_state["library-seek"][1] == 4.0  # the last of three moments of a 6 s video
        assert at.get("video")  # and the player seeks to it

        at.selectbox(key="library-batch").select(batch_id).run()
        at.button(key="library-build").click().run()
        assert not at.exception and not at.error

        def answered() -> bool:
            at.run()
            return any("2 of 2 video(s) answered" in c.value for c in at.caption)

        wait_until(answered, timeout=60, what="the table's answers")
        frames = [d.value for d in at.dataframe]
        table = next(f for f in frames if "file_name" in f.columns)
        assert len(table) == 2 and list(table.columns)[2:4] == ["summary", "people"]
        assert str(table["people"].dtype) == "Float64" and table["people"].notna().all()
        assert any("share of yes" in f.columns for f in frames)
        assert at.get("download_button")
    finally:
        engine.shutdown(timeout=5)
