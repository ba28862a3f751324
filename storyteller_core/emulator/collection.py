"""Collection questions and citation checks, answered deterministically, some wrong on purpose.

The request kind is told apart by the response schema's title (pydantic's model_json_schema names it):

- ``CollectionAnswer`` with no video: a question over many videos. The material in the prompt (the
  ``[V1] file: ... | sha256: ... | duration: ... s`` blocks and their ``- at T s (...): DESCRIPTION`` key
  moments, see collection/material.py) is read back, and each video gets one claim citing one of its key
  moments. By the video's number n (V1 is n = 1), so that the same video is wrong the same way however the
  material is grouped:
    n % 6 == 2  the span is shifted 2.5 s later than the moment (a check corrects it);
    n % 6 == 3  the span lies past the end of the video (never confirmed; the app does not even ask);
    n % 6 == 4  the quote is made up: nothing in the video matches it (a check finds it unsupported);
    otherwise   the span and the quote are the moment's own (a check confirms it).
- ``CollectionReduce`` with no video: partial answers combined; each ``[Cn]`` citation listed becomes one
  claim citing it by id.
- ``ClipCheck`` with a video: the truth is the key moments the emulator's own structured story of the whole
  video has (emulator/schema.py). The prompt's ``Quote:`` is matched to a moment's description; the moment's
  time inside the cited span (0.5 s slack) is confirmed, elsewhere in the clip corrected (to the moment's
  time, the span's length kept), outside the clip or with no matching moment unsupported.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from storyteller_core.emulator.schema import Facts, _Filler, moment_count, moment_times
from storyteller_core.emulator.wire import GenerateRequest

LABEL = "[Demo output from the local Gemini emulator, not written by Gemini]"
MADE_UP_QUOTE = "[Demo] A red balloon drifts across the sky (a claim the emulator made up on purpose)"
SHIFT_S = 2.5
SLACK_S = 0.5
_BLOCK = re.compile(r"^\[(V\d+)\] file: (.*?) \| sha256: ([0-9a-f]+) \| duration: ([\d.]+) s", re.MULTILINE)
_MOMENT = re.compile(r"^\s+- at ([\d.]+) s \([^)]*\): (.*)$", re.MULTILINE)
_CITATION = re.compile(r"^\[C(\d+)\] video (\S+) \((.*)\) ([\d.]+)-([\d.]+) s: (.*)$", re.MULTILINE)
_QUOTE = re.compile(r"^Quote: (.*)$", re.MULTILINE)
_SPAN = re.compile(r"^Cited span: ([\d.]+)-([\d.]+) s$", re.MULTILINE)


def kind_of(request: GenerateRequest) -> str | None:
    """ "answer", "reduce" or "check" for the requests this module answers; None for every other request."""
    title = str((request.schema or {}).get("title") or "")
    if not request.wants_json:
        return None
    if request.video is None and title == "CollectionAnswer":
        return "answer"
    if request.video is None and title == "CollectionReduce":
        return "reduce"
    if request.video is not None and title == "ClipCheck":
        return "check"
    return None


def reply(facts: Facts, request: GenerateRequest) -> str | None:
    """The model's text for a collection request, or None when the request is not one."""
    kind = kind_of(request)
    if kind == "answer":
        return json.dumps(collection_answer(request.prompt), ensure_ascii=False)
    if kind == "reduce":
        return json.dumps(reduce_answer(request.prompt), ensure_ascii=False)
    if kind == "check":
        return json.dumps(clip_check(facts, request.prompt), ensure_ascii=False)
    return None


def _videos(prompt: str) -> list[dict[str, Any]]:
    blocks = list(_BLOCK.finditer(prompt))
    out = []
    for i, block in enumerate(blocks):
        body = prompt[block.end() : blocks[i + 1].start() if i + 1 < len(blocks) else len(prompt)]
        moments = [(float(m.group(1)), m.group(2).strip()) for m in _MOMENT.finditer(body)]
        out.append({"label": block.group(1), "file": block.group(2), "duration": float(block.group(4)), "moments": moments})
    return out


def collection_answer(prompt: str) -> dict[str, Any]:
    claims = []
    for video in _videos(prompt):
        if not video["moments"]:
            continue
        n = int(video["label"][1:])
        duration = video["duration"]
        at, what = video["moments"][(n - 1) % len(video["moments"])]
        first, first_what = video["moments"][0]
        start, end, quote = at, min(duration, at + 2.0), what
        if n % 6 == 2 and first + SHIFT_S + 2.0 <= duration:
            start, end, quote = first + SHIFT_S, first + SHIFT_S + 2.0, first_what
        elif n % 6 == 3:
            start, end = duration + 5.0, duration + 8.0
        elif n % 6 == 4:
            start, end, quote = first, min(duration, first + 2.0), MADE_UP_QUOTE
        if end <= start:
            end = start + 1.0
        claims.append(
            {
                "text": f"[Demo] {video['file']}: {quote}",
                "citations": [{"video": video["label"], "start_s": start, "end_s": end, "quote": quote}],
            }
        )
    question = _line(prompt, "Question: ")
    answer = (
        f"{LABEL} The emulator read the stories of {len(_videos(prompt))} video(s) for the question "
        f'"{question[:140]}" and cites one key moment of each; some citations are wrong on purpose so that '
        "their checks have something to catch."
        if claims
        else f"{LABEL} The material holds no key moments, so the emulator cannot cite anything."
    )
    return {"answer": answer, "claims": claims}


def reduce_answer(prompt: str) -> dict[str, Any]:
    claims = [{"text": f"[Demo] {m.group(3)}: {m.group(6)}", "citation_ids": [f"C{m.group(1)}"]} for m in _CITATION.finditer(prompt)]
    parts = len(re.findall(r"^Partial answer \d+:", prompt, re.MULTILINE))
    return {"answer": f"{LABEL} The emulator combined {parts} partial answer(s) into one, keeping every citation.", "claims": claims}


def truth(facts: Facts) -> list[tuple[float, str]]:
    """The key moments of the emulator's structured story of the whole video (what the footage "shows")."""
    whole = replace(facts, start_s=0.0, end_s=facts.duration_s)
    count = moment_count(whole)
    times = moment_times(whole, max(count, 1))[:count]
    filler = _Filler({}, whole, False)
    return [(at, filler.moment_text(i, len(times), at, False)) for i, at in enumerate(times)]


def clip_check(facts: Facts, prompt: str) -> dict[str, Any]:
    quote_match, span_match = _QUOTE.search(prompt), _SPAN.search(prompt)
    if not quote_match or not span_match:
        return {
            "verdict": "unsupported",
            "corrected_start_s": None,
            "corrected_end_s": None,
            "reason": "[Demo] The check named no quote or span.",
        }
    quote = " ".join(quote_match.group(1).split())
    start, end = float(span_match.group(1)), float(span_match.group(2))
    moment = next((m for m in truth(facts) if quote and (quote in m[1] or m[1] in quote)), None)
    if moment is None:
        return {
            "verdict": "unsupported",
            "corrected_start_s": None,
            "corrected_end_s": None,
            "reason": "[Demo] Nothing in the clip matches the quote.",
        }
    at = moment[0]
    if start - SLACK_S <= at <= end + SLACK_S:
        return {
            "verdict": "confirmed",
            "corrected_start_s": None,
            "corrected_end_s": None,
            "reason": f"[Demo] The clip shows it at {at:g} s, inside the cited span.",
        }
    if facts.start_s <= at <= facts.end_s:
        length = max(0.0, end - start)
        return {
            "verdict": "corrected",
            "corrected_start_s": at,
            "corrected_end_s": min(facts.duration_s, at + length, facts.end_s),
            "reason": f"[Demo] The clip shows it at {at:g} s, not in the cited span.",
        }
    return {"verdict": "unsupported", "corrected_start_s": None, "corrected_end_s": None, "reason": "[Demo] The clip does not show it."}


def _line(prompt: str, head: str) -> str:
    for line in prompt.splitlines():
        if line.startswith(head):
            return line[len(head) :].strip()
    return ""
