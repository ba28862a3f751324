"""One table from many videos: the analyst's fields, one structured answer per video, a typed table with summaries.

The fields (name, type, optional instruction) become one JSON schema and one prompt (``table_ask``); each video of
a batch is asked that question through the normal analysis path (``Commands.analyze_again``): an answer already
given is reused at no cost, identical questions in flight are one call, each is estimated and priced like any
analysis. Because the schema and the prompt are made only from the fields, the same fields over the same videos
are the same analyses: building the table again costs nothing.

Types: ``text`` (a string), ``number`` (a number, or null when the video does not show it), ``yes/no`` (true or
false), ``span`` (a start and an end, MM:SS from the start of the video, or null), ``list`` (a list of short
strings). A value of the wrong type is left empty and counted as a problem of its row, never guessed at. A span
that does not fit inside the video is left out and counted (never shown as real); a span inside it is "unchecked"
until a span checker (the citation checker of issue 21 item 1) looks at that clip: pass ``check_span``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storyteller_core.records.analysis import Analysis, AnalysisState, analysis_key
from storyteller_core.records.batch import Batch, Item
from storyteller_core.records.options import VideoOptions
from storyteller_core.records.timecode import seconds_of, timestamp
from storyteller_core.records.video import Video
from storyteller_core.sanitize import neutralize_frame, plain_data
from storyteller_core.settings import estimate_cost
from storyteller_core.storage.store_protocol import Store

if TYPE_CHECKING:
    import pandas as pd

    from storyteller_core.commands import Commands

TYPES = ("text", "number", "yes/no", "span", "list")
_TYPE_ALIASES = {
    "yes/no": "yes/no",
    "yesno": "yes/no",
    "yes-no": "yes/no",
    "bool": "yes/no",
    "boolean": "yes/no",
    "text": "text",
    "string": "text",
    "number": "number",
    "num": "number",
    "span": "span",
    "time span": "span",
    "timespan": "span",
    "list": "list",
}
RESERVED = frozenset({"file_name", "video_sha256", "status"})
MAX_FIELDS = 30
MAX_NAME = 60
MAX_INSTRUCTION = 500
SPAN_SLACK_S = 1.0  # a span may end this much past the video's probed duration (rounding), no more
CHECKS = ("unchecked", "confirmed", "corrected", "unsupported")
_TYPE_WORDS = {
    "text": "a short plain-text answer",
    "number": "a number (null when the video does not show it)",
    "yes/no": "true or false",
    "span": "the moment it happens: start_time and end_time as MM:SS from the start of the video (null when it never does)",
    "list": "a list of short items (an empty list when there are none)",
}

log = logging.getLogger(__name__)


# -- the fields and what they ask ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    name: str  # the column's name, as the analyst wrote it
    type: str  # one of TYPES
    instruction: str = ""
    key: str = ""  # the JSON key Gemini answers under (made from the name by ``fields_of``)

    @classmethod
    def parse(cls, text: str) -> Field:
        """ "name:type[:instruction]", e.g. "mentions price:yes/no:does anyone say a price out loud?"."""
        name, sep, rest = text.partition(":")
        kind, _, instruction = rest.partition(":")
        if not sep or not kind.strip():
            raise ValueError(f"a field is NAME:TYPE[:INSTRUCTION] with TYPE one of {', '.join(TYPES)} (got {text!r})")
        return cls(name=name.strip(), type=kind.strip(), instruction=instruction.strip())


def fields_of(fields: Iterable[Field]) -> list[Field]:
    """The fields checked (names, types, lengths) and each given its JSON key; raises ValueError with what to fix."""
    out: list[Field] = []
    keys: set[str] = set()
    names: set[str] = set()
    for n, f in enumerate(fields, start=1):
        name = " ".join(f.name.split())
        kind = _TYPE_ALIASES.get(f.type.strip().lower())
        if not name:
            raise ValueError(f"field {n} has no name")
        if len(name) > MAX_NAME:
            raise ValueError(f"the field name {name[:20]!r}... is longer than {MAX_NAME} characters")
        if name.lower() in RESERVED or name.lower() in names:
            raise ValueError(f"the field name {name!r} is used twice (file_name, video_sha256 and status are taken)")
        if kind is None:
            raise ValueError(f"the field {name!r} has the type {f.type!r}: use one of {', '.join(TYPES)}")
        if len(f.instruction) > MAX_INSTRUCTION:
            raise ValueError(f"the instruction of {name!r} is longer than {MAX_INSTRUCTION} characters")
        key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or f"field_{n}"
        while key in keys:
            key = f"{key}_{n}"
        keys.add(key)
        names.add(name.lower())
        out.append(Field(name=name, type=kind, instruction=" ".join(f.instruction.split()), key=key))
    if not out:
        raise ValueError('give at least one field, e.g. --field "mentions price:yes/no"')
    if len(out) > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields in one table (got {len(out)})")
    return out


def schema_of(fields: list[Field]) -> dict[str, Any]:
    """The JSON schema of one video's answer: one required key per field, in the fields' order."""
    properties: dict[str, Any] = {}
    for f in fields:
        about = {"title": f.name, "description": f.instruction or f"{f.name}: {_TYPE_WORDS[f.type]}"}
        if f.type == "text":
            node: dict[str, Any] = {"type": "string"}
        elif f.type == "number":
            node = {"type": ["number", "null"]}
        elif f.type == "yes/no":
            node = {"type": "boolean"}
        elif f.type == "list":
            node = {"type": "array", "items": {"type": "string"}}
        else:
            moment = {"type": "string", "description": "MM:SS (or H:MM:SS) from the start of the video"}
            node = {
                "anyOf": [
                    {"type": "object", "properties": {"start_time": moment, "end_time": moment}, "required": ["start_time", "end_time"]},
                    {"type": "null"},
                ]
            }
        properties[f.key] = {**node, **about}
    return {"type": "object", "properties": properties, "required": [f.key for f in fields]}


def prompt_of(fields: list[Field]) -> str:
    """What Gemini is asked of each video: fill in every field from what the video shows and says."""
    lines = [
        "Watch this video and fill in one answer for each field below, from what the video shows and says. "
        "Answer with JSON that matches the schema: one key per field. Do not guess: when the video does not "
        "show something, give the empty answer its type allows.",
        "",
        "Fields:",
    ]
    for f in fields:
        lines.append(f"- {f.key} ({f.name!r}, {f.type}: {_TYPE_WORDS[f.type]})" + (f": {f.instruction}" if f.instruction else ""))
    return "\n".join(lines)


def table_ask(fields: list[Field], model: str, *, tier: str = "standard", priority: str = "normal") -> Any:
    """The ``commands.Ask`` of a table: its prompt and schema made from the fields alone (same fields, same key)."""
    from storyteller_core.commands import Ask  # the command API imports the runner: only when a table is asked for

    if tier == "batch":
        raise ValueError("a table is asked at the standard or flex tier (the batch tier does not carry a custom schema yet)")
    options = VideoOptions(answer_schema=json.dumps(schema_of(fields), ensure_ascii=False, sort_keys=True))
    return Ask(prompt=prompt_of(fields), model=model, preset=None, priority=priority, options=options, tier=tier)


# -- asking -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Asked:
    """What ``ask_table`` set going, and what to wait for."""

    item_ids: list[str]  # the rows to wait on: the new batch's, and those of answers still in flight from before
    batch_id: str | None  # the new batch (None when no video needed asking)
    videos: int  # videos of the source batch (each asked once)
    already: int  # of them, answered before (reused at no cost) or in flight
    estimated_usd: float | None  # for those asked now; None in demo mode


def source_rows(store: Store, batch_id: str) -> list[Item]:
    """One row per video of a batch (the first row of each video), in the batch's order; refused files have no video."""
    seen: dict[str, Item] = {}
    for item in store.items(batch_id):
        if item.video_id and item.video_id not in seen:
            seen[item.video_id] = item
    return list(seen.values())


def ask_table(commands: Commands, batch_id: str, fields: list[Field], model: str, *, tier: str = "standard") -> Asked:
    """Ask the table's question of every video of ``batch_id`` that has no usable answer yet (a new batch of rows,
    named after the table, so the board shows it being worked and its cost); the others are reused."""
    store, settings = commands.store, commands.settings
    ask = table_ask(fields, model, tier=tier)
    rows = source_rows(store, batch_id)
    analyses = store.by_id(Analysis, [_key_of(ask, row.video_id or "", settings.backend) for row in rows])
    wanted = [row for row in rows if _needs_asking(analyses.get(_key_of(ask, row.video_id or "", settings.backend)))]
    videos = store.by_id(Video, [row.video_id or "" for row in wanted])
    estimate = (
        None
        if settings.demo
        else sum(
            estimate_cost(model, videos[row.video_id].duration_s if row.video_id in videos else None, ask.prompt, ask.options, tier) or 0.0
            for row in wanted
        )
    )
    in_flight = [a for a in analyses.values() if not a.state.terminal and not _needs_asking(a)]
    follow = [items[0].id for items in (store.items_of(a.id) for a in in_flight) if items]  # asked by an earlier run
    if not wanted:
        return Asked(follow, None, len(rows), len(rows), estimate)
    source = store.get(Batch, batch_id)
    made = commands.analyze_again(
        [row.id for row in wanted],
        ask,
        batch_name=f"Table ({', '.join(f.name for f in fields)[:60]}): {source.name if source else batch_id}",
    )
    return Asked([i.id for i in made] + follow, made[0].batch_id if made else None, len(rows), len(rows) - len(wanted), estimate)


def _key_of(ask: Any, video_id: str, backend: str) -> str:
    return analysis_key(video_id, ask.model, ask.prompt, ask.key_options, backend)


def _needs_asking(analysis: Analysis | None) -> bool:
    return analysis is None or analysis.state in (AnalysisState.FAILED, AnalysisState.CANCELLED) or analysis.cancel_requested


# -- the table --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    check: str = "unchecked"  # one of CHECKS

    @property
    def text(self) -> str:
        return f"{timestamp(self.start_s)}-{timestamp(self.end_s)}"


@dataclass(frozen=True)
class SpanClaim:
    """What a span checker is asked: does this clip of this video show what the field says?"""

    video_sha256: str
    file_name: str
    column: Field  # the field whose answer the span is (its name and instruction say what should be seen)
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpanVerdict:
    status: str  # confirmed | corrected | unsupported
    start_s: float | None = None  # the right span, when corrected
    end_s: float | None = None


SpanChecker = Callable[[SpanClaim], SpanVerdict]


@dataclass
class TableRow:
    file_name: str
    video_sha256: str
    status: str  # "answered", "waiting", "failed: <why>", "not matched" (the answer was not JSON of the fields)
    values: dict[str, Any] = field(default_factory=dict)  # field name -> typed value (None when empty)
    problems: list[str] = field(default_factory=list)
    cost_usd: float | None = None
    reused: bool = False


@dataclass
class Table:
    fields: list[Field]
    rows: list[TableRow]
    cost_usd: float | None  # what the answers cost, each counted once (None: demo, or nothing priced)

    @property
    def answered(self) -> int:
        return sum(row.status == "answered" for row in self.rows)

    @property
    def complete(self) -> bool:
        return all(row.status not in ("waiting",) for row in self.rows)

    def frame(self) -> pd.DataFrame:
        """file_name, video_sha256, one typed column per field (a span as MM:SS-MM:SS with a "<name> check" column
        beside it), then status. Numbers are Float64, yes/no boolean (both nullable), lists Python lists."""
        import pandas as pd

        records = []
        for row in self.rows:
            record: dict[str, Any] = {"file_name": row.file_name, "video_sha256": row.video_sha256}
            for f in self.fields:
                value = row.values.get(f.name)
                if f.type == "span":  # a span the footage does not support is never shown as a time
                    shown = isinstance(value, Span) and value.check != "unsupported"
                    record[f.name] = value.text if shown and isinstance(value, Span) else None
                    record[f"{f.name} check"] = value.check if isinstance(value, Span) else None
                else:
                    record[f.name] = value
            record["status"] = row.status
            records.append(record)
        frame = pd.DataFrame(records, columns=self.columns())
        for f in self.fields:
            if f.type == "number":
                frame[f.name] = frame[f.name].astype("Float64")
            elif f.type == "yes/no":
                frame[f.name] = frame[f.name].astype("boolean")
        return frame

    def columns(self) -> list[str]:
        out = ["file_name", "video_sha256"]
        for f in self.fields:
            out += [f.name, f"{f.name} check"] if f.type == "span" else [f.name]
        return [*out, "status"]

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per field: how many rows have a value, and by type the mean (numbers), the share of yes, the most
        common items (lists and text), spans left out and their checks."""
        out: dict[str, dict[str, Any]] = {}
        answered = [row for row in self.rows if row.status == "answered"]
        for f in self.fields:
            values = [row.values.get(f.name) for row in answered]
            present = [v for v in values if v is not None and v != [] and v != ""]
            summary: dict[str, Any] = {"type": f.type, "rows": len(answered), "count": len(present)}
            if f.type == "number":
                summary.update(
                    mean=sum(present) / len(present) if present else None, min=min(present, default=None), max=max(present, default=None)
                )
            elif f.type == "yes/no":
                yes = sum(bool(v) for v in present)
                summary.update(yes=yes, no=len(present) - yes, share_yes=yes / len(present) if present else None)
            elif f.type == "list":
                items = Counter(item for v in present for item in v)
                summary.update(mean_items=sum(len(v) for v in present) / len(present) if present else None, top=items.most_common(5))
            elif f.type == "text":
                summary.update(distinct=len(set(present)), top=Counter(present).most_common(3))
            else:
                summary.update(
                    left_out=sum(p.startswith(f"{f.name}: outside the video") for row in answered for p in row.problems),
                    checks=dict(Counter(v.check for v in present)),
                )
            out[f.name] = summary
        return out

    # -- exports: every text cell neutralized, as export.py does -----------------------------------------------
    def csv_bytes(self) -> bytes:
        """UTF-8 with a BOM (Excel reads accents), lists joined with "; ", every text cell neutralized."""
        frame = self.frame()
        for f in self.fields:
            if f.type == "list":
                frame[f.name] = frame[f.name].map(lambda v: "; ".join(v) if isinstance(v, list) else v)
        out = io.StringIO()
        neutralize_frame(frame).to_csv(out, index=False, lineterminator="\n")
        return out.getvalue().encode("utf-8-sig")

    def json_bytes(self) -> bytes:
        """{"fields", "rows": [{file_name, video_sha256, status, <field>: value...}], "summaries", "cost_usd"}; a span
        is {"start_s", "end_s", "text", "check"}. Strings cleaned of control and bidi characters."""
        rows = []
        for row in self.rows:
            record: dict[str, Any] = {"file_name": row.file_name, "video_sha256": row.video_sha256, "status": row.status}
            for f in self.fields:
                value = row.values.get(f.name)
                record[f.name] = (
                    {"start_s": value.start_s, "end_s": value.end_s, "text": value.text, "check": value.check}
                    if isinstance(value, Span)
                    else value
                )
            record["problems"] = row.problems
            record["cost_usd"] = row.cost_usd
            record["reused"] = row.reused
            rows.append(record)
        document = {
            "fields": [{"name": f.name, "type": f.type, "instruction": f.instruction, "key": f.key} for f in self.fields],
            "rows": rows,
            "summaries": self.summaries(),
            "cost_usd": self.cost_usd,
        }
        return json.dumps(plain_data(document), ensure_ascii=False, indent=2).encode("utf-8")


def build_table(
    store: Store, batch_id: str, fields: list[Field], model: str, backend: str, *, check_span: SpanChecker | None = None
) -> Table:
    """The table of a batch as it stands: one row per video, its typed values from the table's analysis of it."""
    ask = table_ask(fields, model)
    rows = source_rows(store, batch_id)
    keys = {row.id: _key_of(ask, row.video_id or "", backend) for row in rows}
    analyses = store.by_id(Analysis, keys.values())
    videos = store.by_id(Video, [row.video_id or "" for row in rows])
    out: list[TableRow] = []
    costs: dict[str, float] = {}
    for item in rows:
        analysis = analyses.get(keys[item.id])
        video = videos.get(item.video_id or "")
        row = TableRow(
            file_name=item.display_name, video_sha256=video.sha256 if video else item.video_id or "", status=_status_of(analysis)
        )
        if analysis is not None and analysis.cost_usd is not None:
            row.cost_usd = analysis.cost_usd
            costs[analysis.id] = analysis.cost_usd
        row.reused = bool(analysis and any(i.reused for i in store.items_of(analysis.id)))
        if analysis is not None and analysis.state is AnalysisState.COMPLETED:
            if analysis.answer is None:
                row.status = "not matched"
                row.problems.append("Gemini's answer was not JSON of these fields (its text is kept on the board)")
            else:
                duration = video.duration_s if video else None
                for f in fields:
                    value, problem = typed_value(f, analysis.answer.get(f.key), duration)
                    if problem:
                        row.problems.append(f"{f.name}: {problem}")
                    if isinstance(value, Span) and check_span is not None:
                        value = _checked(check_span, row, f, value, duration)
                    row.values[f.name] = value
        out.append(row)
    return Table(fields=fields, rows=out, cost_usd=round(sum(costs.values()), 6) if costs else None)


def _status_of(analysis: Analysis | None) -> str:
    if analysis is None:
        return "not asked"
    if analysis.state is AnalysisState.COMPLETED:
        return "answered"
    if analysis.state in (AnalysisState.FAILED, AnalysisState.CANCELLED):
        return f"failed: {analysis.error_message or analysis.state.value.lower()}"
    return "waiting"


def typed_value(f: Field, raw: Any, duration_s: float | None) -> tuple[Any, str | None]:
    """(the value as its field's type, or None; what was wrong with it, or None)."""
    if raw is None:
        return ([] if f.type == "list" else None), None
    if f.type == "text":
        return (raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)).strip(), None
    if f.type == "number":
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            return None, f"not a number ({str(raw)[:40]!r})"
        try:
            return float(raw), None
        except ValueError:
            return None, f"not a number ({str(raw)[:40]!r})"
    if f.type == "yes/no":
        if isinstance(raw, bool):
            return raw, None
        word = str(raw).strip().lower()
        if word in ("yes", "true", "y"):
            return True, None
        if word in ("no", "false", "n"):
            return False, None
        return None, f"not yes or no ({str(raw)[:40]!r})"
    if f.type == "list":
        if isinstance(raw, list):
            return [str(v).strip() for v in raw if str(v).strip()], None
        return [str(raw).strip()], None
    return _span(raw, duration_s)


def _span(raw: Any, duration_s: float | None) -> tuple[Span | None, str | None]:
    if not isinstance(raw, dict):
        return None, f"not a time span ({str(raw)[:40]!r})"
    start, end = (_seconds(raw.get(k)) for k in ("start_time", "end_time"))
    if start is None or end is None:
        return None, "not a time span (start_time and end_time as MM:SS)"
    if end < start:
        return None, f"a span that ends before it starts ({timestamp(start)}-{timestamp(end)})"
    if duration_s is not None and end > duration_s + SPAN_SLACK_S:
        return None, f"outside the video ({timestamp(start)}-{timestamp(end)} in a {timestamp(duration_s)} video): left out"
    return Span(start, end), None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    return seconds_of(value) if isinstance(value, str) else None


def _checked(check: SpanChecker, row: TableRow, f: Field, span: Span, duration_s: float | None) -> Span:
    """The span as the checker found it: confirmed, corrected (to a span inside the video), or unsupported (shown
    as such: the value is left out and the row says why)."""
    try:
        verdict = check(SpanClaim(row.video_sha256, row.file_name, f, span.start_s, span.end_s))
    except Exception as exc:  # Gemini could not be asked, or the footage is gone: the span stays unchecked, said so
        log.warning("a span could not be checked", extra={"field": f.name, "error": type(exc).__name__})
        row.problems.append(
            f"{f.name}: not checked ({getattr(exc, 'message', None) or type(exc).__name__}); "
            "run the table again with --check-spans to check it"
        )
        return Span(span.start_s, span.end_s, "unchecked")
    if verdict.status == "confirmed":
        return Span(span.start_s, span.end_s, "confirmed")
    if verdict.status == "corrected" and verdict.start_s is not None and verdict.end_s is not None:
        corrected, problem = _span({"start_time": verdict.start_s, "end_time": verdict.end_s}, duration_s)
        if corrected is not None:
            return Span(corrected.start_s, corrected.end_s, "corrected")
        row.problems.append(f"{f.name}: the check's correction is {problem}")
    row.problems.append(f"{f.name}: the footage does not support {span.text}")
    return Span(span.start_s, span.end_s, "unsupported")
