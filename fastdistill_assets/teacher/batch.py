"""The teacher through OpenAI's Batch API (``teacher.mode: batch``): half the price, answers within hours.

The requests not in the response cache go as JSONL files (``/v1/files``) into batches
(``/v1/batches``) of at most ``max_requests`` lines, one line per request (a question's answers in
one line with ``n`` where the provider takes it), ``custom_id`` = the request's first request_id.
Each batch's id and the requests it asks are recorded in ``folder`` (the run's work folder) before
it is polled; a step first polls every recorded batch that asks one of its requests, so a killed
step or a restarted Dagster follows the same batches instead of paying twice (a batch that cannot
be followed to its end fails the step and stays recorded); the record goes once the batch's answers
are in the response cache. The
step logs progress while it waits (every ``poll_s``). Answers map back by ``custom_id``; a request
that failed or expired (or a batch the provider no longer knows) is resubmitted alone, in a batch
of the failed ones only, at most ``max_resubmits`` times (counted); after that it is an error row.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
from openai.types.chat import ChatCompletion

from fastdistill_assets.core.hashing import sha256_json
from fastdistill_assets.teacher.stopped import TeacherStopped

if TYPE_CHECKING:   # the Generator uses this module; its types only for annotations
    from fastdistill_assets.teacher.generation import GenerationRequest

BATCH_FAILED = "batch_failed"
DONE = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchOptions:
    """How the teacher uses the Batch API. ``folder``: where submitted batch ids are recorded."""

    folder: Path
    poll_s: float = 30.0
    max_requests: int = 50_000
    max_resubmits: int = 3


@dataclass
class BatchOutcome:
    """What came back for one batch: choices per custom_id, and the custom_ids that failed."""

    answers: dict[str, dict[str, Any]]
    failed: list[str]
    seconds: float


def batch_lines(groups: dict[str, list[GenerationRequest]], body: Callable[[GenerationRequest, int], dict[str, Any]],
                ) -> bytes:
    """The JSONL input of a batch: one chat completion request per group (``n`` = its size)."""
    return "".join(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                               "body": body(group[0], len(group))}) + "\n"
                   for custom_id, group in groups.items()).encode()


def parse_results(output: bytes, errors: bytes) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """A batch's output and error files: the chat completion body per custom_id that succeeded, and
    the custom_ids that did not."""
    answers, failed = {}, set()
    for line in (output + b"\n" + errors).splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        response = item.get("response") or {}
        if response.get("status_code") == 200 and not item.get("error"):
            answers[item["custom_id"]] = response["body"]
        else:
            failed.add(item["custom_id"])
    return answers, failed


class BatchRecords:
    """The batches a step has submitted, one JSON file each under ``folder``, keyed by what they ask."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"batch-{key[:32]}.json"

    def all(self) -> list[tuple[str, str, list[str]]]:
        """Every recorded batch: (key, batch id, the custom_ids it asks), oldest first."""
        found = []
        for path in sorted(self.folder.glob("batch-*.json"), key=lambda p: p.stat().st_mtime):
            data = json.loads(path.read_text())
            found.append((data["key"], data["batch_id"], data["custom_ids"]))
        return found

    def record(self, key: str, batch_id: str, custom_ids: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(key).with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "batch_id": batch_id, "custom_ids": custom_ids,
                                   "recorded_at": time.time()}))
        tmp.replace(self.path(key))

    def forget(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


async def submit(client: openai.AsyncOpenAI, records: BatchRecords, key: str, lines: bytes,
                 custom_ids: list[str]) -> str:
    """Upload a batch's input and create it; its id is recorded before anything waits on it."""
    upload = await client.files.create(file=("batch.jsonl", lines, "application/jsonl"), purpose="batch")
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    records.record(key, batch.id, custom_ids)
    return batch.id


async def wait_for(client: openai.AsyncOpenAI, batch_id: str, options: BatchOptions,
                   progress: Callable[[int, int], None] | None) -> BatchOutcome:
    """Poll a batch until it is done; its answers and failed custom_ids."""
    started = time.monotonic()
    while True:
        batch = await client.batches.retrieve(batch_id)
        counts = batch.request_counts
        if progress and counts is not None:
            progress(counts.completed + counts.failed, counts.total)
        if batch.status in DONE:
            break
        await asyncio.sleep(options.poll_s)
    output = (await client.files.content(batch.output_file_id)).content if batch.output_file_id else b""
    errors = (await client.files.content(batch.error_file_id)).content if batch.error_file_id else b""
    answers, failed = parse_results(output, errors)
    return BatchOutcome(answers, sorted(failed), time.monotonic() - started)


def completion(body: dict[str, Any]) -> ChatCompletion:
    """A batch line's response body as the chat completion it is."""
    return ChatCompletion.model_validate(body)


def batch_key(identity: str, model: str, decode_profile: str, custom_ids: list[str]) -> str:
    """What a batch asks, as its record's key: the endpoint, model, decode profile and its requests."""
    return sha256_json([identity, model, decode_profile, sorted(custom_ids)])


class BatchPollError(TeacherStopped):
    """A submitted batch could not be followed to its end; its record stays, so asking again resumes it."""
