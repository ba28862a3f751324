"""Search everything: every finished answer of the library (stories, titles, key moments, people, places, tags,
table answers) and any other text document (collection answers), ranked, each hit with its video and time.

The index is SQLite FTS5 (the standard library's sqlite3) in ``<data dir>/search/index.db``. It is derived from
the job store, never the truth: deleting the file loses nothing, the next sync rebuilds it.

Layout:

    meta(key, value)        the layout's version (a new version rebuilds the index)
    items(item_id, fingerprint, analysis_id, ready, name, seq)
                            one per row of the store as last seen: what the row points at (``ready``: its analysis
                            was COMPLETED, so its answer is indexed), its file name, the order it was seen in
    owners(owner, origin, video_sha256, file_name, fingerprint)
                            one per indexed thing: an analysis id (origin "store") or a document id given to
                            ``index_document`` (origin "doc")
    doc(id, owner, kind, start_s, body)
                            the text, one row per story, title, key moment, person, place, tag or document
    fts                     FTS5 over doc.body (external content, kept in step by triggers), porter stemming over
                            unicode61 with diacritics folded: "cafe" finds "café", "mention" finds "mentions"

Sync rule (``SearchIndex.sync``), run before every search and cheap when nothing changed: every row of the store is
read (items only; one query per 900) and compared with ``items`` by its fingerprint (its analysis, its name,
whether its file is still being checked). A COMPLETED analysis never changes its answer (no transition leaves
COMPLETED), so only the analyses of rows that are new, changed or were not finished at the last sync are read.
An analysis is indexed while at least one row shows it, and its rows vanish with the last such row: removing a
batch removes its rows from the store, and the next sync removes their text. The sync holds the index's write
lock (BEGIN IMMEDIATE) while it reads the store, so two processes syncing at once apply their changes in turn.

Queries: what a person types is split on white space and each piece is searched as a quoted phrase (``"`` doubled
inside), so ``AND``, ``NEAR(``, ``*``, ``-`` and quotes are words or nothing, never FTS5 syntax. A piece with no
letter or digit (``-``, ``*``, an emoji) is left out. Every word must match (in one story, moment, name...); when
none does, any word may (``match="any"`` on the hits). Ranked by bm25.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from storyteller_core.collection.search_answers import Document
from storyteller_core.records.analysis import Analysis, AnalysisState
from storyteller_core.records.batch import Item
from storyteller_core.records.timecode import timestamp
from storyteller_core.storage.datadir import ensure_private_dir
from storyteller_core.storage.store_protocol import Store

VERSION = "2"  # of the layout and of what is indexed: a new value rebuilds the index at the next sync
KINDS = ("story", "title", "moment", "person", "place", "tag", "table", "answer", "citation")
SNIPPET_OPEN, SNIPPET_CLOSE = "«", "»"
SNIPPET_TOKENS = 16
MAX_LIMIT = 1000
_CHUNK = 900
_WORDY = re.compile(r"[^\W_]")  # a letter or a digit: what the unicode61 tokenizer keeps
_LAYOUT = (
    "CREATE TABLE IF NOT EXISTS items(item_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, analysis_id TEXT,"
    " ready INTEGER NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS items_by_analysis ON items(analysis_id, seq)",
    "CREATE TABLE IF NOT EXISTS owners(owner TEXT PRIMARY KEY, origin TEXT NOT NULL, video_sha256 TEXT NOT NULL,"
    " file_name TEXT NOT NULL, fingerprint TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS doc(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, start_s REAL,"
    " body TEXT NOT NULL, video_sha256 TEXT, file_name TEXT)",
    "CREATE INDEX IF NOT EXISTS doc_by_owner ON doc(owner)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body, content='doc', content_rowid='id',"
    " tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS doc_added AFTER INSERT ON doc BEGIN INSERT INTO fts(rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER IF NOT EXISTS doc_removed AFTER DELETE ON doc BEGIN"
    " INSERT INTO fts(fts, rowid, body) VALUES ('delete', old.id, old.body); END",
)


@dataclass(frozen=True)
class Hit:
    file_name: str
    video_sha256: str
    start_s: float | None  # a key moment's time; a story's clip start (0.0 for a whole video); None for a document
    kind: str
    snippet: str
    owner: str = ""  # the analysis id (or document id) the text belongs to
    score: float = 0.0  # bm25: lower is better
    match: str = "all"  # "all" words matched, or "any" (no hit had them all)

    def to_json(self) -> dict[str, Any]:
        """What `search --json` writes for a hit."""
        return {
            "file_name": self.file_name,
            "video_sha256": self.video_sha256,
            "start_s": self.start_s,
            "kind": self.kind,
            "snippet": self.snippet,
        }

    @property
    def time(self) -> str:
        return timestamp(self.start_s) if self.start_s is not None else ""


@dataclass(frozen=True)
class SyncReport:
    rows: int  # rows of the store seen
    rows_read: int  # rows read from the store (new, or not finished at the last sync; every row with full=True)
    rows_changed: int  # rows new, changed or gone since the last sync
    added: int  # analyses indexed now
    removed: int  # analyses removed from the index
    seconds: float


def words_of(terms: str) -> list[str]:
    """The pieces of what a person typed that can be searched: split on white space, each once, in order; a piece
    with no letter or digit (``-``, ``*``, an emoji) is left out."""
    pieces = [p for p in unicodedata.normalize("NFKC", terms).split() if _WORDY.search(p)]
    return list(dict.fromkeys(pieces))


def query_of(terms: str, *, any_word: bool = False) -> str | None:
    """The FTS5 query for what a person typed: each piece a quoted phrase (never FTS5 syntax); None when nothing
    is searchable. Every word must match, or with ``any_word`` any of them."""
    quoted = ['"' + piece.replace('"', '""') + '"' for piece in words_of(terms)]
    return (" OR " if any_word else " ").join(quoted) or None


class SearchIndex:
    """The full-text index of one data dir (see the module's docstring); thread-safe, several processes may share it."""

    def __init__(self, path: Path) -> None:
        ensure_private_dir(path.parent, label="The search index folder")
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        for db_file in path.parent.glob(path.name + "*"):
            db_file.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._write():
            self._create()

    @classmethod
    def of(cls, data_dir: Path) -> SearchIndex:
        return cls(Path(data_dir) / "search" / "index.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layout ---------------------------------------------------------------------------------------
    def _create(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is not None and row[0] != VERSION:
            for name in ("fts", "doc", "owners", "items"):
                db.execute(f"DROP TABLE IF EXISTS {name}")
        for statement in _LAYOUT:  # one by one: executescript would commit the transaction this runs in
            db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('version', ?)", (VERSION,))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start (other processes wait)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- keeping in step with the store -------------------------------------------------------------
    def sync(self, store: Store, *, full: bool = False) -> SyncReport:
        """Bring the index in step with the store's rows (see the module's docstring); what changed.

        Only rows that are new or were not done at the last sync are read; with ``full``, every row is (to catch a
        done row that was changed in a way the store's commands never do)."""
        started = time.perf_counter()
        with self._write() as db:
            ids = store.item_ids()
            listed = set(ids)
            done = {item_id for (item_id,) in db.execute("SELECT item_id FROM items WHERE ready = 1")}
            held = dict(db.execute("SELECT item_id, fingerprint FROM items WHERE ready = 0 OR ?", (int(full),)).fetchall())
            touched: set[str] = set()  # analyses whose rows changed
            gone = [item_id for item_id in done.union(held) if item_id not in listed]
            for chunk in _chunks(gone):
                marks = ",".join("?" * len(chunk))
                touched.update(
                    a for (a,) in db.execute(f"SELECT analysis_id FROM items WHERE item_id IN ({marks}) AND analysis_id IS NOT NULL", chunk)
                )
                db.execute(f"DELETE FROM items WHERE item_id IN ({marks})", chunk)
            # a done row shows the same COMPLETED answer for good: only new rows and unfinished ones are read
            items = store.many(Item, ids if full else [i for i in ids if i not in done])
            analyses = store.by_id(Analysis, {item.analysis_id for item in items if item.analysis_id})
            seq = (db.execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()[0] or 0) + 1
            changed = 0
            for item in items:
                analysis = analyses.get(item.analysis_id or "")
                ready = int(analysis is not None and analysis.state is AnalysisState.COMPLETED)
                fingerprint = _fingerprint(item)
                if held.get(item.id) == fingerprint and (item.id in done) == bool(ready):
                    continue  # as it was: still unfinished (or, with full, still done), and unchanged
                changed += 1
                old = db.execute("SELECT analysis_id FROM items WHERE item_id = ?", (item.id,)).fetchone()
                if old and old[0]:
                    touched.add(old[0])
                if ready and item.analysis_id:
                    touched.add(item.analysis_id)
                db.execute(
                    "INSERT INTO items(item_id, fingerprint, analysis_id, ready, name, seq) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(item_id) DO UPDATE SET fingerprint = excluded.fingerprint, "
                    "analysis_id = excluded.analysis_id, ready = excluded.ready, name = excluded.name",
                    (item.id, fingerprint, item.analysis_id if ready else None, ready, item.display_name, seq),
                )
                seq += 1
            added, removed = self._reconcile_owners(db, store, touched, analyses)
        return SyncReport(
            rows=len(ids),
            rows_read=len(items),
            rows_changed=changed + len(gone),
            added=added,
            removed=removed,
            seconds=time.perf_counter() - started,
        )

    def _reconcile_owners(self, db: sqlite3.Connection, store: Store, analysis_ids: set[str], read: dict[str, Analysis]) -> tuple[int, int]:
        """Index the analyses some ready row shows and that are not indexed yet; drop those no row shows any more."""
        added = removed = 0
        missing: list[str] = []
        for analysis_id in sorted(analysis_ids):
            shown = db.execute("SELECT name FROM items WHERE analysis_id = ? ORDER BY seq LIMIT 1", (analysis_id,)).fetchone()
            indexed = db.execute("SELECT fingerprint FROM owners WHERE owner = ? AND origin = 'store'", (analysis_id,)).fetchone()
            if shown is None:
                if indexed is not None:
                    self._drop_owner(db, analysis_id)
                    removed += 1
                continue
            db.execute("UPDATE owners SET file_name = ? WHERE owner = ?", (shown[0], analysis_id))
            if indexed is None and analysis_id not in read:
                missing.append(analysis_id)
        read = {**read, **store.by_id(Analysis, missing)}
        for analysis_id in sorted(analysis_ids):
            analysis = read.get(analysis_id)
            if analysis is None or analysis.state is not AnalysisState.COMPLETED:
                continue
            shown = db.execute("SELECT name FROM items WHERE analysis_id = ? ORDER BY seq LIMIT 1", (analysis_id,)).fetchone()
            if shown is None:
                continue
            fingerprint = _answer_fingerprint(analysis)
            indexed = db.execute("SELECT fingerprint FROM owners WHERE owner = ?", (analysis_id,)).fetchone()
            if indexed is not None and indexed[0] == fingerprint:
                continue
            if indexed is not None:
                self._drop_owner(db, analysis_id)
            self._add_owner(db, analysis_id, "store", analysis.video_id, shown[0], fingerprint, documents_of(analysis))
            added += 1
        return added, removed

    def rebuild(self, store: Store) -> SyncReport:
        """Forget everything the store put in and index it all again (documents given by ``index_document`` stay)."""
        with self._write() as db:
            db.execute("DELETE FROM items")
            for (owner,) in db.execute("SELECT owner FROM owners WHERE origin = 'store'").fetchall():
                self._drop_owner(db, owner)
        return self.sync(store)

    # -- other documents (collection answers) -----------------------------------------------------
    def index_document(
        self, doc_id: str, documents: Iterable[Document], *, video_sha256: str = "", file_name: str = "", kind: str = "answer"
    ) -> None:
        """Index (or replace) the text of ``doc_id``: e.g. a collection answer and its citations, each with the
        video and the time it points at. It stays until ``remove_document``; the store's sync never touches it."""
        with self._write() as db:
            self._put_document(db, doc_id, list(documents), video_sha256, file_name, kind)

    def sync_documents(self, prefix: str, documents: Mapping[str, Iterable[Document]]) -> tuple[int, int]:
        """Make the documents whose ids start with ``prefix`` exactly ``documents`` ({id: its texts}): new or changed
        ones (re)indexed, the others with that prefix removed; (indexed, removed). Unchanged ones cost a comparison:
        a source of documents (the collection answers) can be reconciled at every search."""
        if not prefix:
            raise ValueError("give the documents' id prefix (e.g. 'ask:'), so other documents are left alone")
        added = removed = 0
        with self._write() as db:
            held = [
                owner
                for (owner,) in db.execute(
                    "SELECT owner FROM owners WHERE origin = 'doc' AND substr(owner, 1, ?) = ?", (len(prefix), prefix)
                )
            ]
            for owner in held:
                if owner not in documents:
                    self._drop_owner(db, owner)
                    removed += 1
            for doc_id, docs in documents.items():
                if not doc_id.startswith(prefix):
                    raise ValueError(f"the document id {doc_id!r} does not start with {prefix!r}")
                added += self._put_document(db, doc_id, list(docs), "", "", "answer")
        return added, removed

    def _put_document(
        self, db: sqlite3.Connection, doc_id: str, documents: list[Document], video_sha256: str, file_name: str, kind: str
    ) -> bool:
        docs = [d if d.kind else Document(kind, d.body, d.start_s, d.video_sha256, d.file_name) for d in documents]
        fingerprint = json.dumps([asdict(d) for d in docs] + [video_sha256, file_name], ensure_ascii=False, sort_keys=True)
        held = db.execute("SELECT fingerprint, origin FROM owners WHERE owner = ?", (doc_id,)).fetchone()
        if held is not None and held[1] == "store":
            raise ValueError(f"{doc_id!r} names an analysis of the store: give documents ids of their own")
        if held is not None and held[0] == fingerprint:
            return False
        if held is not None:
            self._drop_owner(db, doc_id)
        self._add_owner(db, doc_id, "doc", video_sha256, file_name, fingerprint, docs)
        return True

    def remove_document(self, doc_id: str) -> bool:
        """Forget a document given to ``index_document``; False when it was not indexed."""
        with self._write() as db:
            held = db.execute("SELECT 1 FROM owners WHERE owner = ? AND origin = 'doc'", (doc_id,)).fetchone()
            if held is None:
                return False
            self._drop_owner(db, doc_id)
            return True

    @staticmethod
    def _add_owner(
        db: sqlite3.Connection, owner: str, origin: str, video_sha256: str, file_name: str, fingerprint: str, documents: Iterable[Document]
    ) -> None:
        db.execute(
            "INSERT INTO owners(owner, origin, video_sha256, file_name, fingerprint) VALUES (?, ?, ?, ?, ?)",
            (owner, origin, video_sha256, file_name, fingerprint),
        )
        db.executemany(
            "INSERT INTO doc(owner, kind, start_s, body, video_sha256, file_name) VALUES (?, ?, ?, ?, ?, ?)",
            [(owner, d.kind, d.start_s, d.body, d.video_sha256, d.file_name) for d in documents if d.body.strip()],
        )

    @staticmethod
    def _drop_owner(db: sqlite3.Connection, owner: str) -> None:
        db.execute("DELETE FROM doc WHERE owner = ?", (owner,))
        db.execute("DELETE FROM owners WHERE owner = ?", (owner,))

    # -- searching ----------------------------------------------------------------------------------
    def search(self, terms: str, *, limit: int = 20, kinds: Iterable[str] | None = None) -> list[Hit]:
        """The best hits for what a person typed (searched as words, see ``query_of``), best first."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        wanted = [k for k in (kinds or ()) if k in KINDS]
        words = len(words_of(terms))
        if not words:
            return []
        hits = self._hits(query_of(terms) or "", limit, wanted, "all")
        if hits or words == 1:
            return hits
        return self._hits(query_of(terms, any_word=True) or "", limit, wanted, "any")  # no text has them all

    def _hits(self, query: str, limit: int, kinds: list[str], match: str) -> list[Hit]:
        """Ranked in two steps: the best ``limit`` text ids by bm25 (the cost grows with the matches), then the snippet
        and video of those only (a snippet for every match would cost as much again)."""
        if kinds:
            ranked_sql = (
                "SELECT fts.rowid, bm25(fts) AS score FROM fts JOIN doc ON doc.id = fts.rowid "
                f"WHERE fts MATCH ? AND doc.kind IN ({','.join('?' * len(kinds))}) ORDER BY score LIMIT ?"
            )
        else:
            ranked_sql = "SELECT rowid, bm25(fts) AS score FROM fts WHERE fts MATCH ? ORDER BY score LIMIT ?"
        with self._lock:
            ranked = self._db.execute(ranked_sql, (query, *kinds, limit)).fetchall()
            if not ranked:
                return []
            marks = ",".join("?" * len(ranked))
            ids = [rowid for rowid, _ in ranked]
            snippets = dict(
                self._db.execute(
                    f"SELECT rowid, snippet(fts, 0, ?, ?, '…', {SNIPPET_TOKENS}) FROM fts WHERE fts MATCH ? AND rowid IN ({marks})",
                    (SNIPPET_OPEN, SNIPPET_CLOSE, query, *ids),
                ).fetchall()
            )
            about = {
                row[0]: row[1:]
                for row in self._db.execute(
                    "SELECT doc.id, COALESCE(doc.file_name, owners.file_name), COALESCE(doc.video_sha256, owners.video_sha256), "
                    f"doc.start_s, doc.kind, doc.owner FROM doc JOIN owners ON owners.owner = doc.owner WHERE doc.id IN ({marks})",
                    ids,
                ).fetchall()
            }
        hits = []
        for rowid, score in ranked:
            if rowid not in about:
                continue
            name, sha, start, kind, owner = about[rowid]
            hits.append(
                Hit(
                    file_name=name,
                    video_sha256=sha,
                    start_s=start,
                    kind=kind,
                    snippet=" ".join(str(snippets.get(rowid, "")).split()),
                    owner=owner,
                    score=float(score),
                    match=match,
                )
            )
        return hits

    def counts(self) -> dict[str, int]:
        """How much is indexed: rows seen, analyses and documents, text rows."""
        with self._lock:
            db = self._db
            return {
                "rows": db.execute("SELECT COUNT(*) FROM items").fetchone()[0],
                "analyses": db.execute("SELECT COUNT(*) FROM owners WHERE origin = 'store'").fetchone()[0],
                "documents": db.execute("SELECT COUNT(*) FROM owners WHERE origin = 'doc'").fetchone()[0],
                "texts": db.execute("SELECT COUNT(*) FROM doc").fetchone()[0],
            }


def search_library(store: Store, data_dir: Path, terms: str, *, limit: int = 20, kinds: Iterable[str] | None = None) -> list[Hit]:
    """Bring the data dir's index in step (``sync_all``), then search it (what the CLI and the page call)."""
    with SearchIndex.of(data_dir) as index:
        sync_all(index, store, data_dir)
        return index.search(terms, limit=limit, kinds=kinds)


def sync_all(index: SearchIndex, store: Store, data_dir: Path) -> SyncReport:
    """Everything searchable in step: the store's answers, then the collection answers (search_answers.py)."""
    from storyteller_core.collection.search_answers import PREFIX, answer_documents

    report = index.sync(store)
    index.sync_documents(PREFIX, answer_documents(data_dir))
    return report


def documents_of(analysis: Analysis) -> list[Document]:
    """The texts one finished answer is found by: the story (at the clip's start), its title, each key moment at
    its time, each person, place and tag; a table answer (a custom schema's) as one text of its values."""
    start = float(analysis.options.get("start_s") or 0.0)
    answer = getattr(analysis, "answer", None)
    if isinstance(answer, dict) and answer:
        return [Document("table", "\n".join(f"{key}: {_flat(value)}" for key, value in answer.items()), start)]
    structured = analysis.structured or {}
    docs = [Document("story", analysis.story or structured.get("story") or "", start)]
    if structured.get("title"):
        docs.append(Document("title", str(structured["title"]), start))
    for moment in structured.get("key_moments") or []:
        try:
            at = float(moment["seconds"])
        except (KeyError, TypeError, ValueError):
            continue
        docs.append(Document("moment", str(moment.get("description") or ""), at))
    for kind, key in (("person", "people"), ("place", "places"), ("tag", "tags")):
        docs += [Document(kind, str(value), start) for value in structured.get(key) or [] if str(value).strip()]
    return docs


def _flat(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k} {_flat(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _fingerprint(item: Item) -> str:
    """What of a row the index depends on: the analysis it shows, its name, whether its file is still being checked."""
    return f"{item.analysis_id or ''}\x1f{int(item.intake is not None)}\x1f{item.display_name}"


def _answer_fingerprint(analysis: Analysis) -> str:
    """Changes when the answer does (a COMPLETED answer never should: this guards the rule, cheaply)."""
    text = analysis.story or ""
    return f"{VERSION}|{analysis.completed_at}|{len(text)}|{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
