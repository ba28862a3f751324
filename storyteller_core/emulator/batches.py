"""The Batch API as Gemini's REST speaks it: a batch is a long-running operation named batches/ID.

State moves with time: BATCH_STATE_PENDING for config.batch_pending_s, then
BATCH_STATE_RUNNING for config.batch_running_s, then BATCH_STATE_SUCCEEDED
(FAILED or EXPIRED when the display name or a request's prompt holds
config.batch_fail_marker or config.batch_expire_marker)
with the inlined responses in the order the requests came (each a
GenerateContentResponse or an error, with the request's metadata echoed).
The SDK maps BATCH_STATE_* to JOB_STATE_* (_BatchJob_from_mldev).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storyteller_core.emulator.config import EmulatorConfig

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
DONE = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}


@dataclass
class Batch:
    name: str  # batches/ID
    display_name: str
    model: str
    items: list[dict[str, Any]]  # {"response": {...}} or {"error": {...}}, plus "metadata" when the request had one
    text: str = ""  # the requests' prompts: a marker there decides the batch's fate as in its display name
    created: float = field(default_factory=time.time)
    cancelled_at: float | None = None

    def state(self, cfg: EmulatorConfig, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.cancelled_at is not None:
            return "BATCH_STATE_CANCELLED"
        elapsed = now - self.created
        if elapsed < cfg.batch_pending_s:
            return "BATCH_STATE_PENDING"
        if elapsed < cfg.batch_pending_s + cfg.batch_running_s:
            return "BATCH_STATE_RUNNING"
        if cfg.batch_fail_marker in self.display_name or cfg.batch_fail_marker in self.text:
            return "BATCH_STATE_FAILED"
        if cfg.batch_expire_marker in self.display_name or cfg.batch_expire_marker in self.text:
            return "BATCH_STATE_EXPIRED"
        return "BATCH_STATE_SUCCEEDED"

    def ended(self, cfg: EmulatorConfig) -> float:
        return self.cancelled_at if self.cancelled_at is not None else self.created + cfg.batch_pending_s + cfg.batch_running_s

    def operation(self, cfg: EmulatorConfig) -> dict[str, Any]:
        now = time.time()
        state = self.state(cfg, now)
        done = state in DONE
        succeeded = [i for i in self.items if "response" in i]
        batch_stats: dict[str, str] = {"requestCount": str(len(self.items))}
        if state == "BATCH_STATE_SUCCEEDED":
            batch_stats["successfulRequestCount"] = str(len(succeeded))
            if len(succeeded) < len(self.items):
                batch_stats["failedRequestCount"] = str(len(self.items) - len(succeeded))
        elif not done:
            batch_stats["pendingRequestCount"] = str(len(self.items))
        metadata: dict[str, Any] = {
            "@type": _TYPE + "GenerateContentBatch",
            "model": f"models/{self.model}",
            "displayName": self.display_name,
            "createTime": iso(self.created),
            "updateTime": iso(min(now, self.ended(cfg)) if done else now),
            "batchStats": batch_stats,
            "state": state,
            "name": self.name,
        }
        op: dict[str, Any] = {"name": self.name, "metadata": metadata}
        if done:
            metadata["endTime"] = iso(self.ended(cfg))
            op["done"] = True
        if state == "BATCH_STATE_SUCCEEDED":
            output = {"inlinedResponses": {"inlinedResponses": self.items}}
            metadata["output"] = output
            op["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **output}
        elif state == "BATCH_STATE_FAILED":
            op["error"] = {"code": 13, "message": "The batch failed (emulated failure)."}
        elif state == "BATCH_STATE_EXPIRED":
            op["error"] = {"code": 4, "message": "The batch expired before it finished (emulated expiry)."}
        return op


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
