"""Search everything (issue 21 item 3): stories and key moments found with their video and time, what a person types
searched as words, the index in step with the store (new answers found, removed batches forgotten)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storyteller_core.collection.search import Document, SearchIndex, query_of, search_library, words_of
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.story import Moment, Story
from storyteller_core.records.video import Video
from storyteller_core.settings import PROMPT_PRESETS
from storyteller_core.storage.disk_store import DiskStore

from .helpers import ask, cli_env, run_all, run_cli


def _story_row(
    store: DiskStore,
    n: int,
    story: Story,
    *,
    batch_id: str = "20261202-000000-test",
    name: str | None = None,
    state: AnalysisState = AnalysisState.COMPLETED,
) -> Item:
    """A row of ``batch_id`` whose analysis holds ``story`` (written straight to the store: no Gemini involved)."""
    sha = f"{n:064x}"
    store.add_video(Video(id=sha, sha256=sha, display_name=name or f"clip-{n}.mp4", sources=[f"/v/{n}.mp4"]))
    done = state is AnalysisState.COMPLETED
    store.add_analysis(
        Analysis(
            id=f"{n:032x}",
            video_id=sha,
            model="m",
            prompt="Tell",
            backend="b",
            state=state,
            story=story.text if done else None,
            structured=story.to_dict() if done else None,
        )
    )
    store.add_batch(Batch(id=batch_id, name=batch_id))
    return store.add_item(
        Item(
            id=f"item-{batch_id[-4:]}-{n}",
            batch_id=batch_id,
            display_name=name or f"clip-{n}.mp4",
            source_path=f"/v/{n}.mp4",
            video_id=sha,
            analysis_id=f"{n:032x}",
        )
    )


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = DiskStore(tmp_path / "store")
    yield opened
    opened.close()


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    with SearchIndex.of(tmp_path) as opened:
        yield opened


HARBOUR = Story(
    text="A fishing boat comes into the harbour at dawn. The café owner talks about pricing AND near-misses.",
    title="Morning at the harbour",
    people=["Marta, the café owner"],
    places=["Porto harbour"],
    tags=["fishing"],
    moments=[
        Moment(0.0, "The boat rounds the breakwater"),
        Moment(42.0, "Marta counts the crates of sardines"),
        Moment(75.5, "A crowd gathers at night by the NEAR(est) lamp"),
    ],
)


# -- what a person types is searched as words -----------------------------------------------------------------
@pytest.mark.parametrize(
    "typed, words",
    [
        ('"', []),
        ("*", []),
        ("-", []),
        ("NEAR(", ["NEAR("]),
        ("AND", ["AND"]),
        ("a AND b", ["a", "AND", "b"]),
        ('sardines" OR "boat', ['sardines"', "OR", '"boat']),
        ("-crates", ["-crates"]),
        ("café ñandú 東京", ["café", "ñandú", "東京"]),
        ("ＦＵＬＬ", ["FULL"]),
        ("x x x", ["x"]),
        ("   ", []),
        ("🎉 ok", ["ok"]),
    ],
)
def test_what_a_person_types_becomes_quoted_words(typed: str, words: list[str]) -> None:
    assert words_of(typed) == words
    query = query_of(typed)
    if not words:
        assert query is None
        return
    assert query == " ".join('"' + w.replace('"', '""') + '"' for w in words)


@pytest.mark.parametrize(
    "typed",
    [
        '"',
        "*",
        "NEAR(",
        "-",
        "AND",
        "OR",
        "NOT",
        "(",
        ")",
        "^",
        ":",
        "body:",
        "sardine*",
        '"unbalanced',
        "NEAR(a b, 2)",
        "a -b",
        "{body}: x",
        "café",
        "\x00",
        "'; DROP TABLE doc; --",
    ],
)
def test_no_input_is_parsed_as_query_syntax(store: DiskStore, index: SearchIndex, typed: str) -> None:
    _story_row(store, 1, HARBOUR)
    index.sync(store)
    index.search(typed)  # never an FTS5 syntax error, whatever was typed
    assert index.search("harbour")  # and the index is intact afterwards


def test_operators_are_words_that_match_themselves(store: DiskStore, index: SearchIndex) -> None:
    _story_row(store, 1, HARBOUR)
    _story_row(store, 2, Story(text="Pricing is discussed without the conjunction.", title="Other"))
    index.sync(store)
    both = {h.video_sha256 for h in index.search("pricing")}
    assert both == {f"{1:064x}", f"{2:064x}"}
    # "AND" is the word "and": only the story that has it matches all the words
    assert {h.video_sha256 for h in index.search("pricing AND")} == {f"{1:064x}"}
    [near] = index.search("NEAR(est)")
    assert near.kind == "moment" and near.start_s == 75.5
    assert [h.kind for h in index.search('"crates"')] == ["moment"]  # quotes typed are not a phrase operator
    assert index.search("-crates")[0].start_s == 42.0  # a leading minus is not NOT
    assert index.search("cafe")  # diacritics folded: cafe finds café
    assert index.search("sardine")[0].start_s == 42.0  # and stems: sardine finds sardines


def test_all_words_first_then_any(store: DiskStore, index: SearchIndex) -> None:
    _story_row(store, 1, HARBOUR)
    index.sync(store)
    assert all(h.match == "all" for h in index.search("boat harbour"))
    hits = index.search("boat zeppelin")
    assert hits and all(h.match == "any" for h in hits)
    assert index.search("zeppelin") == []


def test_each_hit_names_its_video_time_and_kind(store: DiskStore, index: SearchIndex) -> None:
    _story_row(store, 7, HARBOUR, name="harbour ☀.mp4")
    index.sync(store)
    kinds = {h.kind: h for h in index.search("Marta")}
    assert set(kinds) == {"person", "moment"}
    assert kinds["moment"].start_s == 42.0 and kinds["person"].start_s == 0.0
    assert all(h.file_name == "harbour ☀.mp4" and h.video_sha256 == f"{7:064x}" for h in kinds.values())
    assert "«Marta»" in kinds["moment"].snippet
    assert [h.kind for h in index.search("Porto")] == ["place"]
    assert [h.kind for h in index.search("fishing", kinds=["tag"])] == ["tag"]
    assert index.search("dawn")[0].kind == "story"
    assert index.search("morning")[0].kind == "title"


# -- in step with the store -------------------------------------------------------------------------------
def test_sync_touches_only_what_changed_and_forgets_removed_rows(store: DiskStore, index: SearchIndex) -> None:
    rows = [_story_row(store, n, Story(text=f"Story number {n} about lighthouses.", title=f"T{n}")) for n in range(5)]
    waiting = _story_row(store, 9, Story(text="Unwritten"), state=AnalysisState.WAITING)
    first = index.sync(store)
    assert (first.rows, first.added, first.removed) == (6, 5, 0)
    assert len(index.search("lighthouses")) == 5
    again = index.sync(store)
    assert (again.rows_read, again.rows_changed, again.added, again.removed) == (1, 0, 0, 0)  # only the unfinished row

    store.transition(Analysis, waiting.analysis_id or "", AnalysisState.ANALYZING)
    store.transition(Analysis, waiting.analysis_id or "", AnalysisState.COMPLETED, story="Now about zebras.")
    assert index.search("zebras") == []  # not until the next sync: search_library syncs first
    assert index.sync(store).added == 1
    assert index.search("zebras")[0].video_sha256 == f"{9:064x}"

    store.delete_item(rows[0].id)
    report = index.sync(store)
    assert (report.removed, report.rows_changed) == (1, 1)
    assert len(index.search("lighthouses")) == 4
    assert index.counts()["analyses"] == 5
    assert index.sync(store, full=True).rows_changed == 0  # the quick rule missed nothing


def test_a_full_sync_catches_a_done_row_moved_to_another_answer(store: DiskStore, index: SearchIndex) -> None:
    row = _story_row(store, 1, Story(text="About owls."))
    _story_row(store, 2, Story(text="About foxes."), batch_id="20261202-000001-othr")
    index.sync(store)
    store.move_item(row.id, f"{2:032x}")  # Retry does this to unfinished rows only; a full sync catches it anyway
    assert index.sync(store).rows_changed == 0  # the quick rule reads no done row
    report = index.sync(store, full=True)
    assert (report.rows_changed, report.removed) == (1, 1)
    assert index.search("owls") == [] and {h.file_name for h in index.search("foxes")} == {"clip-1.mp4"}


def test_an_answer_shared_by_two_batches_stays_until_both_are_removed(store: DiskStore, index: SearchIndex) -> None:
    first = _story_row(store, 1, HARBOUR, batch_id="20261202-000000-aaaa", name="first name.mp4")
    second = store.add_item(
        Item(
            id="item-copy",
            batch_id="20261202-000001-bbbb",
            display_name="second name.mp4",
            source_path="/v/copy.mp4",
            video_id=first.video_id,
            analysis_id=first.analysis_id,
        )
    )
    store.add_batch(Batch(id="20261202-000001-bbbb", name="b"))
    index.sync(store)
    assert {h.file_name for h in index.search("sardines")} == {"first name.mp4"}  # one answer, shown once
    store.delete_item(first.id)
    index.sync(store)
    assert {h.file_name for h in index.search("sardines")} == {"second name.mp4"}
    store.delete_item(second.id)
    index.sync(store)
    assert index.search("sardines") == [] and index.counts()["texts"] == 0


def test_documents_are_indexed_and_removed_on_their_own(store: DiskStore, index: SearchIndex) -> None:
    _story_row(store, 1, HARBOUR)
    index.sync(store)
    index.index_document(
        "ask:q1",
        [
            Document("answer", "Three interviews mention the pricing of season tickets.", None),
            Document("citation", "Marta names the ticket price", 42.0),
        ],
        video_sha256=f"{1:064x}",
        file_name="clip-1.mp4",
    )
    kinds = {h.kind: h for h in index.search("ticket")}
    assert set(kinds) == {"answer", "citation"} and kinds["citation"].start_s == 42.0
    index.sync(store)  # the store's sync leaves documents alone
    assert index.search("tickets")
    assert index.remove_document("ask:q1") and not index.remove_document("ask:q1")
    assert index.search("tickets") == []
    with pytest.raises(ValueError, match="analysis"):
        index.index_document(f"{1:032x}", [Document("answer", "x")])


def test_a_family_of_documents_is_reconciled_by_its_prefix(store: DiskStore, index: SearchIndex) -> None:
    index.index_document("other:1", [Document("answer", "kept apart from the family")])
    assert index.sync_documents("ask:", {"ask:a": [Document("answer", "alpha words")], "ask:b": [Document("answer", "beta words")]}) == (
        2,
        0,
    )
    assert index.sync_documents("ask:", {"ask:a": [Document("answer", "alpha words")], "ask:b": [Document("answer", "beta words")]}) == (
        0,
        0,
    )  # unchanged: untouched
    assert index.sync_documents("ask:", {"ask:b": [Document("answer", "beta words, changed")]}) == (1, 1)
    assert [h.snippet for h in index.search("words")] == ["beta «words», changed"]
    assert index.search("apart")  # another family is left alone
    with pytest.raises(ValueError, match="prefix"):
        index.sync_documents("", {})


def test_collection_answers_are_found_only_where_the_footage_supports_them(tmp_path: Path, store: DiskStore) -> None:
    from storyteller_core.collection.answers_store import AnswerStore

    _story_row(store, 1, HARBOUR)
    assert search_library(store, tmp_path, "pricing")  # nothing asked yet: no answers folder is made
    assert not (tmp_path / "collection").exists()
    sha = f"{1:064x}"
    cite = {"claim": "", "video_label": "V1", "file_name": "clip-1.mp4", "video_sha256": sha, "quote": "a crate count"}
    record = {
        "question": "Which interviews discuss sardine quotas?",
        "answer": "One does.",
        "claims": [
            {"text": "Marta discusses quotas at the market", "citations": [0]},
            {"text": "A zeppelin lands on the pier", "citations": [1]},
            {"text": "Gulls protest the quotas", "citations": [2]},
        ],
        "citations": [
            {**cite, "start_s": 40.0, "end_s": 44.0},
            {**cite, "start_s": 70.0, "end_s": 80.0},
            {**cite, "start_s": 1.0, "end_s": 2.0},
        ],
    }
    with AnswerStore(tmp_path) as answers:
        answers.put("k1", record)
        answers.put_check("k1", 0, {"status": "corrected", "corrected_start_s": 41.5, "corrected_end_s": 43.0})
        answers.put_check("k1", 1, {"status": "unsupported"})
        # citation 2 is not checked yet
    [question] = search_library(store, tmp_path, "sardine quotas", kinds=["answer"])[:1]
    assert question.video_sha256 == "" and question.start_s is None and "sardine" in question.snippet.lower()
    [claim] = [h for h in search_library(store, tmp_path, "Marta quotas") if h.kind == "answer"]
    assert (claim.video_sha256, claim.file_name, claim.start_s) == (sha, "clip-1.mp4", 41.5)  # at the corrected time
    assert search_library(store, tmp_path, "zeppelin") == []  # unsupported: never found as fact
    assert search_library(store, tmp_path, "gulls") == []  # not checked yet
    with AnswerStore(tmp_path) as answers:
        answers.put_check("k1", 2, {"status": "confirmed"})
    assert search_library(store, tmp_path, "gulls")[0].start_s == 1.0
    with AnswerStore(tmp_path) as answers:
        answers.delete("k1")
    assert search_library(store, tmp_path, "quotas") == []


def test_two_indexes_on_one_file_sync_at_once_without_losing_or_doubling(tmp_path: Path, store: DiskStore) -> None:
    import threading

    for n in range(30):
        _story_row(store, n, Story(text=f"Story {n} about lighthouses.", title=f"T{n}"))
    problems: list[BaseException] = []

    def work(index: SearchIndex) -> None:
        try:
            for _ in range(5):
                index.sync(store)
                index.search("lighthouses")
        except BaseException as exc:  # noqa: BLE001 - reported below
            problems.append(exc)

    indexes = [SearchIndex.of(tmp_path), SearchIndex.of(tmp_path)]  # as the app and the CLI would, each its own
    threads = [threading.Thread(target=work, args=(index,)) for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not problems, problems
    assert indexes[0].counts() == {"rows": 30, "analyses": 30, "documents": 0, "texts": 60}
    assert len(indexes[1].search("lighthouses", limit=100)) == 30
    for index in indexes:
        index.close()


def test_a_deleted_index_is_rebuilt_from_the_store(tmp_path: Path, store: DiskStore) -> None:
    _story_row(store, 1, HARBOUR)
    assert search_library(store, tmp_path, "sardines")
    for path in (tmp_path / "search").iterdir():
        path.unlink()
    assert search_library(store, tmp_path, "sardines")[0].start_s == 42.0


# -- end to end: real SDK against the emulator ----------------------------------------------------------------
def test_search_finds_a_word_of_a_story_and_of_a_key_moment_with_its_time(make_engine, videos, one_video) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    long_ones = [one_video(f"long-{n}.mp4", seed=n, seconds=6.0) for n in range(3)]  # moments at 0, 2 and 4 s
    rows = run_all(engine, long_ones, PROMPT_PRESETS["Story"], preset="Story")
    assert all(row.story for row in rows)
    data_dir = engine.settings.data_dir

    hits = search_library(engine.store, data_dir, "encoded")  # a word of every demo story's prose
    assert {h.video_sha256 for h in hits if h.kind == "story"} == {row.video.sha256 for row in rows}
    assert {h.file_name for h in hits} == {row.name for row in rows}

    moment_hits = [h for h in search_library(engine.store, data_dir, "last look", limit=50) if h.kind == "moment"]
    assert len(moment_hits) == 3
    for hit in moment_hits:  # each at the time the stored moment says
        [row] = [r for r in rows if r.video.sha256 == hit.video_sha256]
        [moment] = [m for m in row.analysis.structured["key_moments"] if "last look" in m["description"]]
        assert hit.start_s == moment["seconds"] and hit.start_s > 0

    # a new answer is found once stored; a removed batch is forgotten
    more = run_all(engine, videos[3:4], "Describe the lighting")  # plain prose (no structure): one story text
    assert search_library(engine.store, data_dir, "lighting")[0].video_sha256 == more[0].video.sha256
    for row in rows:
        engine.commands.remove(row.item.id)
    assert {h.video_sha256 for h in search_library(engine.store, data_dir, "encoded")} == {more[0].video.sha256}
    assert search_library(engine.store, data_dir, "last look") == []


def test_the_search_command_prints_and_writes_hits(tmp_path: Path, emulator, videos) -> None:  # type: ignore[no-untyped-def]
    env = cli_env(tmp_path / "data", emulator.base_url)
    evil = videos[0].with_name("evil\x1b[31mred\x07.mp4")
    videos[0].rename(evil)
    done = run_cli(["process", "--preset", "Story", str(evil), str(videos[1])], env)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "hits.json"
    found = run_cli(["search", "last look", "--json", str(out), "--limit", "5"], env)
    assert found.returncode == 0, found.stderr
    assert "\x1b" not in found.stdout and "\x07" not in found.stdout
    hits = json.loads(out.read_text(encoding="utf-8"))
    assert 1 <= len(hits) <= 5
    assert all(set(h) == {"file_name", "video_sha256", "start_s", "kind", "snippet"} for h in hits)
    assert {h["kind"] for h in hits} == {"moment"} and all(len(h["video_sha256"]) == 64 for h in hits)
    assert all(isinstance(h["start_s"], float) for h in hits)
    assert all("\x1b" not in h["file_name"] for h in hits)

    syntax = run_cli(["search", 'NEAR( "AND" * -', "--json", str(out)], env)
    assert syntax.returncode in (0, 1) and "error" not in syntax.stderr, syntax.stderr
    nothing = run_cli(["search", "zeppelinorium"], env)
    assert nothing.returncode == 1 and "No story" in nothing.stdout
    empty = run_cli(["search", "* -"], env)
    assert empty.returncode == 2 and "nothing to search for" in empty.stderr


def test_a_row_asked_again_is_found_once_per_answer(make_engine, videos) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    [row] = run_all(engine, videos[:1], "Tell the story")
    again = engine.commands.analyze_again([row.item.id], ask(engine, "Tell the story"))
    engine.wait([i.id for i in again])
    hits = search_library(engine.store, engine.settings.data_dir, "encoded")
    assert len(hits) == 1 and hits[0].kind == "story" and hits[0].start_s == 0.0


def test_the_search_command_imports_neither_the_engine_nor_the_sdk(tmp_path: Path) -> None:
    import subprocess
    import sys

    from .helpers import ROOT

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "storyteller_core", "search", "anything"],
        env=cli_env(tmp_path / "data"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and "No story" in done.stdout, done.stdout + done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {"google.genai", "pandas", "av", "storyteller_core.engine", "streamlit"} & imported
