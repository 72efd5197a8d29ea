"""The clean and embed stages' rejects tables: documents a stage could not process, kept with their reason.

A row that raises in a stage's UDF (``udfs/row_failures.py``) gets no output row; the stage then finds the
documents it was given that still lack output, runs just those again to learn why, and appends each failure to
the stage's rejects table (``OUTPUT_rejects`` unless ``--rejects`` names another) once: the key is (stage, id,
reason), so a document failing the same way in every run is recorded once. Nothing else is needed to retry:
a quarantined document still lacks output, so the next run processes it again, and a fixed model or setting
heals it (its rejects rows stay, as history). A document that fails in its task but not when run again alone
is recorded too (reason: UNEXPLAINED), so that runs reading only what their input gained still retry it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lake.delta_tables import (
    append_on_snapshot,
    commit_metadata,
    read_delta,
    retry_once_on_conflict,
    rows_missing_from,
    table_exists,
)
from jobs.platform.cli import log
from jobs.platform.config import Config

REJECTS_DESCRIPTION = (
    "elmo-lake {stage} rejects: documents the {stage} stage could not process, with the reason; a later run "
    "retries each one that still has no output"
)
REJECTS_COMMENTS = {
    "stage": "the stage that failed on the document: clean or embed",
    "id": "document id, as in the documents table",
    "reason": "the exception's type and first line",
    "processed_by": "what ran: the clean fingerprint, or the ELMo model_id and its embedding sets",
    "failed_at": "when the failure was recorded (UTC)",
}
KEYS = ["stage", "id", "reason"]
UNEXPLAINED = "failed in its task but not when run again alone; the next run retries it"


def with_retry_flag(
    spark: SparkSession, cfg: Config, rows: DataFrame, stage: str, rejects_table: str
) -> DataFrame:
    """``rows`` with a boolean ``retry``: true for the documents the stage quarantined in an earlier run. Their
    failures do not count against max_reject_fraction, so a run that retries only them does not fail for them."""
    if not table_exists(spark, rejects_table, cfg.delta.engine):
        return rows.withColumn("retry", F.lit(False))
    known = (
        read_delta(spark, rejects_table, cfg.delta.engine)
        .where(F.col("stage") == stage)
        .select("id")
        .distinct()
        .withColumn("retry", F.lit(True))
    )
    return rows.join(known, "id", "left").withColumn("retry", F.coalesce("retry", F.lit(False)))


def rejects_table_for(output: str) -> str:
    """A stage's default rejects table (ingest, clean, embed): its output's name or folder + ``_rejects``."""
    return output.rstrip("/") + "_rejects"


@dataclass
class Quarantined:
    table: str
    documents: int  # documents that failed in this run, with their reason in the table
    recorded: int  # rejects rows added (a failure already recorded is not added again)
    first: str  # one example: id and reason
    unexplained: int = (
        0  # documents that failed, but not when run again for their reason (the next run retries)
    )


def quarantine(
    spark: SparkSession,
    cfg: Config,
    stage: str,
    failed: DataFrame,
    reasons_of: Callable[[DataFrame], DataFrame],
    rejects_table: str,
    processed_by: str,
) -> Quarantined | None:
    """Record the documents of ``failed`` (the rows the stage was given that still lack output) in
    ``rejects_table``; ``reasons_of(failed)`` runs them again and gives (id, reason). None if nothing failed.

    The failures are collected on the driver: a task fails the job before more than the stage's
    max_reject_fraction of its rows fail, so they are few."""
    failed_ids = {r["id"] for r in failed.select("id").distinct().collect()}
    if not failed_ids:
        return None
    ids = len(failed_ids)
    explained = [
        (r["id"], r["reason"]) for r in reasons_of(failed).where(F.col("reason").isNotNull()).collect()
    ]
    # recorded too, so that a run reading only what its input gained (jobs/lake/increments.py) retries them
    others = sorted(failed_ids - {doc_id for doc_id, _ in explained})
    unexplained = len(others)
    if unexplained:
        log(stage, f"{unexplained} documents failed but not when run again: the next run retries them")
    rows = explained + [(doc_id, UNEXPLAINED) for doc_id in others]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    failures = spark.createDataFrame(sorted(set(rows)), "id string, reason string").select(
        F.lit(stage).alias("stage"),
        "id",
        "reason",
        F.lit(processed_by).alias("processed_by"),
        F.lit(now).cast("timestamp").alias("failed_at"),
    )

    def append_new() -> int:
        new, version = rows_missing_from(spark, failures, rejects_table, cfg.delta.engine, KEYS)
        count = new.count()
        if count or version is None:
            append_on_snapshot(
                new,
                rejects_table,
                cfg,
                version,
                KEYS,
                REJECTS_DESCRIPTION.format(stage=stage),
                comments=REJECTS_COMMENTS,
                user_metadata=commit_metadata(f"{stage} rejects", processed_by=processed_by),
            )
        return count

    recorded = retry_once_on_conflict(stage, rejects_table, append_new)
    example = min(explained) if explained else None
    first = f"document {example[0]!r}: {example[1]}" if example else ""
    return Quarantined(rejects_table, ids - unexplained, recorded, first, unexplained)


def warning_line(stage: str, result: Quarantined) -> str:
    """The stage's last word on its failures: how many, where they are, one example, what happens next."""
    new = f"{result.recorded} new in the table" if result.recorded else "each recorded already"
    return (
        f"WARNING: {result.documents} documents could not be processed and are quarantined in "
        f"{result.table} ({new}; e.g. {result.first}); every other document was processed, and the next run "
        "retries these"
    )
