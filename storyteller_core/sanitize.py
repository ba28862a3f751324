"""Untrusted text (file names, stories, error messages) made safe for where it goes.

Spreadsheets: a cell that starts like a formula is prefixed with ``'`` (OWASP CSV Injection).
Terminals: escape sequences and control characters are removed.
Logs: registered secrets are replaced with ``***``.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# = + - @ and their full-width and small forms; TAB and CR.
_FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b")


def spreadsheet_cell(text: str) -> str:
    """Prefix ``'`` when Excel, LibreOffice or Sheets could read ``text`` as a formula.

    A CR becomes LF as well: Python's csv writer (3.11) leaves a cell with a lone CR unquoted, and the
    spreadsheet then starts a new row there, whose first cell could be a formula. A cell with LF is quoted.
    """
    text = plain_text(text)
    if not text:
        return text
    formula = text[0] in _FORMULA_START or text.lstrip()[:1] in _FORMULA_START
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "'" + text if formula else text


def neutralize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells went through :func:`spreadsheet_cell`; numbers are untouched."""
    from pandas.api import types  # lazy: the CLI must start fast

    out = frame.copy()
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if types.is_numeric_dtype(column.dtype) or types.is_bool_dtype(column.dtype) or types.is_datetime64_any_dtype(column.dtype):
            continue
        if isinstance(column.dtype, types.CategoricalDtype):
            column = column.astype(object)
        elif not (types.is_object_dtype(column.dtype) or types.is_string_dtype(column.dtype)):
            continue
        out.isetitem(position, column.map(lambda v: spreadsheet_cell(v) if isinstance(v, str) else v))
    return out


_ESCAPE_SEQUENCE = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?          # CSI: colours, cursor moves, clear screen
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) .*? (?:\x07|\x1b\\|\x9c|$)  # OSC (titles, hyperlinks), DCS, SOS, PM, APC
    | \x1b [\x20-\x2f]* [\x30-\x7e]?                                 # any other ESC code (reset, charset, keypad)
    """,
    re.VERBOSE | re.DOTALL,
)
# C0 except TAB and LF (handled below), DEL, C1, and the bidi embeddings/overrides/isolates that reorder what is shown.
# U+202E shows "exe.txt" as "txt.exe"; the marks (LRM, RLM, ALM) reorder neighbouring text too.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_LINE_BREAK = re.compile("\r\n|\r|\u2028|\u2029")


def terminal_text(text: str, *, one_line: bool = True) -> str:
    """``text`` with nothing a terminal would act on: no escape sequences, no control characters."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = _LINE_BREAK.sub("\n", text)
    text = _CONTROL.sub("", text)
    if one_line:
        text = text.replace("\n", " ").replace("\t", " ")
    return text


def plain_text(text: str) -> str:
    """``text`` for a file or a page: escape sequences, control and bidi characters removed; lines and tabs kept.

    Exports (CSV, JSON, Markdown) and the copy text call this: what leaves us must show what it says.
    """
    return terminal_text(text, one_line=False)


def plain_data(value: Any) -> Any:
    """Every string inside ``value`` (dicts, lists) through :func:`plain_text`, for a JSON export."""
    if isinstance(value, str):
        return plain_text(value)
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Make sure ``value`` (an API key) is never written to any log line."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first, so no fragment survives)."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text
