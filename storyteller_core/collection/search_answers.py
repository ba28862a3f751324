"""Collection answers (issue 21 item 1, stored by collection/answers_store.py) as documents of the search index.

Only what the footage supports is made searchable as a claim: a claim is indexed when at least one of its citations
was confirmed or corrected by its check, at that citation's (corrected) time in that citation's video; an unsupported
or not yet checked citation is not indexed, so a search never shows it as fact. The question itself is indexed too
(kind "answer", no video), so an analyst finds what was asked before. Ids are "ask:<answer key>".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Document:
    """One piece of text to index: what it says, and where it points."""

    kind: str
    body: str
    start_s: float | None = None
    video_sha256: str | None = None  # the video this text points at, when not its owner's (a citation of an answer)
    file_name: str | None = None


PREFIX = "ask:"
SUPPORTED = ("confirmed", "corrected")


def answer_documents(data_dir: Path) -> dict[str, list[Document]]:
    """{document id: its texts} for every stored collection answer of the data dir (none when nothing was asked)."""
    if not (Path(data_dir) / "collection" / "answers.db").exists():
        return {}  # never create the answers' folder just to search
    from storyteller_core.collection.answers_store import AnswerStore

    out: dict[str, list[Document]] = {}
    with AnswerStore(Path(data_dir)) as answers:
        for key, record in answers.all():
            out[PREFIX + key] = documents_of_answer(record, answers.checks(key))
    return out


def documents_of_answer(record: dict[str, Any], checks: dict[int, dict[str, Any]]) -> list[Document]:
    """The question, and each claim at its first supported citation (see the module's docstring)."""
    docs = [Document("answer", str(record.get("question") or ""), None)]
    citations = record.get("citations") or []
    for claim in record.get("claims") or []:
        for idx in claim.get("citations") or []:
            check = checks.get(idx) or {}
            if check.get("status") not in SUPPORTED or not 0 <= idx < len(citations):
                continue
            cited = citations[idx]
            start = check.get("corrected_start_s") if check.get("status") == "corrected" else None
            start = cited.get("start_s") if start is None else start
            body = str(claim.get("text") or "")
            if cited.get("quote"):
                body += f"\n{cited['quote']}"
            docs.append(
                Document(
                    "answer",
                    body,
                    float(start) if start is not None else None,
                    video_sha256=str(cited.get("video_sha256") or ""),
                    file_name=str(cited.get("file_name") or ""),
                )
            )
            break
    return docs
