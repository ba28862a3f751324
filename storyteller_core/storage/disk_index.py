"""Indexes on diskcache as one small record per member, so adding a row writes three keys, never a list of them all.

For an index ``name`` (e.g. ``batch:<id>``) and a member id:

    ix:<name>|<seq>      -> member   the members in the order added (seq: 12 digits from one counter)
    im:<name>|<member>   -> seq      where a member is, so it can be removed and looked up in O(1)
    in:<name>            -> count    kept, never recounted

Members are read in key order with one range query on diskcache's (key, raw) index, a page at a time where
asked. Every function must run inside the caller's ``cache.transact()`` when it writes, so an entry, its
reverse key and the count change together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import diskcache
from diskcache.core import MODE_RAW

SEQ = "meta:seq"  # the one counter every index position comes from


def add(cache: diskcache.Cache, name: str, member: str, seq: int | None = None) -> bool:
    """Add ``member`` (no-op if present); True if it was new. ``seq`` places it (another index's position of the
    same member, so a subset lists in the same order); by default it goes last."""
    reverse = f"im:{name}|{member}"
    if cache.get(reverse) is not None:
        return False
    seq = cache.incr(SEQ) if seq is None else seq
    cache.set(f"ix:{name}|{seq:012d}", member)
    cache.set(reverse, seq)
    cache.incr(f"in:{name}")
    return True


def extend(cache: diskcache.Cache, name: str, members: Iterable[str]) -> None:
    for member in members:
        add(cache, name, member)


def remove(cache: diskcache.Cache, name: str, member: str) -> bool:
    """Remove ``member`` if present; True if it was there."""
    reverse = f"im:{name}|{member}"
    seq = cache.get(reverse)
    if seq is None:
        return False
    cache.delete(f"ix:{name}|{int(seq):012d}")
    cache.delete(reverse)
    if cache.decr(f"in:{name}") <= 0:
        cache.delete(f"in:{name}")
    return True


def position(cache: diskcache.Cache, name: str, member: str) -> int | None:
    """The member's place in the index (its seq), or None when it is not a member."""
    seq = cache.get(f"im:{name}|{member}")
    return None if seq is None else int(seq)


def count(cache: diskcache.Cache, name: str) -> int:
    return int(cache.get(f"in:{name}") or 0)


def members(cache: diskcache.Cache, name: str, offset: int = 0, limit: int | None = None) -> list[str]:
    """The members in the order added, from ``offset``, at most ``limit`` of them (all when None)."""
    low, high = f"ix:{name}|", f"ix:{name}}}"  # "}" sorts right after "|": the range is exactly this index
    rows = cache._sql(
        "SELECT value FROM Cache WHERE raw = 1 AND key >= ? AND key < ? ORDER BY key LIMIT ? OFFSET ?",
        (low, high, -1 if limit is None else limit, offset),
    ).fetchall()
    return [str(value) for (value,) in rows]


def merged(cache: diskcache.Cache, index_names: list[str], offset: int = 0, limit: int | None = None) -> list[str]:
    """The members of several indexes whose members share one seq space (see ``add``), in seq order."""
    if len(index_names) == 1:
        return members(cache, index_names[0], offset, limit)
    ranges = " OR ".join("(key >= ? AND key < ?)" for _ in index_names)
    bounds = [bound for name in index_names for bound in (f"ix:{name}|", f"ix:{name}}}")]
    rows = cache._sql(
        f"SELECT value FROM Cache WHERE raw = 1 AND ({ranges}) ORDER BY substr(key, -12) LIMIT ? OFFSET ?",
        (*bounds, -1 if limit is None else limit, offset),
    ).fetchall()
    return [str(value) for (value,) in rows]


def names(cache: diskcache.Cache, prefix: str) -> list[str]:
    """The index names that start with ``prefix`` and have a member (from their kept counts)."""
    low, high = f"in:{prefix}", f"in:{prefix}\U0010ffff"
    rows = cache._sql("SELECT key FROM Cache WHERE raw = 1 AND key >= ? AND key < ? ORDER BY key", (low, high)).fetchall()
    return [str(key)[3:] for (key,) in rows]


# -- many at once: a folder of 50,000 files is listed, or started, in one statement per kind of key -------------
_CHUNK = 900  # keys per IN (...): under SQLite's oldest limit of 999 bound variables


def put_many(cache: diskcache.Cache, pairs: Iterable[tuple[str, str | int]]) -> None:
    """Write many small text or integer values (what ``cache.set`` stores inline, mode raw) in one statement.

    diskcache's own triggers keep its count and size right; run inside the caller's transaction."""
    now = time.time()
    cache._con.executemany(
        "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value)"
        " VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, ?, NULL, ?)"
        " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time, access_time = excluded.access_time,"
        " expire_time = NULL, size = 0, mode = excluded.mode, filename = NULL, value = excluded.value",
        [(key, now, now, MODE_RAW, value) for key, value in pairs],
    )


def positions(cache: diskcache.Cache, name: str, members: list[str]) -> dict[str, int]:
    """{member: seq} for the members of ``members`` that are in the index (one query per 900)."""
    found: dict[str, int] = {}
    prefix = f"im:{name}|"
    for start in range(0, len(members), _CHUNK):
        keys = [prefix + m for m in members[start : start + _CHUNK]]
        rows = cache._sql(f"SELECT key, value FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(keys))})", keys)
        found.update((str(key)[len(prefix) :], int(value)) for key, value in rows.fetchall())
    return found


def add_many(cache: diskcache.Cache, name: str, members: list[str], seqs: list[int] | None = None) -> None:
    """``add`` for many members that are not in the index yet (the caller checked, in this transaction)."""
    if not members:
        return
    if seqs is None:
        last = cache.incr(SEQ, len(members))
        seqs = list(range(last - len(members) + 1, last + 1))
    put_many(
        cache, [pair for m, seq in zip(members, seqs, strict=True) for pair in ((f"ix:{name}|{seq:012d}", m), (f"im:{name}|{m}", seq))]
    )
    cache.incr(f"in:{name}", len(members))


def delete_many(cache: diskcache.Cache, keys: list[str]) -> None:
    """Delete many small inline values by key (inside the caller's transaction)."""
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        cache._sql(f"DELETE FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(chunk))})", chunk)


def remove_many(cache: diskcache.Cache, name: str, members: dict[str, int]) -> None:
    """``remove`` for many members, given their positions (from ``positions``)."""
    if not members:
        return
    delete_many(cache, [key for m, seq in members.items() for key in (f"ix:{name}|{seq:012d}", f"im:{name}|{m}")])
    if cache.decr(f"in:{name}", len(members)) <= 0:
        cache.delete(f"in:{name}")
