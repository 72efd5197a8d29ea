"""Row-level failures on executors: one document that cannot be processed never stops a stage.

A UDF runs its batch as usual; if the batch raises, it runs the batch's rows one at a time, so only the rows
that raise on their own fail. Each failed row comes out with its reason (the exception's first line) instead of
a result, and the driver quarantines it in the stage's rejects table (``jobs/lake/quarantine.py``). A task whose
share of failed rows passes the stage's ``max_reject_fraction`` fails instead: Spark then aborts the write, so
nothing is committed (a model or setting that breaks every row stops the job, it does not empty it).

``ELMO_LAKE_FAIL_CLEAN`` / ``ELMO_LAKE_FAIL_EMBED`` (a debug setting for drills, read on the driver): a regular
expression; a document whose text (clean) or tokens joined by spaces (embed) it matches raises in the UDF, as a
document that breaks spaCy or the model would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

REASON_CHARS = 500  # a reason is the exception's first line, at most this long


class InjectedFault(RuntimeError):
    """The drill's failure (ELMO_LAKE_FAIL_<STAGE>), raised for a matching document."""


class TooManyRowFailures(RuntimeError):
    """More of a task's rows failed than the stage's max_reject_fraction allows: the job fails, nothing is
    committed."""


def fault_pattern(stage: str) -> str | None:
    """On the driver: the drill's pattern for ``stage`` (ELMO_LAKE_FAIL_CLEAN / _EMBED), shipped in the UDF."""
    return os.environ.get(f"ELMO_LAKE_FAIL_{stage.upper()}") or None


def check_fault(pattern: str | None, text: str, stage: str) -> None:
    if pattern and re.search(pattern, text):
        raise InjectedFault(f"ELMO_LAKE_FAIL_{stage.upper()} matches this document (a drill)")


def reason_of(exc: BaseException) -> str:
    """The exception's type and first line: what a user reads in the rejects table."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def run_rows(
    items: Sequence[Item], process: Callable[[Sequence[Item]], list[Result]]
) -> tuple[list[Result | None], list[str | None]]:
    """``process`` over the whole batch; if it raises, over each item alone. (results, reasons): a failed item
    has result None and its reason; the others have their result and reason None."""
    try:
        return list(process(items)), [None] * len(items)
    except Exception:  # noqa: BLE001  (any row's failure: find which rows, below)
        pass
    results: list[Result | None] = []
    reasons: list[str | None] = []
    for item in items:
        try:
            results.append(process([item])[0])
            reasons.append(None)
        except Exception as exc:  # noqa: BLE001  (quarantined with its reason)
            results.append(None)
            reasons.append(reason_of(exc))
    return results, reasons


class FailureGuard:
    """Counts a task's rows and failures; ``check`` (at the task's end, after its last batch) raises
    TooManyRowFailures when the failures are more than ``max_fraction`` of its rows. Rows already quarantined by
    an earlier run are retried without counting."""

    def __init__(self, stage: str, max_fraction: float):
        self.stage, self.max_fraction = stage, max_fraction
        self.rows = self.failed = 0
        self.first: tuple[str, str] | None = None

    def add(
        self, ids: Sequence[str], reasons: Sequence[str | None], retries: Sequence[bool | None] | None = None
    ) -> None:
        """Count a batch; rows quarantined by an earlier run (``retries``) do not count: a run retrying only
        those must not fail for them."""
        for i, (doc_id, reason) in enumerate(zip(ids, reasons, strict=True)):
            if retries is not None and retries[i]:
                continue
            self.rows += 1
            if reason is not None:
                self.failed += 1
                self.first = self.first or (doc_id, reason)

    def check(self) -> None:
        if self.failed and self.failed > self.max_fraction * self.rows:
            doc_id, reason = self.first  # type: ignore[misc]
            raise TooManyRowFailures(
                f"{self.failed} of {self.rows} rows of this task failed in {self.stage}, more than "
                f"{self.stage}.max_reject_fraction={self.max_fraction:g} allows, so the job fails and commits "
                f"nothing; the first: document {doc_id!r}: {reason} (fix the cause, or raise "
                f"{self.stage}.max_reject_fraction to quarantine such rows instead)"
            )
