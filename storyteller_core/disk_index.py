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

from collections.abc import Iterable

import diskcache

_SEQ = "meta:seq"


def add(cache: diskcache.Cache, name: str, member: str, seq: int | None = None) -> bool:
    """Add ``member`` (no-op if present); True if it was new. ``seq`` places it (another index's position of the
    same member, so a subset lists in the same order); by default it goes last."""
    reverse = f"im:{name}|{member}"
    if cache.get(reverse) is not None:
        return False
    seq = cache.incr(_SEQ) if seq is None else seq
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
